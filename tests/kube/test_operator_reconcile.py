"""Reconcile decisions as plain functions: owned-field drift, child plans, targets, pod counts, conditions."""

from __future__ import annotations

import copy

import pytest
from quickstart_spec import QUICKSTART_SPEC
from sloserve_operator.api.spec import parse_spec
from sloserve_operator.kube import conditions as cond
from sloserve_operator.kube.reconcile import (
    count_pods,
    degraded_condition,
    drift,
    invalid_spec_status,
    owned_fields,
    plan_children,
    reconcile_status,
    remembered_serving,
    serving_targets,
    warm_targets,
)

UID = "uid-1"


def deployment(name: str = "chat", replicas: int = 2, owner: str | None = UID, **extra_spec) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"sloserve.io/model-service": "chat"},
                     "ownerReferences": [{"uid": owner, "kind": "ModelService", "name": "chat"}] if owner else []},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "runtime", "image": "r:1",
                                                                             "args": ["--port", "8000"]}]}},
                 **extra_spec},
    }


def with_server_defaults(obj: dict) -> dict:
    """What an API server returns: our fields plus defaults, status and server-managed metadata."""
    live = copy.deepcopy(obj)
    live["metadata"].update({"uid": "child", "resourceVersion": "7", "generation": 3,
                             "managedFields": [{"manager": "x"}]})
    live["spec"]["progressDeadlineSeconds"] = 600
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update({"imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"})
    live["status"] = {"replicas": 2}
    return live


# ---------------------------------------------------------------- drift and plans


def test_server_defaults_are_not_drift():
    desired = deployment()
    assert drift(owned_fields(desired), with_server_defaults(desired)) == []


@pytest.mark.parametrize("change, path", [
    (lambda d: d["spec"].update(replicas=5), "spec.replicas"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="r:2"),
     "spec.template.spec.containers[0].image"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["args"].append("--x"),
     "spec.template.spec.containers[0].args"),
    (lambda d: d["metadata"]["labels"].pop("sloserve.io/model-service"), "metadata.labels.sloserve.io/model-service"),
])
def test_owned_field_changes_are_drift(change, path):
    desired = deployment()
    live = with_server_defaults(desired)
    change(live)
    assert drift(owned_fields(desired), live) == [path]


def test_numbers_spelled_as_strings_are_not_drift():
    assert drift({"cpu": "1"}, {"cpu": 1}) == []
    assert drift({"port": 8000}, {"port": "8000"}) == []


def test_canonicalised_quantities_are_not_drift_but_changed_ones_are():
    """What the API server writes back for "0.5" and "1024Mi" (tests/cluster sees it on a real server)."""
    assert drift({"cpu": "0.5", "memory": "1024Mi"}, {"cpu": "500m", "memory": "1Gi"}) == []
    assert drift({"cpu": "0.5"}, {"cpu": "600m"}) == ["cpu"]
    assert drift({"image": "runtime:v1"}, {"image": "runtime:v2"}) == ["image"]


def test_plan_creates_patches_deletes_and_refuses_foreign_objects():
    wanted_new = deployment("chat-east")
    wanted_same = deployment("chat-west")
    wanted_drifted = deployment("chat-north", replicas=3)
    foreign = deployment("chat-south", owner="someone-else")
    actual = [
        with_server_defaults(wanted_same),
        with_server_defaults(deployment("chat-north", replicas=1)),
        with_server_defaults(deployment("chat-removed")),
        with_server_defaults(foreign),
    ]
    plan = plan_children([wanted_new, wanted_same, wanted_drifted, deployment("chat-south")], actual, UID)
    assert [obj["metadata"]["name"] for obj in plan.create] == ["chat-east"]
    assert [(obj["metadata"]["name"], paths) for obj, paths in plan.patch] == [("chat-north", ["spec.replicas"])]
    assert [obj["metadata"]["name"] for obj in plan.delete] == ["chat-removed"]
    assert [obj["metadata"]["name"] for obj in plan.foreign] == ["chat-south"]
    assert [obj["metadata"]["name"] for obj in plan.unchanged] == ["chat-west"]


