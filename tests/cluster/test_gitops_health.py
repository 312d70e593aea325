"""The ArgoCD health check (docs/argocd/modelservice-health.lua, run in Lua by lupa as ArgoCD runs it) on
statuses the real operator writes on the real API server: Progressing while the pods start, Healthy once
Ready at the observed generation, Progressing again right after a spec edit, Degraded for a spec the
operator cannot render."""

from __future__ import annotations

import pytest
from cluster_harness import ROOT_DIR, wait_for
from quickstart_spec import QUICKSTART_SPEC

lupa = pytest.importorskip("lupa")
pytestmark = pytest.mark.usefixtures("operator")

SCRIPT = (ROOT_DIR / "docs" / "argocd" / "modelservice-health.lua").read_text()


def argocd_health(obj: dict) -> str:
    lua = lupa.LuaRuntime()
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return lua.execute(SCRIPT)["status"]


def test_health_follows_the_operators_status(cluster, namespace, startup_seconds):
    startup_seconds(4.0)  # long enough to see the pods starting
    cluster.create_msvc("chat", namespace)
    wait_for(lambda: (cluster.msvc("chat", namespace).get("status") or {}).get("observedGeneration"), timeout=60,
             what="first status")
    seen = {argocd_health(cluster.msvc("chat", namespace))}
    wait_for(lambda: seen.add(argocd_health(cluster.msvc("chat", namespace))) or "Healthy" in seen, timeout=60,
             interval=0.2, what="Healthy", explain=lambda: cluster.describe(namespace))
    assert "Progressing" in seen and "Degraded" not in seen, seen

    edited = cluster.patch_msvc("chat", namespace, {"spec": {"slo": {"ttft": {"p95": "2s"}}}})
    assert argocd_health(edited) == "Progressing"  # generation moved, the operator has not seen it yet
    wait_for(lambda: argocd_health(cluster.msvc("chat", namespace)) == "Healthy", timeout=60,
             what="Healthy at the new generation", explain=lambda: cluster.describe(namespace))


def test_a_spec_the_operator_cannot_render_is_degraded(cluster, namespace):
    cluster.create_msvc("bad", namespace, {**QUICKSTART_SPEC, "model": {"name": "m", "uri": "s3://bucket/m"}})
    wait_for(lambda: argocd_health(cluster.msvc("bad", namespace)) == "Degraded", timeout=60, what="Degraded",
             explain=lambda: cluster.describe(namespace))
