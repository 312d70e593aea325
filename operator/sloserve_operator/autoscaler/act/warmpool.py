"""Serving and warm pod roles: which pods to promote, demote, and delete first.

Pure planning shared by the Kubernetes actuator (label patches, pod-deletion-cost annotations, Deployment
replicas) and local mode's process actuator. Every pod of a (ModelService, region) Deployment is either
serving (selected by the Service) or warm (loaded, ready, idle). Promotion is a label change, seconds, not
a cold start. Rules:
- the serving set is chosen among ready pods (a serving pod that is not ready serves nothing): pods of the
  Deployment's current revision first, then pods already serving (no churn), then the oldest (warmest
  caches); only ready warm pods are promoted, so a promoted pod serves at once;
- a serving pod that is not ready keeps its role only while the ready ones leave a slot free (it serves
  the moment it becomes ready); otherwise it is demoted: a ready warm pod takes the place of a hung serving
  one, which waits in the pool until it is ready again;
- during a rollout new pods start as serving (the template's role) and are demoted while not ready; once a
  new pod is ready it is promoted and an old-revision serving pod demoted in its place, so old-revision pods
  leave the serving set first and the ready serving count never drops (with the Deployment's
  minReadySeconds longer than a tick, the old pod the ReplicaSet then deletes is that demoted one);
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
    current: bool = True  # of the Deployment's current pod template (False: an old revision, mid-rollout)


@dataclass
class RolePlan:
    promote: list[str] = field(default_factory=list)  # warm -> serving
    demote: list[str] = field(default_factory=list)  # serving -> warm
    deletion_cost: dict[str, int] = field(default_factory=dict)  # pod -> pod-deletion-cost
    replicas: int = 0  # Deployment replicas: serving + warm targets


def plan_roles(pods: list[PodInfo], serving_target: int, warm_target: int) -> RolePlan:
    """Plan one region's roles so `serving_target` pods serve and `warm_target` wait, ready, in the pool."""
    serving_target, warm_target = max(serving_target, 0), max(warm_target, 0)
    plan = RolePlan(replicas=serving_target + warm_target)

    ready = sorted((pod for pod in pods if pod.ready),
                   key=lambda pod: (not pod.current, pod.role != SERVING, pod.created_at, pod.name))
    chosen = ready[:serving_target]
    starting = sorted((pod for pod in pods if not pod.ready and pod.role == SERVING),
                      key=lambda pod: (not pod.current, pod.created_at, pod.name))
    chosen += starting[: serving_target - len(chosen)]
    chosen_names = {pod.name for pod in chosen}
    serving = [pod for pod in pods if pod.name in chosen_names]
    warm = [pod for pod in pods if pod.name not in chosen_names]
    plan.promote = [pod.name for pod in chosen if pod.role != SERVING]
    # Listed not-ready first, then the newest: the order the old rule demoted them in.
    plan.demote = [pod.name for pod in sorted(warm, key=lambda pod: (pod.ready, pod.current, -pod.created_at, pod.name))
                   if pod.role == SERVING]

    # Pool members to keep: ready ones first, current revision first, oldest first. The rest are the
    # ReplicaSet's victims.
    keep_order = sorted(warm, key=lambda pod: (not pod.ready, not pod.current, pod.created_at, pod.name))
    surplus = max(len(serving) + len(warm) - plan.replicas, 0)
    victims = set(pod.name for pod in keep_order[len(keep_order) - surplus:]) if surplus else set()
    for pod in serving:
        plan.deletion_cost[pod.name] = COST_SERVING
    for pod in warm:
        plan.deletion_cost[pod.name] = COST_VICTIM if pod.name in victims else COST_WARM
    return plan
