"""Replica processes: the real runtime (tiny random-weight model), readiness, crash -> restart and count,
direct-scrape metrics and discovery labels of a live replica, and stop by PID."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from sloserve_operator.api.labels import SERVING, WARM
from sloserve_operator.api.spec import validate_document
from sloserve_operator.local.prometheus import MetricsBackend
from sloserve_operator.local.replicas import ReplicaSet, process_alive
from sloserve_operator.local.rundir import RunDir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SPEC = """
apiVersion: sloserve.io/v1alpha1
kind: ModelService
metadata: {name: tiny}
spec:
  model: {name: tiny}
  runtime: {maxBatchSize: 4, maxBatchedTokens: 64, maxModelLen: 128, threads: 1}
  resources: {gpus: 0, cpu: "1", memory: 1Gi}
  slo: {ttft: {p95: 500ms}, itl: {p95: 100ms}}
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    testing = pytest.importorskip("sloserve_runtime.testing")
    try:
        return testing.make_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    except FileNotFoundError as error:
        pytest.skip(f"the bundled SmolLM2 GGUF (its tokenizer) is not installed: {error}")


async def wait_for(what: str, check, replicas: ReplicaSet, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await replicas.supervise_once()
        if check():
            return
        await asyncio.sleep(0.2)
    logs = "\n".join(r.log_path.read_text(errors="replace")[-2000:] for r in replicas.replicas.values())
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


async def test_crashed_replica_is_restarted_and_counted_then_everything_stops(tiny_model: Path,
                                                                              tmp_path: Path) -> None:
    service, problems = validate_document(yaml.safe_load(SPEC))
    assert service is not None, problems
    ready, crashed = [], []
    replicas = ReplicaSet(service, RunDir(tmp_path / "run"), threads=1, model=str(tiny_model),
                          on_ready=ready.append, on_crash=crashed.append)
    try:
        first = replicas.launch("default", WARM)
        assert first.name == "tiny-0" and first.command[:3] == replicas.runtime_command[:3]
        await wait_for("tiny-0 ready", lambda: first.ready, replicas)
        assert ready == [first]
        old_pid, old_port = first.pid, first.port
        os.kill(old_pid, signal.SIGKILL)
        await wait_for("the crash to be noticed", lambda: crashed, replicas, timeout=10)
        assert first.restarts == 1 and not first.ready
        await wait_for("tiny-0 ready again", lambda: first.ready, replicas)
        assert first.pid != old_pid and first.port == old_port and first.role == WARM
        assert first.all_pids == [old_pid, first.pid]
        assert first.to_dict()["restarts"] == 1

        # Without Prometheus, metrics come from the serving replicas' /metrics (ScrapeSource).
        run_dir = RunDir(tmp_path / "run")
        metrics = MetricsBackend(service, run_dir, mode="scrape", window_seconds=10, scrape_interval=1)
        await metrics.start()
        assert "direct scrape" in metrics.describe()
        first.role = SERVING
        metrics.update_targets(replicas.replicas.values())
        observation = await asyncio.to_thread(metrics.observe, time.time())
        assert observation.regions["default"].ready_replicas == 1
        labels = json.loads(run_dir.targets_file.read_text())[0]["labels"]
        assert labels == {"namespace": "local", "model_service": "tiny", "region": "default", "role": "serving",
                          "pod": "tiny-0"}
    finally:
        await replicas.stop_all(grace=15)
    assert replicas.replicas == {}
    assert not [pid for pid in replicas.started_pids if process_alive(pid)]