def test_plan_never_deletes_what_it_does_not_own():
    plan = plan_children([], [with_server_defaults(deployment("other", owner="x"))], UID)
    assert plan.empty


def test_object_being_deleted_is_recreated():
    live = with_server_defaults(deployment())
    live["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    plan = plan_children([deployment()], [live], UID)
    assert [obj["metadata"]["name"] for obj in plan.create] == ["chat"]


# ---------------------------------------------------------------- targets


def spec_with(**scaling) -> dict:
    spec = copy.deepcopy(QUICKSTART_SPEC)
    spec["scaling"].update(scaling)
    return spec


def test_targets_start_at_min_replicas_and_follow_the_autoscaler_within_bounds():
    spec = parse_spec(spec_with(minReplicas=2, maxReplicas=4))
    assert serving_targets(spec, None) == {"default": 2}
    assert serving_targets(spec, {"default": 3}) == {"default": 3}
    assert serving_targets(spec, {"default": 9}) == {"default": 4}
    assert serving_targets(spec, {"default": 0}) == {"default": 2}


def test_stored_targets_are_the_one_source_and_status_only_an_upgrade_fallback():
    legacy = {"regions": [{"name": "default", "desired": 3}]}
    assert remembered_serving({"serving": {"default": 2}}, legacy) == {"default": 2}
    assert remembered_serving({}, legacy) == {"default": 3}  # written by a version that kept it in status
    assert remembered_serving({}, None) is None


def test_manual_mode_uses_spec_replicas():
    raw = spec_with(mode="manual")
    raw["replicas"] = 5
    assert serving_targets(parse_spec(raw), {"default": 1}) == {"default": 5}


def test_targets_are_resplit_when_regions_change():
    raw = spec_with(minReplicas=1, maxReplicas=8)
    raw["placement"] = {"regions": [{"name": "east", "weight": 3}, {"name": "west", "weight": 1}]}
    spec = parse_spec(raw)
    assert serving_targets(spec, {"east": 2, "west": 2}) == {"east": 2, "west": 2}
    moved = {"default": 4}  # the spec used to have no regions
    assert serving_targets(spec, moved) == {"east": 3, "west": 1}


def test_warm_pool_spreads_by_weight_unless_the_autoscaler_chose():
    raw = spec_with(warmPool={"size": 3})
    raw["placement"] = {"regions": [{"name": "east", "weight": 2}, {"name": "west", "weight": 1}]}
    spec = parse_spec(raw)
    assert warm_targets(spec, {}) == {"east": 2, "west": 1}
    assert warm_targets(spec, {"warm": {"east": 0, "west": 3}}) == {"east": 0, "west": 3}
    assert warm_targets(spec, {"warm": {"gone": 3}}) == {"east": 2, "west": 1}


# ---------------------------------------------------------------- pods and status


def pod(name: str, role: str, ready: bool, region: str = "default", deleting: bool = False) -> dict:
    meta = {"name": name, "labels": {"sloserve.io/role": role, "sloserve.io/region": region}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_pods_are_counted_by_region_role_and_readiness():
    pods = [pod("a", "serving", True), pod("b", "warm", True), pod("c", "serving", False),
            pod("d", "serving", True, deleting=True), pod("e", "serving", True, region="east")]
    counts = count_pods(pods, ["default"])
    assert counts["default"] == {"serving": 1, "warm": 1, "pending": 1, "total": 3}
    assert counts["east"]["serving"] == 1


def body(generation: int = 1, conditions: list | None = None) -> dict:
    return {"metadata": {"name": "chat", "namespace": "default", "generation": generation, "uid": UID},
            "status": {"conditions": conditions or []}}


def test_status_ready_when_enough_serving_pods():
    status = reconcile_status(body(), serving={"default": 1}, pods=[pod("a", "serving", True), pod("b", "warm", True)],
                              deployments=[], apply_problems=[], monitoring=True, now=1000.0)
    ready = cond.find(status["conditions"], "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 1
    assert cond.find(status["conditions"], "Progressing")["status"] == "False"
    assert cond.find(status["conditions"], "Degraded")["status"] == "False"
    assert (status["serving"], status["warm"], status["replicas"], status["desiredReplicas"]) == (1, 1, 2, 1)
    assert status["selector"] == "sloserve.io/model-service=chat,sloserve.io/role=serving"


def test_apply_problems_surface_in_ready():
    status = reconcile_status(body(), serving={"default": 1}, pods=[], deployments=[],
                              apply_problems=["created Deployment chat: 403 forbidden"], monitoring=True, now=1.0)
    ready = cond.find(status["conditions"], "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyFailed") and "403" in ready["message"]
    stalled = cond.find(status["conditions"], "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ApplyFailed")


def test_kstatus_conditions_follow_progress():
    """Reconciling=True while pods start or roll; both False once settled (kstatus: Current)."""
    starting = reconcile_status(body(), serving={"default": 2}, pods=[pod("a", "serving", True)],
                                deployments=[], apply_problems=[], monitoring=True, now=1.0)
    assert cond.find(starting["conditions"], "Reconciling")["status"] == "True"
    settled = reconcile_status(body(), serving={"default": 1}, pods=[pod("a", "serving", True)],
                               deployments=[], apply_problems=[], monitoring=True, now=1.0)
    assert cond.find(settled["conditions"], "Reconciling")["status"] == "False"
    assert cond.find(settled["conditions"], "Stalled")["status"] == "False"


def test_rolling_deployment_is_progressing():
    rolling = {"metadata": {"name": "chat", "generation": 4}, "spec": {"replicas": 2},
               "status": {"observedGeneration": 3, "updatedReplicas": 2}}
    status = reconcile_status(body(), serving={"default": 1}, pods=[pod("a", "serving", True)],
                              deployments=[rolling], apply_problems=[], monitoring=True, now=1.0)
    progressing = cond.find(status["conditions"], "Progressing")
    assert progressing["status"] == "True" and "chat" in progressing["message"]


def test_degraded_prefers_the_autoscalers_report():
    assert degraded_condition(True, None)["status"] == "False"
    assert degraded_condition(False, None)["reason"] == "PrometheusOperatorMissing"
    spill = degraded_condition(False, "east: 2 pods pending > 5m")
    assert (spill["status"], spill["reason"]) == ("True", "CapacityShortfall")


def test_invalid_spec_status_keeps_counts_and_other_conditions():
    before = body(generation=2, conditions=[{"type": "SLOMet", "status": "True", "reason": "WithinBudget",
                                             "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}])
    status = invalid_spec_status(before, ["spec.scaling.minReplicas: too big"], now=5.0)
    # Counts untouched (no child was touched); the selector is written: /scale must never hand out "".
    assert set(status) == {"conditions", "observedGeneration", "selector"}
    assert status["observedGeneration"] == 2  # GitOps tools compare it with metadata.generation
    ready = cond.find(status["conditions"], "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == ("False", "InvalidSpec", 2)
    stalled = cond.find(status["conditions"], "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert cond.find(status["conditions"], "Reconciling")["status"] == "False"
    assert cond.find(status["conditions"], "SLOMet")["lastTransitionTime"] == "2026-01-01T00:00:00Z"


# ---------------------------------------------------------------- condition transitions


def test_last_transition_time_moves_only_when_status_moves():
    first = cond.set_conditions([], [cond.condition("Ready", False, "ReplicasNotReady", "0/1")], now=100.0,
                                generation=1)
    assert first[0]["lastTransitionTime"] == "1970-01-01T00:01:40Z"
    same = cond.set_conditions(first, [cond.condition("Ready", False, "ReplicasNotReady", "0/2")], now=200.0,
                               generation=2)
    assert same[0]["lastTransitionTime"] == "1970-01-01T00:01:40Z" and same[0]["message"] == "0/2"
    assert same[0]["observedGeneration"] == 2
    flipped = cond.set_conditions(same, [cond.condition("Ready", True, "ReplicasReady")], now=300.0, generation=2)
    assert flipped[0]["lastTransitionTime"] == "1970-01-01T00:05:00Z"


def test_conditions_keep_their_order_and_the_ones_not_updated():
    current = cond.set_conditions([], [cond.condition("Degraded", False, "AsExpected"),
                                       cond.condition("Ready", True, "ReplicasReady")], now=1.0, generation=1)
    merged = cond.set_conditions(current, [cond.condition("SLOMet", None, "NotMeasured")], now=2.0, generation=1)
    assert [item["type"] for item in merged] == ["Ready", "SLOMet", "Degraded"]
    assert cond.find(merged, "SLOMet")["status"] == "Unknown"
    assert [item["type"] for item in cond.changed(current, merged)] == ["SLOMet"]


def test_unknown_condition_type_is_refused():
    with pytest.raises(ValueError, match="unknown condition type"):
        cond.condition("Happy", True, "Yes")


# ---------------------------------------------------------------- status shape vs the CRD


def _without_nulls(value):
    """What the API server stores from a merge patch: null deletes the key."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def test_written_status_fits_the_crd_status_schema():
    import jsonschema
    import yaml
    from operator_harness import ROOT_DIR
    from sloserve_operator.autoscaler.observe.observation import Observation, RegionObservation
    from sloserve_operator.kube.autoscale_tick import slo_condition, summarize

    crd = yaml.safe_load((ROOT_DIR / "crds" / "modelservices.sloserve.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    status = reconcile_status(body(), serving={"default": 1}, pods=[pod("a", "serving", True)], deployments=[],
                              apply_problems=[], monitoring=False, now=10.0)
    observation = Observation(time=10.0, regions={"default": RegionObservation(
        region="default", window_seconds=60, ready_replicas=1, request_rate=2.5, ttft_p95=0.4, itl_p95=0.2,
        ttft_within_budget=0.99, itl_within_budget=0.5)})
    status["observed"] = summarize(observation)
    status["conditions"] = cond.set_conditions(status["conditions"], [slo_condition(parse_spec(QUICKSTART_SPEC),
                                                                                    observation)], now=11.0,
                                               generation=1)
    status["lastDecision"] = {"reason": "hold 1", "from": 1, "to": 1, "time": cond.rfc3339(11.0)}
    status["lastScaleTime"] = cond.rfc3339(11.0)
    jsonschema.validate(_without_nulls(status), schema)
    assert cond.find(status["conditions"], "SLOMet")["reason"] == "BudgetExceeded"  # itl 200ms > 100ms


# ---------------------------------------------------------------- a namespace being deleted


class TerminatingNamespace:
    """The API server of a namespace being deleted: reads answer, every create is refused (403)."""

    def __init__(self) -> None:
        self.creates = 0

    def serves(self, api: str) -> bool:
        return False

    def get(self, kind, namespace, name):
        return None

    def list(self, kind, namespace, labels=None):
        return []

    def create(self, obj):
        from kubernetes.client.exceptions import ApiException

        self.creates += 1
        error = ApiException(status=403, reason="Forbidden")
        error.body = ('{"reason":"Forbidden","details":{"causes":[{"reason":"NamespaceTerminating"}]},'
                      '"message":"unable to create new content in namespace t because it is being terminated"}')
        raise error


def test_a_terminating_namespace_is_not_reported_as_a_failure():
    from sloserve_operator.kube.reconcile import reconcile

    kube = TerminatingNamespace()
    body = {"metadata": {"name": "chat", "namespace": "t", "uid": UID, "generation": 1},
            "spec": copy.deepcopy(QUICKSTART_SPEC)}
    result = reconcile(kube, body, now=1.0)
    assert kube.creates == 1  # stopped at the first refusal
    assert result.events == []  # an Event could not be posted there either
    assert cond.find(result.status["conditions"], "Stalled")["status"] == "False"
