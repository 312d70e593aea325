"""The autoscale loop end to end: synthetic runtime metrics scraped by the real Prometheus, the real
operator querying it, and a TTFT breach turning into a larger Deployment on the real API server."""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx
import pytest
from cluster_harness import ROOT_DIR, wait_for
from kubernetes.client.rest import ApiException

# The shared Prometheus and exporter helpers (tests/autoscaler/observe since the layout change).
for folder in ("tests/autoscaler/observe", "tests/metrics"):
    if (ROOT_DIR / folder / "prometheus_server.py").exists():
        sys.path.insert(0, str(ROOT_DIR / folder))
        break
from prometheus_server import PROMETHEUS, PrometheusServer, Target  # noqa: E402
from synthetic_exporter import SyntheticRuntime  # noqa: E402

INTERVAL = 2.0  # --autoscale-interval


@pytest.fixture
def breaching_runtime():
    """One serving replica's /metrics, answering within budget until `breach` is set."""
    runtime = SyntheticRuntime(model_name="smollm2-135m-instruct")
    runtime.serve()
    breach = threading.Event()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            runtime.record(4, ttft=3.0 if breach.is_set() else 0.1, itl=0.02)
            runtime.set_load(running=8 if breach.is_set() else 1, waiting=12 if breach.is_set() else 0,
                             kv_usage=0.5)
            stop.wait(0.25)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    yield runtime, breach
    stop.set()
    thread.join(timeout=5)
    runtime.close()


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (make system-deps)")
def test_breach_scales_the_deployment_within_two_intervals(cluster, namespace, operator_factory, tmp_path,
                                                          breaching_runtime):
    runtime, breach = breaching_runtime
    labels = {"namespace": namespace, "model_service": "chat", "region": "default", "role": "serving",
              "pod": "chat-synthetic"}
    prometheus = PrometheusServer(tmp_path, [Target(runtime.url, labels)])
    prometheus.start()
    operator = None
    try:
        operator = operator_factory("--all-namespaces", "--drift-interval=5", f"--autoscale-interval={INTERVAL}",
                                    "--metrics-window=10", f"--prometheus-url={prometheus.url}")
        cluster.create_msvc("chat", namespace)  # quickstart sizing: min 1, max 3, warm pool 1
        wait_for(lambda: _replicas(cluster, namespace) == 2, timeout=60, what="1 serving + 1 warm", explain=lambda: cluster.describe(namespace))
        wait_for(lambda: _condition_true(cluster, namespace, "MetricsAvailable"), timeout=60,
                 what=f"MetricsAvailable (operator log: {operator.log_path})", explain=lambda: cluster.describe(namespace))

        breach.set()
        wait_for(lambda: _prometheus_ttft_p95(prometheus.url, namespace) > 1.0, timeout=30,
                 what="Prometheus sees p95 TTFT above the 1 s budget", explain=lambda: cluster.describe(namespace))
        seen = time.monotonic()
        wait_for(lambda: _replicas(cluster, namespace) > 2, timeout=2 * INTERVAL + 3, interval=0.1,
                 what="Deployment scaled up within two autoscale intervals", explain=lambda: cluster.describe(namespace))
        assert time.monotonic() - seen <= 2 * INTERVAL + 3
        # The same tick writes status right after the Deployment: poll for it rather than race it.
        status = wait_for(lambda: (cluster.msvc("chat", namespace).get("status") or {}).get("desiredReplicas", 0) >= 2
                          and cluster.msvc("chat", namespace)["status"], timeout=10, what="status desiredReplicas >= 2",
                          explain=lambda: cluster.describe(namespace))
        assert any(c["type"] == "SLOMet" and c["status"] == "False" for c in status["conditions"]), status
    finally:
        if operator is not None:
            operator.stop()  # the next test starts its own, pointed at its own Prometheus
        prometheus.stop()


def _replicas(cluster, namespace: str) -> int | None:
    deployments = {d.metadata.name: d for d in cluster.deployments(namespace)}
    return deployments["chat"].spec.replicas if "chat" in deployments else None


def _condition_true(cluster, namespace: str, kind: str) -> bool:
    found = cluster.condition("chat", namespace, kind)
    return bool(found and found["status"] == "True")


def _prometheus_ttft_p95(url: str, namespace: str) -> float:
    query = (f'histogram_quantile(0.95, sum by (le) (rate(sloserve:time_to_first_token_seconds_bucket'
             f'{{namespace="{namespace}"}}[10s])))')
    answer = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()
    result = answer.get("data", {}).get("result") or []
    return float(result[0]["value"][1]) if result else 0.0


def _memory(cluster, namespace: str) -> dict:
    """The autoscaler's ConfigMap memory of ModelService chat ({} before the first write)."""
    try:
        config_map = cluster.core.read_namespaced_config_map("chat-autoscaler", namespace)
    except ApiException as error:
        if error.status == 404:
            return {}
        raise
    return json.loads((config_map.data or {}).get("memory.json") or "{}")


