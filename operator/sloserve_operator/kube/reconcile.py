"""Make the cluster match what a ModelService renders to, and compute its status.

The decisions are plain functions of dicts (desired objects, actual objects, pods) so tests can call them
directly: `plan_children` (create / patch / delete), `drift` (only the fields we own are compared, so defaults
that the API server or other controllers add never cause endless patches), `serving_targets`, `count_pods`
and `reconcile_status`. `reconcile` is the one function with I/O: it applies a plan through kube.Kube.

Desired state has one store, the autoscaler memory ConfigMap (autoscaler_memory.py): reconcile renders the
Deployments (replicas included) from the serving and warm targets stored there, and the autoscale tick
persists its decision there and then calls `reconcile` to act. So Deployment replicas have one writer (this
module's plan) and status one builder (`reconcile_status`); status.regions[].desired is output only.

Region changes hand over in phases (`hand_over_regions`): a Deployment of a region the spec no longer has
keeps serving until every current region has its serving target of ready serving pods, is then scaled to 0,
and is deleted once its pods are gone.

An invalid spec (one the CRD schema could not catch) is reported in status and touches no child object.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from sloserve_operator.api.labels import (
    MODEL_SERVICE_LABEL,
    PORT_ANNOTATION,
    REGION_LABEL,
    ROLE_LABEL,
    SCRAPE_ANNOTATIONS,
    SERVING,
    TEMPLATE_HASH_ANNOTATION,
    WARM,
)
from sloserve_operator.api.spec import ModelService, ModelServiceSpec, ScalingMode, validate_spec
from sloserve_operator.autoscaler.decide.placement import (
    DEFAULT_REGION,
    region_names,
    region_weights,
    split_by_weight,
    split_plain,
)
from sloserve_operator.kube import conditions as cond
from sloserve_operator.kube.autoscaler_memory import namespace_terminating, read_memory
from sloserve_operator.kube.client import MONITORING_API, Kube
from sloserve_operator.kube.owners import owned_by, owner_reference, with_owner
from sloserve_operator.kube.render import HTTP_ROUTE_API, INFERENCE_POOL_API, render_objects

CHILD_KINDS = ("Deployment", "Service", "PodDisruptionBudget")  # listed even when none is rendered now
MONITORING_KINDS = ("PodMonitor", "PrometheusRule")
# Listed whenever their API is served, so removing spec.routing (or a region) deletes what it rendered.
OPTIONAL_KINDS = {"InferencePool": INFERENCE_POOL_API, "HTTPRoute": HTTP_ROUTE_API}
# Status codes that another attempt may cure; the rest (403 forbidden, 422 invalid, 400) need a human.
TRANSIENT_STATUSES = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class KubeEvent:
    """A Kubernetes Event to emit about the ModelService."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class ChildPlan:
    create: list[dict[str, Any]] = field(default_factory=list)
    patch: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)  # (desired, drifted paths)
    delete: list[dict[str, Any]] = field(default_factory=list)
    foreign: list[dict[str, Any]] = field(default_factory=list)  # same name exists, owned by someone else
    unchanged: list[dict[str, Any]] = field(default_factory=list)
    scale_down: list[dict[str, Any]] = field(default_factory=list)  # retiring Deployments: replicas -> 0
    held: list[dict[str, Any]] = field(default_factory=list)  # retiring children kept until the handover ends

    @property
    def empty(self) -> bool:
        return not (self.create or self.patch or self.delete or self.scale_down)


class RoleChanges(Protocol):
    """What the warm-pool actuator reports back (actuator.Actuation)."""

    promoted: dict[str, str]  # pod -> its region
    demoted: dict[str, str]
    events: list[KubeEvent]


# actuate(body, serving, warm, pods, revisions) applies pod roles and deletion costs (never replicas).
Actuate = Callable[[dict[str, Any], dict[str, int], dict[str, int], list[dict[str, Any]], dict[str, str]],
                   RoleChanges]


@dataclass(frozen=True)
class ReconcileOptions:
    """How the operator was started, as far as the rendered children depend on it."""

    images: dict[str, str] | None = None  # engine -> image override
    monitoring_labels: dict[str, str] | None = None  # on PodMonitors and PrometheusRules
    actuate: Actuate | None = None
    # A new pod counts as available (so the Deployment deletes an old one) only after this long Ready: more
    # than an autoscale interval, so the tick swaps roles (new pod serving, old pod warm) first.
    min_ready_seconds: int = 0


