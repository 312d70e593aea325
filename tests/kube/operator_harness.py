"""Helpers for the operator tests: the quickstart spec, polling, fake pods, and OperatorUnderTest.

A uniquely named module (not conftest) so `from operator_harness import ...` can never pick up another
directory's conftest."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT_DIR = Path(__file__).resolve().parents[2]

from kmock_cluster import KmockCluster  # noqa: E402
from quickstart_spec import model_service  # noqa: E402
from sloserve_operator.autoscaler.observe.observation import Observation, RegionObservation  # noqa: E402


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll until predicate() is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}")


def fake_pod(deployment: dict[str, Any], index: int, *, ready: bool = True) -> dict[str, Any]:
    """What a ReplicaSet and kubelet would produce from a Deployment's template (kmock runs no controllers)."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{deployment['metadata']['name']}-pod-{index}",
                     "namespace": deployment["metadata"]["namespace"],
                     "labels": dict(template["metadata"]["labels"])},
        "spec": {"containers": [{"name": "runtime", "image": "x"}]},
        "status": {"phase": "Running" if ready else "Pending",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


class BreachingSource:
    """Every region of every ModelService reports p95 TTFT at 3x its 1 s budget under steady load."""

    def observe(self, service, now: float) -> Observation:
        region = RegionObservation(
            region="default", window_seconds=60.0, ready_replicas=1, request_rate=4.0, ttft_p95=3.0,
            itl_p95=0.05, ttft_within_budget=0.5, itl_within_budget=0.99, mean_prompt_tokens=200.0,
            mean_output_tokens=100.0, running=8.0, waiting=12.0, kv_usage=0.5, requests_observed=240.0,
        )
        return Observation(time=now, regions={"default": region})


class OperatorUnderTest:
    """The kmock cluster plus an API client (kube.Kube) for the test's own reads and writes."""

    def __init__(self, cluster: KmockCluster, kube: Any) -> None:
        self.cluster = cluster
        self.kube = kube
        self.created = []

    created: list[tuple[str, str]]

    def create(self, name: str, spec: dict[str, Any] | None = None, namespace: str = "default") -> dict[str, Any]:
        """Create a ModelService; cleanup() deletes it (fewer live objects keep the shared mock fast)."""
        self.created.append((namespace, name))
        return self.kube.create(model_service(name, spec, namespace))

    def cleanup(self) -> None:
        for namespace, name in self.created:
            self.kube.delete("ModelService", namespace, name)
        for namespace, name in self.created:
            wait_for(lambda n=name, ns=namespace: self.msvc(n, ns) is None, timeout=30, what=f"{name} deleted")
        self.created.clear()

    def msvc(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.kube.get("ModelService", namespace, name)

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        status = (self.msvc(name) or {}).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)

    def condition_in(self, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
        status = (self.msvc(name, namespace) or {}).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)

    def events(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        found = list(self.cluster.objects("v1/events", namespace).values())
        return [event for event in found if (event.get("involvedObject") or {}).get("name") == name]

    def reasons(self, name: str) -> set[str]:
        return {event.get("reason") for event in self.events(name)}