def _rate_times(cluster, namespace: str) -> list[float]:
    return [sample[0] for sample in ((_memory(cluster, namespace).get("state") or {}).get("rates") or {}).get(
        "default", [])]


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (make system-deps)")
def test_autoscaler_memory_survives_an_operator_restart(cluster, namespace, operator_factory, tmp_path,
                                                        breaching_runtime):
    """An operator killed with SIGKILL and started again goes on from the ConfigMap memory: the rate history
    the first one recorded is still there after the second has written its own samples (a restart that
    started from an empty PolicyState would have replaced it, resetting stabilization windows)."""
    runtime, _breach = breaching_runtime
    labels = {"namespace": namespace, "model_service": "chat", "region": "default", "role": "serving",
              "pod": "chat-synthetic"}
    prometheus = PrometheusServer(tmp_path, [Target(runtime.url, labels)])
    prometheus.start()
    args = ("--all-namespaces", "--drift-interval=5", f"--autoscale-interval={INTERVAL}", "--metrics-window=10",
            "--peering-lifetime=5", f"--prometheus-url={prometheus.url}")
    try:
        first = operator_factory(*args)
        cluster.create_msvc("chat", namespace)
        before = wait_for(lambda: len(_rate_times(cluster, namespace)) >= 2 and _rate_times(cluster, namespace),
                          timeout=90, what="two rate samples in the autoscaler memory",
                          explain=lambda: cluster.describe(namespace))
        first.kill()
        killed_at = time.time()
        second = operator_factory(*args)
        try:
            after = wait_for(lambda: (times := _rate_times(cluster, namespace)) and times[-1] > killed_at and times,
                             timeout=90, what="a rate sample written by the restarted operator",
                             explain=lambda: cluster.describe(namespace))
            assert set(before) <= set(after), (before, after)
        finally:
            second.stop()
    finally:
        prometheus.stop()


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (make system-deps)")
def test_drift_check_does_not_revert_a_scale_up_whose_status_write_lost_a_race(cluster, namespace, operator_factory,
                                                                             tmp_path, breaching_runtime):
    """Another writer keeps moving the ModelService's resourceVersion, so status writes often answer 409.
    The autoscaler's decision is persisted first (its ConfigMap) and is what the drift check renders too,
    so once the Deployment has grown its replicas never go back down while the breach lasts (before, a lost
    status write left the drift check rendering the old target: the replicas flapped)."""
    runtime, breach = breaching_runtime
    labels = {"namespace": namespace, "model_service": "chat", "region": "default", "role": "serving",
              "pod": "chat-synthetic"}
    prometheus = PrometheusServer(tmp_path, [Target(runtime.url, labels)])
    prometheus.start()
    stop = threading.Event()
    samples: list[int] = []

    def bump() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            try:
                cluster.patch_msvc("chat", namespace, {"metadata": {"annotations": {"test.sloserve.io/bump": str(count)}}})
            except Exception:  # noqa: BLE001 - the object may not exist yet; keep bumping
                pass
            stop.wait(0.2)

    def sample() -> None:
        while not stop.is_set():
            replicas = _replicas(cluster, namespace)
            if replicas is not None and (not samples or samples[-1] != replicas):
                samples.append(replicas)
            stop.wait(0.1)

    threads = [threading.Thread(target=bump, daemon=True), threading.Thread(target=sample, daemon=True)]
    operator = None
    try:
        operator = operator_factory("--all-namespaces", "--drift-interval=2", f"--autoscale-interval={INTERVAL}",
                                    "--metrics-window=10", f"--prometheus-url={prometheus.url}")
        cluster.create_msvc("chat", namespace)  # quickstart sizing: min 1, max 3, warm pool 1
        wait_for(lambda: _replicas(cluster, namespace) == 2, timeout=60, what="1 serving + 1 warm",
                 explain=lambda: cluster.describe(namespace))
        wait_for(lambda: _condition_true(cluster, namespace, "MetricsAvailable"), timeout=60,
                 what=f"MetricsAvailable (operator log: {operator.log_path})", explain=lambda: cluster.describe(namespace))
        for thread in threads:
            thread.start()
        breach.set()
        wait_for(lambda: (_replicas(cluster, namespace) or 0) >= 4, timeout=60,
                 what="scaled to the maximum (3 serving + 1 warm)", explain=lambda: cluster.describe(namespace))
        # Several drift checks and ticks after the maximum was reached, each a chance to revert it.
        checks = _log_count(operator.log_path, "Timer 'drift-check' succeeded") + 4
        wait_for(lambda: _log_count(operator.log_path, "Timer 'drift-check' succeeded") >= checks, timeout=60,
                 what="four more drift checks", explain=lambda: cluster.describe(namespace))
        # The race this test is about must have happened while the maximum held: keep bumping until a status
        # write has lost one (it usually has by now; on a slow machine it can take a few more ticks).
        wait_for(lambda: _log_count(operator.log_path, "status changed while reconciling") > 0, timeout=60,
                 what="a status write that lost a race", explain=lambda: cluster.describe(namespace))
    finally:
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=5)
        if operator is not None:
            operator.stop()
        prometheus.stop()
    assert samples == sorted(samples), f"Deployment replicas went down during a breach: {samples}"
    assert _log_count(operator.log_path, "status changed while reconciling") > 0, "no status write lost a race"


def _log_count(path, text: str) -> int:
    try:
        return path.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0
