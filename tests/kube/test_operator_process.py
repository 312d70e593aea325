"""`sloserve operator` as a real process against kmock: health endpoint, its own /metrics, JSON logs,
namespace scoping, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from kmock_cluster import KmockCluster
from operator_harness import wait_for
from quickstart_spec import model_service


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def cluster(tmp_path: Path):
    with KmockCluster(tmp_path) as running:
        yield running


def test_operator_process_serves_health_metrics_and_reconciles(cluster, tmp_path, monkeypatch):
    health, metrics = free_port(), free_port()
    log = (tmp_path / "operator.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "sloserve_operator.cli", "operator", "--namespace", "team-a", "--standalone",
         "--health-port", str(health), "--metrics-port", str(metrics), "--autoscale-interval", "1",
         "--drift-interval", "5"],
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _status(f"http://127.0.0.1:{health}/healthz") == 200, timeout=30, what="/healthz 200")
        from sloserve_operator.kube.client import Kube

        monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
        kube = Kube()
        for namespace in ("team-a", "team-b"):
            kube.request("POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                              "metadata": {"name": namespace}})
        kube.create(model_service("scoped", namespace="team-a"))
        kube.create(model_service("ignored", namespace="team-b"))
        wait_for(lambda: cluster.objects("apps/v1/deployments", "team-a").get("scoped"), timeout=30,
                 what="Deployment in the watched namespace")
        exposition = wait_for(lambda: _metrics(f"http://127.0.0.1:{metrics}/metrics"), timeout=30,
                              what="reconcile counted on /metrics")
        assert 'sloserve_operator_reconciles_total{model_service="scoped",namespace="team-a",result="ok"}' in exposition
        assert cluster.objects("apps/v1/deployments", "team-b") == {}  # not watched: untouched
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            log.close()
    lines = [line for line in (tmp_path / "operator.log").read_text().splitlines() if line.startswith("{")]
    assert lines, "expected JSON log lines"
    assert all("message" in json.loads(line) for line in lines)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _metrics(url: str) -> str | None:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None
    return text if 'model_service="scoped"' in text else None