@dataclass(frozen=True)
class AutoscalerReport:
    """The autoscale tick's part of status: its conditions and fields, merged by `reconcile_status`."""

    conditions: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # observed, lastDecision, lastScaleTime


@dataclass
class ReconcileResult:
    status: dict[str, Any]  # the status fields reconcile owns (merge into .status)
    events: list[KubeEvent]
    valid: bool
    transient_error: str | None = None  # set when a retry with backoff should follow
    serving: dict[str, int] = field(default_factory=dict)  # the serving targets applied, region -> pods
    warm: dict[str, int] = field(default_factory=dict)  # the warm targets applied, region -> pods (for /metrics)
    actuation: RoleChanges | None = None


# ---------------------------------------------------------------- owned fields and drift


def drift(desired: Any, actual: Any, path: str = "") -> list[str]:
    """Paths where `actual` differs from `desired`, looking only at what `desired` sets.

    Keys absent from `desired` are not ours (server defaults, other controllers) and are ignored; lists are
    compared item by item with the same rule, and must have the same length."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found.extend(drift(value, actual.get(key), f"{path}.{key}" if path else key))
        return found
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return [path]
        found = []
        for index, (want, have) in enumerate(zip(desired, actual, strict=True)):
            found.extend(drift(want, have, f"{path}[{index}]"))
        return found
    if desired != actual and not _same_quantity(desired, actual):
        return [path]
    return []


def _same_quantity(desired: Any, actual: Any) -> bool:
    """The API server canonicalises quantities ("0.5" -> "500m", "1024Mi" -> "1Gi") and numbers written as
    strings ("1" vs 1): equal values are not drift, or every drift check would re-patch and emit an Event."""
    if not (isinstance(desired, int | float | str) and isinstance(actual, int | float | str)):
        return False
    if str(desired) == str(actual):
        return True
    try:
        return parse_quantity(desired) == parse_quantity(actual)
    except ValueError:
        return False


def owned_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of a desired object the operator owns: everything but status and server-managed metadata."""
    meta = obj.get("metadata", {})
    owned = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind", "metadata", "status")}
    owned["metadata"] = {key: meta[key] for key in ("labels", "annotations", "ownerReferences") if key in meta}
    return owned


def child_key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def plan_children(desired: list[dict[str, Any]], actual: list[dict[str, Any]], owner_uid: str) -> ChildPlan:
    """What to create, patch and delete so that the owned children are exactly `desired`."""
    plan = ChildPlan()
    existing = {child_key(obj): obj for obj in actual}
    wanted = {child_key(obj) for obj in desired}
    for obj in desired:
        current = existing.get(child_key(obj))
        if current is None or current.get("metadata", {}).get("deletionTimestamp"):
            plan.create.append(obj)
        elif not owned_by(current, owner_uid):
            plan.foreign.append(obj)
        else:
            paths = drift(owned_fields(obj), current)
            (plan.patch.append((obj, paths)) if paths else plan.unchanged.append(obj))
    for key, obj in existing.items():
        if key not in wanted and owned_by(obj, owner_uid):
            plan.delete.append(obj)
    return plan


# ---------------------------------------------------------------- targets


def remembered_serving(memory: dict[str, Any], status: dict[str, Any] | None) -> dict[str, int] | None:
    """The autoscaler's persisted serving targets per region. Objects written by a version that kept them
    in status.regions[].desired are read from there until the first tick stores them (upgrade path only)."""
    stored = memory.get("serving")
    if isinstance(stored, dict):
        return {str(name): int(count or 0) for name, count in stored.items()}
    legacy = (status or {}).get("regions") or []
    return {item.get("name"): int(item.get("desired") or 0) for item in legacy} or None


