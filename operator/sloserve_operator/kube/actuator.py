"""The Kubernetes actuator: turn serving/warm targets per region into pod roles.

warmpool.plan_roles decides (pure); this module only writes the plan: pod label `sloserve.io/role` patches
for promotion/demotion (seconds, no cold start) and the `controller.kubernetes.io/pod-deletion-cost`
annotation so the ReplicaSet removes the pods we demoted. Deployment replicas (serving + warm) are not
written here: reconcile renders them from the same stored targets, so they have one writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sloserve_operator.api.labels import (
    DELETION_COST_ANNOTATION,
    REGION_LABEL,
    ROLE_LABEL,
    SERVING,
    TEMPLATE_HASH_ANNOTATION,
    WARM,
)
from sloserve_operator.autoscaler.act.warmpool import PodInfo, plan_roles
from sloserve_operator.autoscaler.decide.placement import DEFAULT_REGION
from sloserve_operator.kube.client import Kube
from sloserve_operator.kube.reconcile import KubeEvent, pod_ready


@dataclass
class Actuation:
    """What one call changed, for Events, status and /metrics."""

    promoted: dict[str, str] = field(default_factory=dict)  # pod -> its region
    demoted: dict[str, str] = field(default_factory=dict)  # pod -> its region
    events: list[KubeEvent] = field(default_factory=list)


def deployment_name(service: str, region: str) -> str:
    """One Deployment per (ModelService, region); the default region keeps the bare name."""
    return service if region == DEFAULT_REGION else f"{service}-{region}"


def created_at(pod: dict[str, Any]) -> float:
    stamp = pod.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def pod_infos(pods: list[dict[str, Any]], region: str, template_hash: str | None = None) -> list[PodInfo]:
    """The region's live pods; `current` is False for pods of an older template than `template_hash`."""
    infos = []
    for pod in pods:
        meta = pod.get("metadata", {})
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp") or labels.get(REGION_LABEL, DEFAULT_REGION) != region:
            continue
        stamped = (meta.get("annotations") or {}).get(TEMPLATE_HASH_ANNOTATION)
        infos.append(PodInfo(name=meta["name"], region=region, role=labels.get(ROLE_LABEL, SERVING),
                             ready=pod_ready(pod), created_at=created_at(pod),
                             current=template_hash is None or stamped == template_hash))
    return infos


class KubernetesActuator:
    """Applies serving/warm targets to the pod roles of one ModelService (reconcile's `actuate`)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def apply(self, body: dict[str, Any], serving: dict[str, int], warm: dict[str, int],
              pods: list[dict[str, Any]], revisions: dict[str, str] | None = None) -> Actuation:
        """`pods`: the ModelService's pods as listed by the caller; `revisions`: region -> current template
        hash, so that during a rollout old-revision pods are demoted first."""
        namespace = body["metadata"].get("namespace", "default")
        by_name = {pod["metadata"]["name"]: pod for pod in pods}
        result = Actuation()
        for region in serving:
            infos = pod_infos(pods, region, (revisions or {}).get(region))
            plan = plan_roles(infos, serving[region], warm.get(region, 0))
            for pod_name in plan.promote:
                self._set_role(namespace, pod_name, SERVING)
                result.promoted[pod_name] = region
                result.events.append(KubeEvent("Normal", "Promoted", f"pod {pod_name} promoted from warm to serving"))
            for pod_name in plan.demote:
                self._set_role(namespace, pod_name, WARM)
                result.demoted[pod_name] = region
                result.events.append(KubeEvent("Normal", "Demoted", f"pod {pod_name} demoted from serving to warm"))
            for pod_name, cost in plan.deletion_cost.items():
                current = (by_name.get(pod_name, {}).get("metadata", {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
                if current != str(cost):
                    self.kube.patch("Pod", namespace, pod_name, {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(cost)}}})
        return result

    def _set_role(self, namespace: str, pod: str, role: str) -> None:
        self.kube.patch("Pod", namespace, pod, {"metadata": {"labels": {ROLE_LABEL: role}}})
