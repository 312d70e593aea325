"""The quickstart ModelService sized for tests (CPU only, one serving and one warm replica), shared by the
kmock operator tests (tests/kube) and the real-control-plane tests (tests/cluster).

A uniquely named module at the top of tests/ (on sys.path through tests/conftest.py's folder)."""

from __future__ import annotations

import copy
from typing import Any

GROUP, VERSION = "sloserve.io", "v1alpha1"

QUICKSTART_SPEC: dict[str, Any] = {
    "model": {"name": "smollm2-135m-instruct"},
    "engine": "bundled",
    "runtime": {"maxBatchSize": 16, "maxBatchedTokens": 512, "maxModelLen": 2048, "threads": 1},
    "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
    "slo": {"ttft": {"p95": "1s"}, "itl": {"p95": "100ms"}},
    "scaling": {"mode": "slo", "minReplicas": 1, "maxReplicas": 3, "warmPool": {"size": 1}},
}


def model_service(name: str, spec: dict[str, Any] | None = None, namespace: str = "default") -> dict[str, Any]:
    """A ModelService manifest (a deep copy of `spec`, default the quickstart)."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": copy.deepcopy(spec if spec is not None else QUICKSTART_SPEC)}