def serving_targets(spec: ModelServiceSpec, remembered: dict[str, int] | None) -> dict[str, int]:
    """Serving replicas per region: spec.replicas in manual mode, else the autoscaler's persisted targets
    within the spec's bounds, else minReplicas split by weight."""
    if spec.scaling.mode == ScalingMode.manual:
        return split_by_weight(spec, spec.replicas)
    names = region_names(spec)
    previous = dict(remembered or {})
    # When regions were added or removed the fleet keeps its size, re-split over the regions it has now.
    total = sum(previous.values()) if previous else spec.scaling.min_replicas
    total = min(max(total, spec.scaling.min_replicas), spec.scaling.max_replicas)
    if previous and set(previous) == set(names) and sum(previous.values()) == total:
        bounded = {}
        for region in spec.placement.regions:
            upper = region.max_replicas if region.max_replicas is not None else spec.scaling.max_replicas
            bounded[region.name] = min(max(previous[region.name], region.min_replicas), upper)
        if not spec.placement.regions:
            bounded = {DEFAULT_REGION: previous[DEFAULT_REGION]}
        if sum(bounded.values()) == total:
            return bounded
    return split_by_weight(spec, total)


def warm_targets(spec: ModelServiceSpec, memory: dict[str, Any]) -> dict[str, int]:
    """Warm pods per region: the autoscaler's latest choice, else warmPool.size spread by weight."""
    names = region_names(spec)
    remembered = memory.get("warm")
    if isinstance(remembered, dict) and set(remembered) == set(names):
        return {name: max(int(remembered[name]), 0) for name in names}
    return split_plain(spec.scaling.warm_pool.size, region_weights(spec))


# ---------------------------------------------------------------- pods and status


