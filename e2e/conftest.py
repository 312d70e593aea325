"""Cluster for the e2e suite: an existing one (E2E_USE_EXISTING=1, KUBECONFIG) or a kind cluster made by
e2e/kind.sh. Without either, every test skips and says why (these machines have no Docker daemon)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as error:  # noqa: BLE001 - the API may be briefly unavailable; keep polling
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def _reachable() -> str | None:
    """None when the cluster in KUBECONFIG answers, else why not."""
    try:
        from kubernetes import client
        from sloserve_operator.kube.client import load_configuration

        configuration = load_configuration()
        api = client.ApiClient(configuration)
        client.VersionApi(api).get_code(_request_timeout=5)
        return None
    except Exception as error:  # noqa: BLE001 - any failure means "no cluster here"
        return f"{type(error).__name__}: {str(error)[:200]}"


def _kind_possible() -> str | None:
    for tool in ("docker", "kind", "kubectl"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return "no Docker daemon (`docker info` failed)"
    return None


@pytest.fixture(scope="session")
def cluster() -> str:
    """The kube context in use; skips the whole suite when no cluster can be had."""
    if os.environ.get("E2E_USE_EXISTING") == "1":
        problem = _reachable()
        if problem:
            pytest.skip(f"E2E_USE_EXISTING=1 but the cluster in KUBECONFIG is unreachable: {problem}")
        if os.environ.get("E2E_SKIP_INSTALL") != "1":
            subprocess.run([sys.executable, "-m", "e2e.install", "--apply"], cwd=ROOT, check=True, timeout=300)
        return "existing"
    problem = _kind_possible()
    if problem:
        pytest.skip(f"no Kubernetes cluster for e2e: {problem}. Run on a machine with Docker and kind, or set "
                    "E2E_USE_EXISTING=1 with KUBECONFIG pointing at a cluster")
    subprocess.run([str(ROOT / "e2e" / "kind.sh"), "up"], check=True, timeout=1800)
    os.environ["KUBECONFIG"] = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    subprocess.run(["kubectl", "config", "use-context", "kind-" + os.environ.get("E2E_CLUSTER", "sloserve-e2e")],
                   check=True, timeout=30)
    return "kind"


@pytest.fixture(scope="session")
def kube(cluster: str) -> Any:
    from sloserve_operator.kube.client import Kube

    return Kube()
