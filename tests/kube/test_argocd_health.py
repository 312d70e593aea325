"""The ArgoCD health check shipped in docs/argocd/ runs (in Lua, as ArgoCD runs it) against statuses the
operator's own status functions produce: Healthy only when Ready at the observed generation, Degraded when
Stalled, Progressing otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sloserve_operator.kube.reconcile import invalid_spec_status, reconcile_status

lupa = pytest.importorskip("lupa")

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "argocd" / "modelservice-health.lua"


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script with `obj` as ArgoCD's global, return {status, message}."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT.read_text())
    return {"status": result["status"], "message": result["message"]}


def pod(role: str, ready: bool) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{role}-{ready}", "labels": {"sloserve.io/role": role}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def msvc(generation: int = 2, status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "chat", "namespace": "ns", "generation": generation}}
    if status is not None:
        body["status"] = status
    return body


def reconciled(pods: list[dict[str, Any]], *, problems: list[str] | None = None,
               generation: int = 2) -> dict[str, Any]:
    body = msvc(generation)
    body["status"] = reconcile_status(body, serving={"default": 1}, pods=pods, deployments=[],
                                      apply_problems=problems or [], monitoring=True, now=1000.0)
    return body


def test_no_status_yet_is_progressing():
    assert health(msvc())["status"] == "Progressing"


def test_ready_at_the_observed_generation_is_healthy():
    result = health(reconciled([pod("serving", True), pod("warm", True)]))
    assert result["status"] == "Healthy", result
    assert "1/1" in result["message"]


def test_an_older_observed_generation_is_progressing_even_when_ready():
    body = reconciled([pod("serving", True)], generation=2)
    body["metadata"]["generation"] = 3  # spec edited; the operator has not seen it yet
    result = health(body)
    assert result["status"] == "Progressing" and "generation 3" in result["message"]


def test_pods_starting_is_progressing():
    result = health(reconciled([pod("serving", False)]))
    assert result["status"] == "Progressing", result


def test_apply_failure_is_degraded():
    result = health(reconciled([], problems=["created Deployment chat: 403 forbidden"]))
    assert result["status"] == "Degraded" and "403" in result["message"]


def test_invalid_spec_is_degraded():
    body = msvc(4, {"observedGeneration": 3})
    body["status"] = invalid_spec_status(body, ["spec.slo.ttft.p95: must be a duration"], now=1000.0)
    result = health(body)
    assert result["status"] == "Degraded" and "spec.slo.ttft" in result["message"]
