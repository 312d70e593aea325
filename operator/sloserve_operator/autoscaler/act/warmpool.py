"""Serving and warm pod roles: which pods to promote, demote, and delete first.

Pure planning shared by the Kubernetes actuator (label patches, pod-deletion-cost annotations, Deployment
replicas) and local mode's process actuator. Every pod of a (ModelService, region) Deployment is either
serving (selected by the Service) or warm (loaded, ready, idle). Promotion is a label change, seconds, not
a cold start. Rules:
- only ready warm pods are promoted (a promoted pod must serve at once), oldest first, until the *ready*
  serving pods reach the target (a serving pod that is not ready serves nothing);
- a serving surplus is demoted to warm, pods that are not ready first, then the newest: so a ready warm pod
  takes the place of a hung serving one, which waits in the pool until it is ready again;
- Deployment replicas = serving target + warm target, so a promotion makes the ReplicaSet start a pod that
  refills the pool;
- when the pool holds more pods than it should, the extra ones are the deletion victims: they get the lowest
  controller.kubernetes.io/pod-deletion-cost so the ReplicaSet removes them and not a serving pod.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sloserve_operator.api.labels import SERVING

COST_SERVING = 1000
COST_WARM = 100
COST_VICTIM = -1000


@dataclass(frozen=True)
class PodInfo:
    name: str
    region: str
    role: str  # serving | warm (the pod template says serving; a surplus is demoted, not-ready pods first)
    ready: bool
    created_at: float


@dataclass
class RolePlan:
    promote: list[str] = field(default_factory=list)  # warm -> serving
    demote: list[str] = field(default_factory=list)  # serving -> warm
    deletion_cost: dict[str, int] = field(default_factory=dict)  # pod -> pod-deletion-cost
    replicas: int = 0  # Deployment replicas: serving + warm targets


def plan_roles(pods: list[PodInfo], serving_target: int, warm_target: int) -> RolePlan:
    """Plan one region's roles so `serving_target` pods serve and `warm_target` wait, ready, in the pool."""
    serving_target, warm_target = max(serving_target, 0), max(warm_target, 0)
    serving = [pod for pod in pods if pod.role == SERVING]
    warm = [pod for pod in pods if pod.role != SERVING]
    plan = RolePlan(replicas=serving_target + warm_target)

    ready_serving = sum(1 for pod in serving if pod.ready)
    if ready_serving < serving_target:
        # Count only ready serving pods: a hung or crash-looping one must not keep a ready warm pod idle.
        candidates = sorted((pod for pod in warm if pod.ready), key=lambda pod: (pod.created_at, pod.name))
        chosen = candidates[: serving_target - ready_serving]
        plan.promote = [pod.name for pod in chosen]
        serving = serving + chosen
        warm = [pod for pod in warm if pod not in chosen]
    if len(serving) > serving_target:
        # Not-ready first (they serve nothing), then the newest (oldest pods have the warmest caches).
        order = sorted(serving, key=lambda pod: (pod.ready, -pod.created_at, pod.name))
        demoted = order[: len(serving) - serving_target]
        plan.demote = [pod.name for pod in demoted]
        serving = [pod for pod in serving if pod not in demoted]
        warm = warm + demoted

    # Pool members to keep: ready ones first, oldest first. The rest are the ReplicaSet's victims.
    keep_order = sorted(warm, key=lambda pod: (not pod.ready, pod.created_at, pod.name))
    surplus = max(len(serving) + len(warm) - plan.replicas, 0)
    victims = set(pod.name for pod in keep_order[len(keep_order) - surplus:]) if surplus else set()
    for pod in serving:
        plan.deletion_cost[pod.name] = COST_SERVING
    for pod in warm:
        plan.deletion_cost[pod.name] = COST_VICTIM if pod.name in victims else COST_WARM
    return plan