def pod_ready(pod: dict[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    return any(item.get("type") == "Ready" and item.get("status") == "True"
               for item in (pod.get("status") or {}).get("conditions") or [])


def count_pods(pods: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, int]]:
    """Per region: ready serving pods, ready warm pods, pods not ready yet, and all live pods."""
    counts = {name: {"serving": 0, "warm": 0, "pending": 0, "total": 0} for name in names}
    for pod in pods:
        meta = pod.get("metadata", {})
        if meta.get("deletionTimestamp"):
            continue
        region = (meta.get("labels") or {}).get(REGION_LABEL, DEFAULT_REGION)
        bucket = counts.setdefault(region, {"serving": 0, "warm": 0, "pending": 0, "total": 0})
        bucket["total"] += 1
        if not pod_ready(pod):
            bucket["pending"] += 1
        elif (meta.get("labels") or {}).get(ROLE_LABEL) == WARM:
            bucket["warm"] += 1
        else:
            bucket["serving"] += 1
    return counts


def serving_selector(name: str) -> str:
    """Label selector of the serving pods: the scale subresource's labelSelectorPath points here."""
    return f"{MODEL_SERVICE_LABEL}={name},{ROLE_LABEL}={SERVING}"


def with_roles(pods: list[dict[str, Any]], changes: RoleChanges | None) -> list[dict[str, Any]]:
    """The pods as they are after the actuator's label patches, without listing them again."""
    if changes is None or not (changes.promoted or changes.demoted):
        return pods
    roles = {**{name: SERVING for name in changes.promoted}, **{name: WARM for name in changes.demoted}}
    result = []
    for pod in pods:
        role = roles.get(pod.get("metadata", {}).get("name"))
        if role is None:
            result.append(pod)
            continue
        meta = pod["metadata"]
        result.append({**pod, "metadata": {**meta, "labels": {**(meta.get("labels") or {}), ROLE_LABEL: role}}})
    return result


def unschedulable(pods: list[dict[str, Any]]) -> list[str]:
    """'pod: scheduler message' for every live pod the scheduler could not place."""
    found = []
    for pod in pods:
        meta, status = pod.get("metadata", {}), pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") not in (None, "Pending"):
            continue
        for item in status.get("conditions") or []:
            if item.get("type") == "PodScheduled" and item.get("status") == "False":
                found.append(f"{meta.get('name')}: {item.get('reason') or 'Unschedulable'} "
                             f"{item.get('message') or ''}".strip())
    return found


def deadline_exceeded(deployments: list[dict[str, Any]]) -> list[str]:
    """'deployment: message' for every Deployment whose rollout ran past progressDeadlineSeconds."""
    found = []
    for deployment in deployments:
        for item in (deployment.get("status") or {}).get("conditions") or []:
            if item.get("type") == "Progressing" and item.get("reason") == "ProgressDeadlineExceeded":
                found.append(f"{deployment['metadata']['name']}: {item.get('message') or 'progress deadline exceeded'}")
    return found


def reconcile_status(body: dict[str, Any], *, serving: dict[str, int], pods: list[dict[str, Any]],
                     deployments: list[dict[str, Any]], apply_problems: list[str], monitoring: bool,
                     now: float, autoscaler_degraded: str | None = None, handover: str | None = None,
                     autoscaler: AutoscalerReport | None = None) -> dict[str, Any]:
    """The one place status is built: counts, selector, observedGeneration, Ready/Progressing/Reconciling/
    Stalled/Degraded, and the autoscale tick's conditions and fields when it is the caller."""
    meta = body["metadata"]
    status = body.get("status") or {}
    names = list(serving)
    counts = count_pods(pods, names)
    ready_serving = sum(counts[name]["serving"] for name in names)
    wanted = sum(serving.values())
    rolling = [
        deployment["metadata"]["name"] for deployment in deployments
        if _deployment_rolling(deployment)
    ]
    pending = sum(counts[name]["pending"] for name in names)
    stuck = unschedulable(pods)
    overdue = deadline_exceeded(deployments)
    updates = []
    if apply_problems:
        updates.append(cond.condition("Ready", False, "ApplyFailed", "; ".join(apply_problems)))
    elif ready_serving >= wanted:
        updates.append(cond.condition("Ready", True, "ReplicasReady",
                                      f"{ready_serving}/{wanted} serving replicas ready"))
    else:
        updates.append(cond.condition("Ready", False, "ReplicasNotReady",
                                      f"{ready_serving}/{wanted} serving replicas ready"))
    if apply_problems:
        updates.append(cond.condition("Progressing", False, "ApplyFailed", "children could not be written"))
    elif overdue:
        updates.append(cond.condition("Progressing", False, "ProgressDeadlineExceeded", "; ".join(overdue)))
    elif handover:
        updates.append(cond.condition("Progressing", True, "RegionHandover", handover))
    elif stuck:
        updates.append(cond.condition("Progressing", True, "PodsPending",
                                      f"{len(stuck)} pods cannot be scheduled: " + "; ".join(stuck)))
    elif rolling or pending or ready_serving < wanted:
        detail = f"rolling out {', '.join(rolling)}" if rolling else f"{pending} pods starting"
        updates.append(cond.condition("Progressing", True, "ReplicasUpdating", detail))
    else:
        updates.append(cond.condition("Progressing", False, "Stable", "all children up to date"))
    progressing = updates[-1]
    updates.append(cond.condition("Reconciling", progressing["status"] == "True", progressing["reason"],
                                  progressing["message"]))
    if apply_problems:
        updates.append(cond.condition("Stalled", True, "ApplyFailed", "; ".join(apply_problems)))
    elif overdue:
        updates.append(cond.condition("Stalled", True, "ProgressDeadlineExceeded", "; ".join(overdue)))
    else:
        updates.append(cond.condition("Stalled", False, "AsExpected", ""))
    updates.append(degraded_condition(monitoring, autoscaler_degraded))
    if autoscaler is not None:
        updates.extend(autoscaler.conditions)
    return {
        "observedGeneration": meta.get("generation"),
        "conditions": cond.set_conditions(status.get("conditions"), updates, now=now,
                                          generation=meta.get("generation")),
        "replicas": sum(counts[name]["total"] for name in counts),
        "serving": ready_serving,
        "warm": sum(counts[name]["warm"] for name in counts),
        "desiredReplicas": wanted,
        "selector": serving_selector(meta["name"]),
        "regions": [
            {"name": name, "desired": serving[name], "serving": counts[name]["serving"],
             "warm": counts[name]["warm"], "pending": counts[name]["pending"]}
            for name in names
        ],
        **(autoscaler.fields if autoscaler is not None else {}),
    }


def degraded_condition(monitoring: bool, autoscaler_degraded: str | None) -> dict[str, Any]:
    """Degraded joins what reconcile knows (no Prometheus operator) with what the autoscaler reported."""
    if autoscaler_degraded:
        return cond.condition("Degraded", True, "CapacityShortfall", autoscaler_degraded)
    if not monitoring:
        return cond.condition(
            "Degraded", True, "PrometheusOperatorMissing",
            "monitoring.coreos.com CRDs absent: PodMonitor and PrometheusRule skipped; pods carry "
            "prometheus.io/scrape annotations instead",
        )
    return cond.condition("Degraded", False, "AsExpected", "")


def _deployment_rolling(deployment: dict[str, Any]) -> bool:
    spec_replicas = (deployment.get("spec") or {}).get("replicas", 1)
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation")
    if generation is not None and status.get("observedGeneration") is not None and \
            status["observedGeneration"] < generation:
        return True
    return status.get("updatedReplicas", spec_replicas) < spec_replicas


def invalid_spec_status(body: dict[str, Any], problems: list[str], now: float) -> dict[str, Any]:
    """Ready=False/InvalidSpec; counts untouched, because no child was touched."""
    meta = body["metadata"]
    status = body.get("status") or {}
    updates = [
        cond.condition("Ready", False, "InvalidSpec", "; ".join(problems)),
        cond.condition("Progressing", False, "InvalidSpec", "spec rejected: running objects left as they are"),
        cond.condition("Reconciling", False, "InvalidSpec", "nothing to do until the spec is fixed"),
        cond.condition("Stalled", True, "InvalidSpec", "; ".join(problems)),
    ]
    # observedGeneration too: GitOps tools wait for it to reach metadata.generation before reading conditions,
    # so without it an invalid spec would look "in progress" forever instead of failed.
    # The selector too: it depends on the name only, and the scale subresource must never hand out "".
    return {"observedGeneration": meta.get("generation"), "selector": serving_selector(meta["name"]),
            "conditions": cond.set_conditions(status.get("conditions"), updates, now=now,
                                              generation=meta.get("generation"))}


# ---------------------------------------------------------------- the I/O part


def add_scrape_annotations(obj: dict[str, Any]) -> dict[str, Any]:
    """Without the Prometheus operator, annotate pod templates so annotation-based scraping finds them."""
    if obj.get("kind") != "Deployment":
        return obj
    template_meta = obj.setdefault("spec", {}).setdefault("template", {}).setdefault("metadata", {})
    annotations = template_meta.setdefault("annotations", {})
    for key, value in SCRAPE_ANNOTATIONS.items():
        annotations.setdefault(key, value)
    if PORT_ANNOTATION not in annotations:
        for container in obj["spec"]["template"].get("spec", {}).get("containers", []):
            for port in container.get("ports", []):
                if port.get("name") in ("http", "metrics"):
                    annotations[PORT_ANNOTATION] = str(port["containerPort"])
    return obj


def stamp_deployment(obj: dict[str, Any], min_ready_seconds: int) -> dict[str, Any]:
    """minReadySeconds (see ReconcileOptions) and the template's own hash (TEMPLATE_HASH_ANNOTATION).

    The hash is taken over the template without it, so it changes exactly when the template does: a
    rollout is started by the same changes as before (once on upgrade, when the annotation first appears)."""
    if obj.get("kind") != "Deployment":
        return obj
    spec = obj["spec"]
    if min_ready_seconds:
        spec["minReadySeconds"] = min_ready_seconds
    template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
    annotations = template_meta.setdefault("annotations", {})
    annotations.pop(TEMPLATE_HASH_ANNOTATION, None)
    digest = hashlib.sha256(json.dumps(spec["template"], sort_keys=True).encode()).hexdigest()[:12]
    annotations[TEMPLATE_HASH_ANNOTATION] = digest
    return obj


def min_ready_seconds_for(autoscale_interval: float) -> int:
    """Two autoscale intervals and a margin: the tick that swaps roles runs before the pod counts as available."""
    return math.ceil(2 * autoscale_interval) + 5


def desired_children(body: dict[str, Any], spec: ModelServiceSpec, serving: dict[str, int],
                     warm: dict[str, int], monitoring: bool,
                     images: dict[str, str] | None = None,
                     monitoring_labels: dict[str, str] | None = None,
                     min_ready_seconds: int = 0) -> list[dict[str, Any]]:
    meta = body["metadata"]
    service = ModelService.model_validate({
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default"),
                     "uid": meta.get("uid"), "generation": meta.get("generation"),
                     "labels": meta.get("labels") or {}},
        "spec": spec.model_dump(by_alias=True, exclude_none=True),
    })
    objects = render_objects(service, serving, warm_by_region=warm, monitoring=monitoring, images=images,
                             monitoring_labels=monitoring_labels)
    reference = owner_reference(body)
    result = []
    for obj in objects:
        owned = with_owner(obj, reference)
        owned["metadata"].setdefault("namespace", meta.get("namespace", "default"))
        if not monitoring:
            owned = add_scrape_annotations(owned)
        result.append(stamp_deployment(owned, min_ready_seconds))
    return result


