"""Issue 16 item 2 on the real control plane: a serving pod that stops being Ready (hung runtime, failing
probe; the fake kubelet holds it unready) is replaced from the warm pool by a label patch, without waiting
for the ReplicaSet, and the Service routes only to ready serving pods meanwhile."""

from __future__ import annotations

import pytest
from cluster_harness import wait_for
from fake_kubelet import HOLD_UNREADY

pytestmark = pytest.mark.usefixtures("operator")

SELECTOR = "sloserve.io/model-service=chat"


def _roles(cluster, namespace: str) -> dict[str, tuple[str, bool]]:
    """Pod name -> (role label, ready)."""
    ready = {p.metadata.name for p in cluster.ready_pods(namespace, SELECTOR)}
    return {p.metadata.name: (p.metadata.labels.get("sloserve.io/role"), p.metadata.name in ready)
            for p in cluster.live_pods(namespace, SELECTOR)}


def _one_serving_one_warm(cluster, namespace: str) -> dict[str, tuple[str, bool]] | None:
    roles = _roles(cluster, namespace)
    ready_roles = sorted(role for role, ready in roles.values() if ready)
    return roles if ready_roles == ["serving", "warm"] else None


def test_an_unready_serving_pod_is_replaced_from_the_warm_pool(cluster, namespace):
    cluster.create_msvc("chat", namespace)  # 1 serving + 1 warm
    before = wait_for(lambda: _one_serving_one_warm(cluster, namespace), timeout=60, what="1 serving + 1 warm",
                      explain=lambda: cluster.describe(namespace))
    hung = next(name for name, (role, _) in before.items() if role == "serving")
    warm = next(name for name, (role, _) in before.items() if role == "warm")
    warm_ip = cluster.core.read_namespaced_pod(warm, namespace).status.pod_ip

    cluster.core.patch_namespaced_pod(hung, namespace, {"metadata": {"annotations": {HOLD_UNREADY: "true"}}})
    wait_for(lambda: hung not in {p.metadata.name for p in cluster.ready_pods(namespace, SELECTOR)}, timeout=20,
             what="the held pod reported unready", explain=lambda: cluster.describe(namespace))

    # The warm pod serves (label patch, same pod) and the Service routes to it alone; the hung pod is
    # demoted, so it takes no traffic even if it turns ready again before the ReplicaSet replaces it.
    wait_for(lambda: _roles(cluster, namespace).get(warm) == ("serving", True)
             and cluster.endpoint_ips(namespace, "chat") == {warm_ip},
             timeout=30, what="the warm pod promoted and alone behind the Service",
             explain=lambda: cluster.describe(namespace))
    wait_for(lambda: _roles(cluster, namespace).get(hung, ("warm", False))[0] == "warm", timeout=30,
             what="the unready pod demoted", explain=lambda: cluster.describe(namespace))
    status = wait_for(lambda: (s := (cluster.msvc("chat", namespace) or {}).get("status") or {})
                      and s.get("serving") == 1 and s, timeout=30, what="status serving=1")
    assert status["serving"] == 1

    # Released (the runtime recovers): it is back as a ready pod, and one pod serves, not two.
    cluster.core.patch_namespaced_pod(hung, namespace, {"metadata": {"annotations": {HOLD_UNREADY: None}}})
    after = wait_for(lambda: _one_serving_one_warm(cluster, namespace), timeout=60,
                     what="1 serving + 1 warm again", explain=lambda: cluster.describe(namespace))
    assert after[warm] == ("serving", True)
