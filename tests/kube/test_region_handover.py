"""Phased region handover, rollout revisions and the rollout conditions, as pure functions (issue 16 items
1 and 7). The same behaviour on the real control plane: tests/cluster/test_regions.py, test_warm_pool.py."""

from __future__ import annotations

from sloserve_operator.kube import conditions as cond
from sloserve_operator.kube.reconcile import (
    TEMPLATE_HASH_ANNOTATION,
    ChildPlan,
    hand_over_regions,
    reconcile_status,
    stamp_deployment,
)


def deployment(name: str, region: str, replicas: int) -> dict:
    return {"kind": "Deployment", "metadata": {"name": name, "labels": {"sloserve.io/region": region}},
            "spec": {"replicas": replicas}}


def child(kind: str, name: str, region: str | None) -> dict:
    labels = {"sloserve.io/region": region} if region else {}
    return {"kind": kind, "metadata": {"name": name, "labels": labels}}


def pod(name: str, region: str, role: str = "serving", ready: bool = True) -> dict:
    return {"metadata": {"name": name, "labels": {"sloserve.io/region": region, "sloserve.io/role": role}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def retiring_plan(replicas: int = 2) -> ChildPlan:
    """The spec went from no regions to `us-east-1`: the default region's children are no longer rendered."""
    return ChildPlan(delete=[deployment("chat", "default", replicas), child("PodDisruptionBudget", "chat", "default"),
                             child("PodMonitor", "chat-old", None)])


def test_old_region_is_held_while_the_new_one_has_fewer_ready_serving_pods_than_its_target():
    plan = retiring_plan()
    pods = [pod("old-1", "default"), pod("old-2", "default"), pod("new-1", "us-east-1"),
            pod("new-2", "us-east-1", ready=False)]
    message = hand_over_regions(plan, pods, {"us-east-1": 2})
    assert [obj["metadata"]["name"] for obj in plan.delete] == ["chat-old"]  # no region: goes at once
    assert {obj["kind"] for obj in plan.held} == {"Deployment", "PodDisruptionBudget"}
    assert plan.scale_down == []
    assert message and "default" in message and "us-east-1 1/2" in message


def test_warm_pods_of_the_new_region_do_not_count_as_ready_serving():
    plan = retiring_plan()
    pods = [pod("new-1", "us-east-1"), pod("new-2", "us-east-1", role="warm")]
    hand_over_regions(plan, pods, {"us-east-1": 2})
    assert plan.scale_down == [] and len(plan.held) == 2


def test_once_the_new_region_serves_at_target_the_old_deployment_is_scaled_down_then_deleted():
    serving = [pod("new-1", "us-east-1"), pod("new-2", "us-east-1")]
    plan = retiring_plan()
    message = hand_over_regions(plan, serving + [pod("old-1", "default")], {"us-east-1": 2})
    assert [obj["metadata"]["name"] for obj in plan.scale_down] == ["chat"]
    assert [obj["kind"] for obj in plan.held] == ["PodDisruptionBudget"]  # kept until the pods are gone
    assert "draining default" in (message or "")

    draining = retiring_plan(replicas=0)
    hand_over_regions(draining, serving + [pod("old-1", "default")], {"us-east-1": 2})
    assert draining.scale_down == [] and len(draining.held) == 2  # a pod of the old region is still there

    drained = retiring_plan(replicas=0)
    assert hand_over_regions(drained, serving, {"us-east-1": 2}) is None
    assert {obj["kind"] for obj in drained.delete} == {"Deployment", "PodDisruptionBudget", "PodMonitor"}


def test_handover_is_reported_as_progressing():
    body = {"metadata": {"name": "chat", "generation": 1}, "status": {}}
    status = reconcile_status(body, serving={"us-east-1": 1}, pods=[pod("old-1", "default")], deployments=[],
                              apply_problems=[], monitoring=True, now=1.0, handover="default keeps serving")
    progressing = cond.find(status["conditions"], "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "RegionHandover")


def test_progress_deadline_and_unschedulable_pods_surface_as_conditions():
    body = {"metadata": {"name": "chat", "generation": 1}, "status": {}}
    stuck = {"metadata": {"name": "chat", "generation": 1}, "spec": {"replicas": 1},
             "status": {"observedGeneration": 1, "conditions": [
                 {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                  "message": 'ReplicaSet "chat-abc" has timed out progressing.'}]}}
    status = reconcile_status(body, serving={"default": 1}, pods=[], deployments=[stuck], apply_problems=[],
                              monitoring=True, now=1.0)
    stalled = cond.find(status["conditions"], "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert "timed out" in stalled["message"]
    assert cond.find(status["conditions"], "Progressing")["reason"] == "ProgressDeadlineExceeded"

    pending = {"metadata": {"name": "chat-x", "labels": {"sloserve.io/role": "serving"}},
               "status": {"phase": "Pending", "conditions": [
                   {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/2 nodes are available"}]}}
    status = reconcile_status(body, serving={"default": 1}, pods=[pending], deployments=[], apply_problems=[],
                              monitoring=True, now=1.0)
    progressing = cond.find(status["conditions"], "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "PodsPending")
    assert "chat-x" in progressing["message"] and "0/2 nodes" in progressing["message"]
    assert cond.find(status["conditions"], "Stalled")["status"] == "False"


def test_template_hash_changes_with_the_template_only():
    def rendered(image: str, replicas: int) -> dict:
        return {"kind": "Deployment", "metadata": {"name": "chat"},
                "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"a": "b"}},
                                                             "spec": {"containers": [{"image": image}]}}}}

    def digest(obj: dict) -> str:
        return obj["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]

    first = stamp_deployment(rendered("v1", 2), min_ready_seconds=9)
    assert first["spec"]["minReadySeconds"] == 9
    assert digest(first) == digest(stamp_deployment(rendered("v1", 5), 9))  # scaling is not a new revision
    assert digest(first) != digest(stamp_deployment(rendered("v2", 2), 9))
    assert digest(stamp_deployment(first, 9)) == digest(first)  # stamping again is stable
