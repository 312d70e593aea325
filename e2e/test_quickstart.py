"""End to end on a real cluster: the quickstart ModelService (SmolLM2 on CPU) from apply to scale-up.

What kmock cannot show is checked here: real Deployments roll out, the Service routes only to serving pods,
garbage collection through ownerReferences, the CRD's own validation, and the autoscaler acting on latency
measured by a real Prometheus under load.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from e2e.conftest import ROOT, wait_for

NAMESPACE = "default"
NAME = "quickstart"
READY_TIMEOUT = 900  # image pull + model load on a CPU node
LOAD_SECONDS = 240
CONCURRENCY = 24


def quickstart() -> dict:
    return yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())


def condition(kube, type_: str) -> dict:
    status = (kube.get("ModelService", NAMESPACE, NAME) or {}).get("status") or {}
    return next((item for item in status.get("conditions") or [] if item["type"] == type_), {})


def pods(kube, role: str | None = None) -> list[dict]:
    labels = {"sloserve.io/model-service": NAME}
    if role:
        labels["sloserve.io/role"] = role
    return [pod for pod in kube.list("Pod", NAMESPACE, labels) if not pod["metadata"].get("deletionTimestamp")]


def event_reasons(kube) -> set[str]:
    return {event.get("reason") for event in kube.list("Event", NAMESPACE)
            if (event.get("involvedObject") or {}).get("name") == NAME}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def service(kube):
    """The quickstart applied and Ready; deleted afterwards (and its children garbage-collected)."""
    path = Path(ROOT / "examples" / "quickstart.yaml")
    subprocess.run(["kubectl", "apply", "-f", str(path)], check=True, timeout=60)
    wait_for(lambda: condition(kube, "Ready").get("status") == "True", READY_TIMEOUT, "quickstart Ready")
    yield kube.get("ModelService", NAMESPACE, NAME)
    subprocess.run(["kubectl", "delete", "-f", str(path), "--wait=true", "--timeout=120s"], check=False, timeout=180)


@pytest.fixture(scope="module")
def endpoint(service):
    """http://127.0.0.1:PORT forwarded to Service quickstart (serving pods only); the kubectl process is
    stopped by its PID."""
    port = free_port()
    forward = subprocess.Popen(["kubectl", "-n", NAMESPACE, "port-forward", f"svc/{NAME}", f"{port}:8000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 60, "port-forward", 1)
        yield url
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_two_operator_replicas_elect_one_leader(kube, cluster):
    """kopf peering: of the two operator pods exactly one pauses in favour of the other."""
    operators = kube.list("Pod", "sloserve-system", {"app.kubernetes.io/name": "sloserve-operator"})
    assert len(operators) == 2

    def paused() -> list[str]:
        names = []
        for pod in operators:
            logs = subprocess.run(["kubectl", "-n", "sloserve-system", "logs", pod["metadata"]["name"]],
                                  capture_output=True, text=True, timeout=60).stdout
            if "Pausing operations in favour of" in logs:
                names.append(pod["metadata"]["name"])
        return names

    assert len(wait_for(paused, 120, "one paused operator replica")) == 1


def test_children_status_and_events(kube, service):
    uid = service["metadata"]["uid"]
    deployment = kube.get("Deployment", NAMESPACE, NAME)
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid
    status = service["status"]
    assert status["observedGeneration"] == service["metadata"]["generation"]
    assert status["selector"] == f"sloserve.io/model-service={NAME},sloserve.io/role=serving"
    wait_for(lambda: len(pods(kube, "warm")) == 1 and len(pods(kube, "serving")) >= 1, 600,
             "one serving pod and one warm pod")
    assert {"Created"} <= event_reasons(kube)
    # No Prometheus operator in kind: the fallback is reported.
    assert condition(kube, "Degraded").get("reason") in ("PrometheusOperatorMissing", "AsExpected")


def test_completion_through_the_service(endpoint):
    response = httpx.post(f"{endpoint}/v1/completions", timeout=120, json={
        "model": "smollm2-135m-instruct", "prompt": "The capital of France is", "max_tokens": 8})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"]


def test_crd_rejects_an_invalid_spec_and_nothing_changes(kube, service):
    before = kube.get("Deployment", NAMESPACE, NAME)["metadata"]["resourceVersion"]
    patch = json.dumps({"spec": {"scaling": {"minReplicas": 5, "maxReplicas": 2}}})
    result = subprocess.run(["kubectl", "-n", NAMESPACE, "patch", "modelservice", NAME, "--type=merge", "-p", patch],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "minReplicas" in result.stderr
    time.sleep(5)
    assert kube.get("Deployment", NAMESPACE, NAME)["metadata"]["resourceVersion"] == before


def test_load_scales_up_and_promotes_the_warm_pod(kube, endpoint):
    warm_before = {pod["metadata"]["name"] for pod in pods(kube, "warm")}
    assert warm_before, "the warm pool should hold a ready pod before the load"
    stop = threading.Event()
    errors: list[str] = []

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while not stop.is_set():
                try:
                    http.post(f"{endpoint}/v1/completions", json={
                        "model": "smollm2-135m-instruct", "prompt": "Write a long story about a lighthouse.",
                        "max_tokens": 128, "ignore_eos": True})
                except httpx.HTTPError as error:
                    errors.append(str(error))

    workers = [threading.Thread(target=client, daemon=True) for _ in range(CONCURRENCY)]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: (kube.get("ModelService", NAMESPACE, NAME)["status"].get("desiredReplicas") or 0) > 1,
                 LOAD_SECONDS, "a scale-up decision under load", interval=5)
        promoted = wait_for(lambda: {pod["metadata"]["name"] for pod in pods(kube, "serving")} & warm_before,
                            120, "the warm pod promoted to serving", interval=2)
        assert promoted
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=150)
    status = kube.get("ModelService", NAMESPACE, NAME)["status"]
    assert status["lastDecision"]["to"] > status["lastDecision"]["from"] or status["desiredReplicas"] > 1
    assert status["observed"]["ttftP95"] is not None
    assert {"ScaledUp"} <= event_reasons(kube)
    # The pool is refilled: a new warm pod is created (Deployment replicas = serving + warm).
    deployment = kube.get("Deployment", NAMESPACE, NAME)
    assert deployment["spec"]["replicas"] == status["desiredReplicas"] + 1
    assert len(errors) < CONCURRENCY, errors[:3]


def test_deleting_the_model_service_collects_its_children(kube, service):
    subprocess.run(["kubectl", "-n", NAMESPACE, "delete", "modelservice", NAME, "--wait=true", "--timeout=120s"],
                   check=True, timeout=180)
    wait_for(lambda: kube.get("Deployment", NAMESPACE, NAME) is None, 180, "Deployment garbage-collected")
    wait_for(lambda: kube.get("Service", NAMESPACE, NAME) is None, 180, "Service garbage-collected")
