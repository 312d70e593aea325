"""One autoscaler tick for one ModelService in the cluster: observe, decide, persist, act, report.

The kopf timer in handlers.py calls `autoscale_once` every --autoscale-interval seconds. Observation comes
from a metrics.MetricsSource (PrometheusSource in-cluster), the decision from policy.decide (pure, shared
with local mode and the simulator). The decision is persisted first, in the memory ConfigMap with a
resourceVersion precondition (autoscaler_memory.py: the one store of desired state, which also keeps the
stabilization windows across restarts and leader changes); only when that write succeeded does the tick act,
through reconcile.reconcile, which renders the Deployments from what was stored, runs the warm-pool actuator
and builds the status. A tick that lost the race (409) acts on nothing: the drift check cannot revert what
it did, because both apply the same stored targets. The pods are listed once per tick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sloserve_operator.api.labels import MODEL_SERVICE_LABEL, REGION_LABEL
from sloserve_operator.api.spec import ModelService, ModelServiceSpec, ScalingMode, parse_spec
from sloserve_operator.api.units import format_ms
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.autoscaler.decide.placement import DEFAULT_REGION, split_by_weight
from sloserve_operator.autoscaler.decide.policy import PolicyState
from sloserve_operator.autoscaler.decide.policy import decide as policy_decide
from sloserve_operator.autoscaler.observe.observation import Observation
from sloserve_operator.kube import conditions as cond
from sloserve_operator.kube.autoscaler_memory import WriteOutcome, read_stored, write_memory
from sloserve_operator.kube.client import Kube
from sloserve_operator.kube.reconcile import (
    AutoscalerReport,
    KubeEvent,
    ReconcileOptions,
    RoleChanges,
    count_pods,
    pod_ready,
    reconcile,
    remembered_serving,
    serving_targets,
    warm_targets,
)


@dataclass
class Tick:
    """The outcome of one tick: what to write and what to tell."""

    status: dict[str, Any] | None  # None: nothing to write (the decision could not be persisted)
    memory: dict[str, Any]  # what autoscaler_memory.write_memory was asked to store
    persisted: WriteOutcome = "written"  # "conflict" / "gone": not stored, so nothing was acted on
    events: list[KubeEvent] = field(default_factory=list)
    serving: dict[str, int] = field(default_factory=dict)
    warm: dict[str, int] = field(default_factory=dict)
    direction: str = "hold"  # up | down | hold
    metrics_available: bool = False
    observation: Observation | None = None
    actuation: RoleChanges | None = None
    spec: ModelServiceSpec | None = None
    transient_error: str | None = None


def service_of(body: dict[str, Any], spec: ModelServiceSpec) -> ModelService:
    meta = body["metadata"]
    return ModelService.model_validate({
        "metadata": {"name": meta["name"], "namespace": meta.get("namespace", "default"), "uid": meta.get("uid")},
        "spec": spec.model_dump(by_alias=True, exclude_none=True),
    })


def pending_ages(pods: list[dict[str, Any]], now: float) -> dict[str, float]:
    """Region -> age in seconds of its oldest pod that is not ready (the policy's spill signal)."""
    ages: dict[str, float] = {}
    for pod in pods:
        meta = pod.get("metadata", {})
        if pod_ready(pod) or meta.get("deletionTimestamp") or not meta.get("creationTimestamp"):
            continue
        created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00")).timestamp()
        region = (meta.get("labels") or {}).get(REGION_LABEL, DEFAULT_REGION)
        ages[region] = max(ages.get(region, 0.0), now - created)
    return ages


def observe_safely(source: Any, service: ModelService, now: float) -> Observation:
    """A metrics outage is an observation with problems, never an exception that stops the timer."""
    try:
        return source.observe(service, now)
    except Exception as error:  # noqa: BLE001 - any failure of the source means "not measured"
        return Observation(time=now, problems=(f"metrics source failed: {error}",))


def load_profile(kube: Kube, namespace: str, spec: ModelServiceSpec) -> Any:
    """The capacity profile a spec references (ConfigMap), or None; a broken reference is not fatal."""
    if spec.scaling.profile is None:
        return None
    config_map = kube.get("ConfigMap", namespace, spec.scaling.profile.config_map)
    text = ((config_map or {}).get("data") or {}).get(spec.scaling.profile.key)
    if not text:
        return None
    try:
        return CapacityProfile.from_json(text)
    except (ValueError, KeyError, TypeError):
        return None


def any_sample(observation: Observation) -> bool:
    """True when Prometheus returned at least one series for the service (a pod was scraped), complete or not."""
    return any(value is not None for region in observation.regions.values()
               for value in (region.ready_replicas, region.request_rate, region.running, region.waiting,
                             region.kv_usage, region.ttft_p95, region.itl_p95))


def summarize(observation: Observation, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """status.observed: worst region's p95s, total request rate, lowest within-budget fraction, and when a
    sample last arrived (kept from `previous`, the last status.observed, while none does)."""
    regions = list(observation.regions.values())
    ttft = [r.ttft_p95 for r in regions if r.ttft_p95 is not None]
    itl = [r.itl_p95 for r in regions if r.itl_p95 is not None]
    rates = [r.request_rate for r in regions if r.request_rate is not None]
    within = [min(v for v in (r.ttft_within_budget, r.itl_within_budget) if v is not None) for r in regions
              if r.ttft_within_budget is not None or r.itl_within_budget is not None]
    return {
        "ttftP95": format_ms(max(ttft)) if ttft else None,
        "itlP95": format_ms(max(itl)) if itl else None,
        "requestRate": round(sum(rates), 4) if rates else None,
        "withinBudget": round(min(within), 4) if within else None,
        "lastSampleTime": cond.rfc3339(observation.time) if any_sample(observation)
        else (previous or {}).get("lastSampleTime"),
    }


def slo_condition(spec: ModelServiceSpec, observation: Observation) -> dict[str, Any]:
    ttft_budget, itl_budget = spec.slo.ttft.p95_seconds, spec.slo.itl.p95_seconds
    measured = [r for r in observation.regions.values() if r.ttft_p95 is not None and r.itl_p95 is not None]
    if not measured:
        return cond.condition("SLOMet", None, "NotMeasured", "no latency observed in the window")
    breaches = []
    for region in measured:
        if region.ttft_p95 > ttft_budget:
            breaches.append(f"{region.region}: ttft p95 {format_ms(region.ttft_p95)} > {spec.slo.ttft.p95}")
        if region.itl_p95 > itl_budget:
            breaches.append(f"{region.region}: itl p95 {format_ms(region.itl_p95)} > {spec.slo.itl.p95}")
    if breaches:
        return cond.condition("SLOMet", False, "BudgetExceeded", "; ".join(breaches))
    return cond.condition("SLOMet", True, "WithinBudget", "p95 TTFT and ITL within budget in every region")


NO_SAMPLES_HINT = ("no metrics sample has ever arrived for this ModelService: is a Prometheus selecting its "
                   "PodMonitor? kube-prometheus-stack selects by its release label (operator flag "
                   "--monitoring-label, chart value monitoring.labels)")


def metrics_condition(observation: Observation, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """MetricsAvailable; NoSamplesYet when nothing was ever scraped (`previous`: the last status.observed),
    which on a real cluster is nearly always a Prometheus that does not select the PodMonitor."""
    if observation.available:
        return cond.condition("MetricsAvailable", True, "Observed", "latency and load observed in every region")
    detail = "; ".join(observation.problems) or "no complete observation"
    if not any_sample(observation) and not (previous or {}).get("lastSampleTime"):
        return cond.condition("MetricsAvailable", False, "NoSamplesYet", f"{NO_SAMPLES_HINT}; {detail}")
    return cond.condition("MetricsAvailable", False, "MetricsMissing", f"holding replicas: {detail}")


def decide(spec: ModelServiceSpec, service: ModelService, observation: Observation, memory: dict[str, Any],
           now: float, current: dict[str, int], pending: dict[str, float], profile: Any,
           ready: dict[str, int] | None = None
           ) -> tuple[dict[str, int], dict[str, int], str, str | None, dict[str, Any]]:
    """(serving, warm, reason, degraded, policy state) from policy.decide, or spec.replicas in manual mode.
    `ready`: Ready serving pods per region (a region held for Pending pods keeps that many)."""
    if spec.scaling.mode == ScalingMode.manual:
        serving = split_by_weight(spec, spec.replicas)
        return serving, warm_targets(spec, {}), f"manual: spec.replicas = {spec.replicas}", None, \
            memory.get("state") or {}
    state = PolicyState.from_dict(memory["state"]) if memory.get("state") else PolicyState()
    decision = policy_decide(spec, observation, state, now, current_serving=current, pending_age=pending,
                             profile=profile, ready_serving=ready)
    return dict(decision.serving), dict(decision.warm), decision.reason, decision.degraded, decision.state.to_dict()


def autoscale_once(kube: Kube, source: Any, body: dict[str, Any], now: float,
                   options: ReconcileOptions | None = None) -> Tick | None:
    """Observe, decide, persist, then act for one ModelService. None when its spec is invalid (reconcile
    reports that). The returned status is the one to write (built by reconcile.reconcile_status)."""
    try:
        spec = parse_spec(body.get("spec") or {})
    except ValidationError:
        return None
    meta = body["metadata"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    status = body.get("status") or {}
    service = service_of(body, spec)
    stored = read_stored(kube, namespace, name)
    memory = stored.memory
    current = serving_targets(spec, remembered_serving(memory, status))
    pods = kube.list("Pod", namespace, {MODEL_SERVICE_LABEL: name})
    observation = observe_safely(source, service, now)
    profile = load_profile(kube, namespace, spec)

    ready = {region: counts["serving"] for region, counts in count_pods(pods, list(current)).items()}
    serving, warm, reason, degraded, state = decide(spec, service, observation, memory, now, current,
                                                    pending_ages(pods, now), profile, ready)
    new_memory = {"state": state, "serving": serving, "warm": warm, "degraded": degraded}
    persisted = write_memory(kube, body, new_memory, stored)
    if persisted in ("conflict", "gone"):
        return Tick(status=None, memory=new_memory, persisted=persisted, serving=current, spec=spec,
                    metrics_available=observation.available, observation=observation)

    before, after = sum(current.values()), sum(serving.values())
    direction = "up" if after > before else "down" if after < before else "hold"
    fields: dict[str, Any] = {"observed": summarize(observation, status.get("observed"))}
    last = status.get("lastDecision") or {}
    if direction != "hold" or last.get("reason") != reason or not last:
        fields["lastDecision"] = {"reason": reason, "from": before, "to": after, "time": cond.rfc3339(now)}
    if after != before:
        fields["lastScaleTime"] = cond.rfc3339(now)
    report = AutoscalerReport(conditions=[slo_condition(spec, observation),
                                          metrics_condition(observation, status.get("observed"))],
                              fields=fields)
    result = reconcile(kube, body, now=now, options=options, memory=new_memory, pods=pods, autoscaler=report)
    if not result.valid:
        return None

    events = list(result.events)
    if direction != "hold" or result.serving != current:
        kind = {"up": "ScaledUp", "down": "ScaledDown"}.get(direction, "Rebalanced")
        events.append(KubeEvent("Normal", kind, f"serving {before} -> {after}: {reason}"))
    for item in cond.changed(status.get("conditions"), result.status["conditions"]):
        if item["type"] in ("MetricsAvailable", "Degraded", "SLOMet"):
            kind = "Normal" if (item["status"] == "True") != (item["type"] == "Degraded") else "Warning"
            events.append(KubeEvent(kind, item["reason"], item["message"] or item["type"]))
    return Tick(status=result.status, memory=new_memory, persisted=persisted, events=events,
                serving=result.serving, warm=result.warm, direction=direction,
                metrics_available=observation.available, observation=observation, actuation=result.actuation,
                spec=spec, transient_error=result.transient_error)