def template_hashes(desired: list[dict[str, Any]]) -> dict[str, str]:
    """Region -> the current pod-template hash of its Deployment."""
    hashes = {}
    for obj in desired:
        if obj["kind"] == "Deployment":
            region = (obj["metadata"].get("labels") or {}).get(REGION_LABEL, DEFAULT_REGION)
            hashes[region] = obj["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    return hashes


def _child_region(obj: dict[str, Any]) -> str | None:
    return (obj.get("metadata", {}).get("labels") or {}).get(REGION_LABEL)


def hand_over_regions(plan: ChildPlan, pods: list[dict[str, Any]], serving: dict[str, int]) -> str | None:
    """Phase the deletion of the children of regions the spec no longer has (renamed, removed, or the
    default region replaced by named ones); returns what is happening, for the Progressing condition.

    Deleting them in the same pass that creates the new regions' Deployments would take every serving pod
    away minutes before a new one is ready. So the old children are held while any current region has fewer
    ready serving pods than its target; then the old Deployments are scaled to 0, and all of an old region's
    children are deleted once none of its pods is left. Children without a region label go at once."""
    retiring = [obj for obj in plan.delete if _child_region(obj) is not None and _child_region(obj) not in serving]
    if not retiring:
        return None
    plan.delete = [obj for obj in plan.delete if obj not in retiring]
    regions = sorted({_child_region(obj) or "" for obj in retiring})
    counts = count_pods(pods, list(serving))
    short = [f"{name} {counts[name]['serving']}/{serving[name]}" for name in serving
             if counts[name]["serving"] < serving[name]]
    if short:
        plan.held.extend(retiring)
        return (f"{', '.join(regions)} keeps serving until the new regions are ready "
                f"(ready serving/target: {', '.join(short)})")
    draining = []
    for region in regions:
        children = [obj for obj in retiring if _child_region(obj) == region]
        scaled = [obj for obj in children if obj["kind"] == "Deployment" and (obj.get("spec") or {}).get("replicas")]
        if scaled or counts.get(region, {}).get("total"):
            plan.scale_down.extend(scaled)
            plan.held.extend(obj for obj in children if obj not in scaled)
            draining.append(region)
        else:
            plan.delete.extend(children)
    return f"new regions ready; draining {', '.join(draining)}" if draining else None


def list_children(kube: Kube, namespace: str, name: str, desired: list[dict[str, Any]],
                  monitoring: bool) -> list[dict[str, Any]]:
    """The ModelService's existing children of every kind it renders or may have rendered before.

    The routing kinds (OPTIONAL_KINDS) are listed when their API is served even if nothing is rendered now,
    so a removed spec.routing or region deletes its pool and route. Their CRDs may be missing (404) and the
    default chart grants no access to them (403, routing.enabled=false): then there is nothing the operator
    can have created, and the list counts as empty instead of failing the reconcile."""
    wanted = {obj["kind"] for obj in desired}
    fixed = wanted | set(CHILD_KINDS) | (set(MONITORING_KINDS) if monitoring else set())
    optional = {kind for kind, api in OPTIONAL_KINDS.items() if kind in wanted or kube.serves(api)}
    labels = {MODEL_SERVICE_LABEL: name}
    actual = [obj for kind in sorted(fixed - set(OPTIONAL_KINDS)) for obj in kube.list(kind, namespace, labels)]
    for kind in sorted(optional):
        try:
            actual.extend(kube.list(kind, namespace, labels))
        except ApiException as error:
            if error.status not in (403, 404):
                raise
    return actual


def reconcile(kube: Kube, body: dict[str, Any], *, now: float,
              options: ReconcileOptions | None = None,
              on_event: Callable[[KubeEvent], None] | None = None,
              memory: dict[str, Any] | None = None,
              pods: list[dict[str, Any]] | None = None,
              autoscaler: AutoscalerReport | None = None,
              ) -> ReconcileResult:
    """Bring the children of one ModelService in line with its spec and the stored targets; return the
    status to write.

    `memory`/`pods`: the autoscale tick passes what it has just persisted and listed (one read of each per
    tick); the change handlers and the drift check leave them out and they are read here. The actuator
    (`options.actuate`) runs before the children are written, so a Deployment that shrinks has its victims
    marked with the lowest pod-deletion-cost first. Without it a spec change that lowers replicas let the
    ReplicaSet pick serving pods and keep warm ones (seen on real ReplicaSets in tests/cluster)."""
    options = options or ReconcileOptions()
    meta = body["metadata"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    events: list[KubeEvent] = []

    def emit(event: KubeEvent) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    spec, problems = validate_spec(body.get("spec"))
    if spec is None:
        emit(KubeEvent("Warning", "InvalidSpec", "; ".join(problems)[:1000]))
        return ReconcileResult(invalid_spec_status(body, problems, now), events, valid=False)

    monitoring = kube.serves(MONITORING_API)
    if memory is None:
        memory = read_memory(kube, namespace, name)
    serving = serving_targets(spec, remembered_serving(memory, body.get("status")))
    warm = warm_targets(spec, memory)
    try:
        desired = desired_children(body, spec, serving, warm, monitoring, options.images,
                                   options.monitoring_labels, options.min_ready_seconds)
    except ValueError as error:  # a spec the models accept but no object can express (render says why)
        problems = [f"spec: {error}"]
        emit(KubeEvent("Warning", "InvalidSpec", problems[0][:1000]))
        return ReconcileResult(invalid_spec_status(body, problems, now), events, valid=False)
    if pods is None:
        pods = kube.list("Pod", namespace, {MODEL_SERVICE_LABEL: name})
    actuation = None
    if options.actuate is not None:
        actuation = options.actuate(body, serving, warm, pods, template_hashes(desired))
        for event in actuation.events:
            emit(event)
        pods = with_roles(pods, actuation)
    actual = list_children(kube, namespace, name, desired, monitoring)
    plan = plan_children(desired, actual, meta["uid"])
    handover = hand_over_regions(plan, pods, serving)

    apply_problems: list[str] = []
    transient: str | None = None
    for obj in plan.foreign:
        apply_problems.append(f"{obj['kind']} {obj['metadata']['name']} exists and is not owned by this ModelService")
    for action, obj, write in _writes(kube, plan, namespace):
        label = f"{obj['kind']} {obj['metadata']['name']}"
        try:
            write()
        except ApiException as error:
            if namespace_terminating(error):
                break  # the namespace is being deleted: nothing to write, nothing to report
            message = f"{action} {label}: {error.status} {_api_message(error)}"
            if error.status in TRANSIENT_STATUSES:
                transient = transient or message
            else:
                apply_problems.append(message)
            emit(KubeEvent("Warning", "ApplyFailed", message))
            continue
        emit(KubeEvent("Normal", WRITE_REASONS[action], f"{action} {label}"))

    deployments = [obj for obj in actual if obj["kind"] == "Deployment"]
    status = reconcile_status(body, serving=serving, pods=pods, deployments=deployments,
                              apply_problems=apply_problems, monitoring=monitoring, now=now,
                              autoscaler_degraded=memory.get("degraded"), handover=handover,
                              autoscaler=autoscaler)
    return ReconcileResult(status, events, valid=True, transient_error=transient, serving=serving, warm=warm,
                           actuation=actuation)


WRITE_REASONS = {"created": "Created", "patched": "Patched", "scaled down": "Draining", "deleted": "Deleted"}


def _writes(kube: Kube, plan: ChildPlan, namespace: str):
    """(verb, object, thunk) for every write in the plan: creations first, then patches and the scale-down
    of retiring Deployments, deletions last."""
    for obj in plan.create:
        yield "created", obj, (lambda obj=obj: kube.create(obj))
    for obj, _paths in plan.patch:
        yield "patched", obj, (
            lambda obj=obj: kube.patch(obj["kind"], namespace, obj["metadata"]["name"], owned_fields(obj)))
    for obj in plan.scale_down:
        yield "scaled down", obj, (
            lambda obj=obj: kube.patch("Deployment", namespace, obj["metadata"]["name"], {"spec": {"replicas": 0}}))
    for obj in plan.delete:
        yield "deleted", obj, (lambda obj=obj: kube.delete(obj["kind"], namespace, obj["metadata"]["name"]))


def _api_message(error: ApiException) -> str:
    try:
        return json.loads(error.body or "{}").get("message") or error.reason or ""
    except ValueError:
        return error.reason or ""
