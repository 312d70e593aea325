"""Warm pool role planning: promotion, demotion, refill and deletion cost."""

from __future__ import annotations

from sloserve_operator.autoscaler.act.warmpool import COST_SERVING, COST_VICTIM, PodInfo, plan_roles


def pod(name: str, role: str, ready: bool = True, created: float = 0.0) -> PodInfo:
    return PodInfo(name=name, region="default", role=role, ready=ready, created_at=created)


def test_scale_up_promotes_only_ready_warm_pods_oldest_first_and_refills():
    pods = [pod("s1", "serving"), pod("w-new", "warm", created=20), pod("w-old", "warm", created=10),
            pod("w-starting", "warm", ready=False, created=5)]
    plan = plan_roles(pods, serving_target=4, warm_target=1)
    assert plan.promote == ["w-old", "w-new"]  # the not-ready pod is never promoted
    assert plan.demote == []
    assert plan.replicas == 5  # serving + warm: the ReplicaSet starts the pods that refill the pool


def test_steady_state_changes_nothing():
    pods = [pod("s1", "serving"), pod("s2", "serving"), pod("w1", "warm")]
    plan = plan_roles(pods, serving_target=2, warm_target=1)
    assert (plan.promote, plan.demote, plan.replicas) == ([], [], 3)
    assert all(cost != COST_VICTIM for cost in plan.deletion_cost.values())


def test_scale_down_demotes_not_ready_then_newest_and_marks_victims():
    pods = [pod("s-old", "serving", created=1), pod("s-new", "serving", created=9),
            pod("s-broken", "serving", ready=False, created=5), pod("w1", "warm", created=3)]
    plan = plan_roles(pods, serving_target=1, warm_target=1)
    assert plan.demote == ["s-broken", "s-new"]
    assert plan.replicas == 2
    victims = sorted(name for name, cost in plan.deletion_cost.items() if cost == COST_VICTIM)
    assert len(victims) == 2 and "s-old" not in victims
    assert "s-broken" in victims  # the not-ready pod goes before a ready warm one
    assert plan.deletion_cost["s-old"] == COST_SERVING


def test_no_warm_pods_means_nothing_to_promote_yet():
    plan = plan_roles([pod("s1", "serving")], serving_target=3, warm_target=0)
    assert plan.promote == [] and plan.replicas == 3


def test_negative_targets_are_treated_as_zero():
    plan = plan_roles([pod("s1", "serving")], serving_target=-1, warm_target=-2)
    assert plan.replicas == 0 and plan.demote == ["s1"]


def test_a_ready_warm_pod_replaces_an_unready_serving_one():
    """A hung or crash-looping serving pod counts for nothing: the ready warm pod takes its place, and the
    unready pod waits in the pool (demoted, not deleted: it may recover)."""
    pods = [pod("s-ok", "serving", created=1), pod("s-hung", "serving", ready=False, created=2),
            pod("w1", "warm", created=3)]
    plan = plan_roles(pods, serving_target=2, warm_target=1)
    assert plan.promote == ["w1"]
    assert plan.demote == ["s-hung"]
    assert plan.replicas == 3


def test_unready_serving_pods_stay_while_no_warm_pod_is_ready():
    """At a cold start nothing is ready: roles stay as the template made them (no churn of labels)."""
    pods = [pod("s1", "serving", ready=False), pod("s2", "serving", ready=False), pod("w1", "warm", ready=False)]
    plan = plan_roles(pods, serving_target=2, warm_target=1)
    assert (plan.promote, plan.demote) == ([], [])


def test_rollout_demotes_old_revision_pods_first_and_never_lowers_ready_serving():
    def at(name: str, role: str, ready: bool = True, created: float = 0.0, current: bool = True) -> PodInfo:
        return PodInfo(name=name, region="default", role=role, ready=ready, created_at=created, current=current)

    old = [at("old-1", "serving", created=1, current=False), at("old-2", "serving", created=2, current=False),
           at("old-w", "warm", created=3, current=False)]
    # A new-revision pod starts as serving (the template's role) but is not ready: it waits as warm.
    starting = plan_roles(old + [at("new-1", "serving", ready=False, created=10)], serving_target=2, warm_target=1)
    assert (starting.promote, starting.demote) == ([], ["new-1"])
    # Once ready it serves in place of an old-revision pod (the newest old one), in the same plan.
    swapped = plan_roles(old + [at("new-1", "warm", created=10)], serving_target=2, warm_target=1)
    assert (swapped.promote, swapped.demote) == (["new-1"], ["old-2"])
    serving_after = {"old-1", "new-1"}
    assert {name for name, cost in swapped.deletion_cost.items() if cost == COST_SERVING} == serving_after
    # The ReplicaSet of the old revision removes its cheapest pod: a warm one, never a serving one.
    old_costs = {pod.name: swapped.deletion_cost[pod.name] for pod in old}
    assert min(old_costs, key=old_costs.get) in {"old-2", "old-w"}
    assert old_costs["old-1"] > max(old_costs["old-2"], old_costs["old-w"])
