"""The simulator acts as the operator does: for the same pods and targets, Fleet.apply carries out the role
plan the Kubernetes actuator computes from the equivalent pod objects (kube.actuator.pod_infos ->
warmpool.plan_roles): same promotions, demotions, Deployment replicas and deletion victims."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sloserve_operator.api.labels import MODEL_SERVICE_LABEL, REGION_LABEL, ROLE_LABEL, SERVING, WARM
from sloserve_operator.autoscaler.act.warmpool import COST_VICTIM, plan_roles
from sloserve_operator.autoscaler.decide.capacity import load_shipped
from sloserve_operator.kube.actuator import pod_infos
from sloserve_operator.simulate.fleet import PROMOTING, STARTING, Fleet, Pod
from sloserve_operator.simulate.recorder import Recorder

CPU = load_shipped("smollm2-135m-cpu")
# (state in the simulator, creation time). In the second, the promoting pod is the oldest: the operator keeps
# the oldest ready serving-labelled pods, where the simulator's own rule used to demote promoting pods first.
FLEETS = {
    "mixed": [(SERVING, 10.0), (SERVING, 20.0), (PROMOTING, 30.0), (WARM, 5.0), (WARM, 40.0), (STARTING, 50.0)],
    "old-promoting": [(PROMOTING, 5.0), (SERVING, 10.0), (SERVING, 20.0), (WARM, 40.0), (STARTING, 50.0)],
}


def kube_pod(name: str, state: str, created: float) -> dict:
    """The pod object the operator would list for a simulated pod in `state`."""
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = state != STARTING
    return {"metadata": {"name": name, "creationTimestamp": stamp,
                         "labels": {MODEL_SERVICE_LABEL: "chat", REGION_LABEL: "default",
                                    ROLE_LABEL: WARM if state == WARM else SERVING}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def fleet_of(states: list[tuple[str, float]]) -> Fleet:
    fleet = Fleet(CPU, ["default"], Recorder(["default"], 1000, 1.0, 1.0), 1.0, cold_start=100.0)
    for state, created in states:
        template = fleet._new_pod("default", state, created)  # noqa: SLF001 - a pod as the replay made it
        fleet.pods.append(Pod(template.ident, "default", state, created, template.engine))
    return fleet


@pytest.mark.parametrize("fleet_name", sorted(FLEETS))
@pytest.mark.parametrize("serving, warm", [(1, 0), (2, 1), (3, 2), (5, 1), (4, 0), (0, 0)])
def test_fleet_apply_carries_out_the_operators_role_plan(fleet_name, serving, warm):
    fleet = fleet_of(FLEETS[fleet_name])
    names = {str(pod.ident): pod for pod in fleet.pods}
    before = {name: pod.state for name, pod in names.items()}
    operator_plan = plan_roles(pod_infos([kube_pod(name, pod.state, pod.created) for name, pod in names.items()],
                                         "default"), serving, warm)

    fleet.apply("default", serving, warm, 100.0)

    after = {str(pod.ident): pod.state for pod in fleet.pods}
    promoted = sorted(name for name in before if before[name] == WARM and after.get(name) == PROMOTING)
    # demoted: warm now, or removed (a demoted pod can also be one of the ReplicaSet's victims)
    demoted = sorted(name for name in before if before[name] in (SERVING, PROMOTING) and after.get(name) in (WARM, None))
    removed = sorted(name for name in before if name not in after)
    victims = sorted(name for name, cost in operator_plan.deletion_cost.items() if cost == COST_VICTIM)
    assert promoted == sorted(operator_plan.promote)
    assert demoted == sorted(name for name in operator_plan.demote if before[name] != STARTING)
    assert removed == victims  # none has requests in flight, so the victims go at once
    live = [pod for pod in fleet.pods if pod.state != "draining"]
    assert len(live) == operator_plan.replicas == serving + warm
