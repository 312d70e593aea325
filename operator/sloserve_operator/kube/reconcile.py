"""Make the cluster match what a ModelService renders to, and compute its status.

The decisions are plain functions of dicts (desired objects, actual objects, pods) so tests can call them
directly: `plan_children` (create / patch / delete), `drift` (only the fields we own are compared, so defaults
that the API server or other controllers add never cause endless patches), `serving_targets`, `count_pods`
and `reconcile_status`. `reconcile` is the one function with I/O: it applies a plan through kube.Kube.

An invalid spec (one the CRD schema could not catch) is reported in status and touches no child object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from sloserve_operator.api.labels import (
    MODEL_SERVICE_LABEL,
    PORT_ANNOTATION,
    REGION_LABEL,
    ROLE_LABEL,
    SCRAPE_ANNOTATIONS,
    SERVING,
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
from sloserve_operator.kube.autoscaler_memory import read_memory
from sloserve_operator.kube.client import MONITORING_API, Kube
from sloserve_operator.kube.owners import owned_by, owner_reference, with_owner
from sloserve_operator.kube.render import render_objects

CHILD_KINDS = ("Deployment", "Service", "PodDisruptionBudget")  # listed even when none is rendered now
MONITORING_KINDS = ("PodMonitor", "PrometheusRule")
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

    @property
    def empty(self) -> bool:
        return not (self.create or self.patch or self.delete)


@dataclass
class ReconcileResult:
    status: dict[str, Any]  # the status fields reconcile owns (merge into .status)
    events: list[KubeEvent]
    valid: bool
    transient_error: str | None = None  # set when a retry with backoff should follow
    warm: dict[str, int] = field(default_factory=dict)  # the warm targets applied, region -> pods (for /metrics)


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


def serving_targets(spec: ModelServiceSpec, status: dict[str, Any] | None) -> dict[str, int]:
    """Serving replicas per region: spec.replicas in manual mode, else the autoscaler's latest targets
    (status.regions[].desired) within the spec's bounds, else minReplicas split by weight."""
    if spec.scaling.mode == ScalingMode.manual:
        return split_by_weight(spec, spec.replicas)
    names = region_names(spec)
    previous = {item.get("name"): int(item.get("desired") or 0) for item in (status or {}).get("regions") or []}
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


def reconcile_status(body: dict[str, Any], *, serving: dict[str, int], pods: list[dict[str, Any]],
                     deployments: list[dict[str, Any]], apply_problems: list[str], monitoring: bool,
                     now: float, autoscaler_degraded: str | None = None) -> dict[str, Any]:
    """Status fields reconcile owns: counts, selector, observedGeneration, Ready/Progressing/Degraded."""
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
    else:
        updates.append(cond.condition("Stalled", False, "AsExpected", ""))
    updates.append(degraded_condition(monitoring, autoscaler_degraded))
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


def desired_children(body: dict[str, Any], spec: ModelServiceSpec, serving: dict[str, int],
                     warm: dict[str, int], monitoring: bool,
                     images: dict[str, str] | None = None,
                     monitoring_labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
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
        result.append(add_scrape_annotations(owned) if not monitoring else owned)
    return result


def reconcile(kube: Kube, body: dict[str, Any], *, now: float,
              images: dict[str, str] | None = None,
              monitoring_labels: dict[str, str] | None = None,
              on_event: Callable[[KubeEvent], None] | None = None,
              actuate: Callable[[dict[str, Any], dict[str, int], dict[str, int]], list[KubeEvent]] | None = None,
              ) -> ReconcileResult:
    """Bring the children of one ModelService in line with its spec; return the status to write.

    `actuate(body, serving, warm)` (the warm-pool actuator) runs before the children are written, so a
    Deployment that shrinks has its victims marked with the lowest pod-deletion-cost first. Without it a
    spec change that lowers replicas let the ReplicaSet pick serving pods and keep warm ones (seen on real
    ReplicaSets in tests/cluster; kmock runs no ReplicaSet controller)."""
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
    serving = serving_targets(spec, body.get("status"))
    memory = read_memory(kube, namespace, name)
    warm = warm_targets(spec, memory)
    try:
        desired = desired_children(body, spec, serving, warm, monitoring, images, monitoring_labels)
    except ValueError as error:  # a spec the models accept but no object can express (render says why)
        problems = [f"spec: {error}"]
        emit(KubeEvent("Warning", "InvalidSpec", problems[0][:1000]))
        return ReconcileResult(invalid_spec_status(body, problems, now), events, valid=False)
    if actuate is not None:
        for event in actuate(body, serving, warm):
            emit(event)
    kinds = sorted({obj["kind"] for obj in desired} | set(CHILD_KINDS) | (set(MONITORING_KINDS) if monitoring else set()))
    actual = [obj for kind in kinds for obj in kube.list(kind, namespace, {MODEL_SERVICE_LABEL: name})]
    plan = plan_children(desired, actual, meta["uid"])

    apply_problems: list[str] = []
    transient: str | None = None
    for obj in plan.foreign:
        apply_problems.append(f"{obj['kind']} {obj['metadata']['name']} exists and is not owned by this ModelService")
    for action, obj, write in _writes(kube, plan, namespace):
        label = f"{obj['kind']} {obj['metadata']['name']}"
        try:
            write()
        except ApiException as error:
            message = f"{action} {label}: {error.status} {_api_message(error)}"
            if error.status in TRANSIENT_STATUSES:
                transient = transient or message
            else:
                apply_problems.append(message)
            emit(KubeEvent("Warning", "ApplyFailed", message))
            continue
        emit(KubeEvent("Normal", action.capitalize(), f"{action} {label}"))

    pods = kube.list("Pod", namespace, {MODEL_SERVICE_LABEL: name})
    deployments = [obj for obj in actual if obj["kind"] == "Deployment"]
    status = reconcile_status(body, serving=serving, pods=pods, deployments=deployments,
                              apply_problems=apply_problems, monitoring=monitoring, now=now,
                              autoscaler_degraded=memory.get("degraded"))
    return ReconcileResult(status, events, valid=True, transient_error=transient, warm=warm)


def _writes(kube: Kube, plan: ChildPlan, namespace: str):
    """(verb, object, thunk) for every write in the plan, creations first and deletions last."""
    for obj in plan.create:
        yield "created", obj, (lambda obj=obj: kube.create(obj))
    for obj, _paths in plan.patch:
        yield "patched", obj, (
            lambda obj=obj: kube.patch(obj["kind"], namespace, obj["metadata"]["name"], owned_fields(obj)))
    for obj in plan.delete:
        yield "deleted", obj, (lambda obj=obj: kube.delete(obj["kind"], namespace, obj["metadata"]["name"]))


def _api_message(error: ApiException) -> str:
    try:
        return json.loads(error.body or "{}").get("message") or error.reason or ""
    except ValueError:
        return error.reason or ""
