"""Issue 16 item 9 end to end: a real Prometheus scrapes one ModelService's (synthetic) runtime and not the
other's, as when no Prometheus selects a PodMonitor. The unscraped one says MetricsAvailable=False,
NoSamplesYet with no status.observed.lastSampleTime; the scraped one gets a lastSampleTime that the API
server keeps (the CRD's status schema has the field)."""

from __future__ import annotations

import sys
import threading

import pytest
from cluster_harness import ROOT_DIR, wait_for

sys.path.insert(0, str(ROOT_DIR / "tests" / "autoscaler" / "observe"))
from prometheus_server import PROMETHEUS, PrometheusServer, Target  # noqa: E402
from synthetic_exporter import SyntheticRuntime  # noqa: E402


@pytest.fixture
def runtime():
    exporter = SyntheticRuntime(model_name="smollm2-135m-instruct")
    exporter.serve()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            exporter.record(4, ttft=0.1, itl=0.02)
            exporter.set_load(running=1, waiting=0, kv_usage=0.3)
            stop.wait(0.25)

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    yield exporter
    stop.set()
    thread.join(timeout=5)
    exporter.close()


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not installed (make system-deps)")
def test_never_scraped_says_no_samples_yet_and_scraped_keeps_its_last_sample_time(cluster, namespace,
                                                                                  operator_factory, tmp_path,
                                                                                  runtime):
    labels = {"namespace": namespace, "model_service": "chat", "region": "default", "role": "serving",
              "pod": "chat-synthetic"}
    prometheus = PrometheusServer(tmp_path, [Target(runtime.url, labels)])
    prometheus.start()
    try:
        operator_factory("--all-namespaces", "--drift-interval=5", "--autoscale-interval=2", "--metrics-window=10",
                         f"--prometheus-url={prometheus.url}")
        cluster.create_msvc("chat", namespace)
        cluster.create_msvc("unseen", namespace)
        unseen = wait_for(lambda: _reason(cluster, namespace, "unseen") == "NoSamplesYet"
                          and cluster.msvc("unseen", namespace), timeout=60, what="unseen: NoSamplesYet",
                          explain=lambda: cluster.describe(namespace))
        assert "lastSampleTime" not in (unseen["status"].get("observed") or {})
        wait_for(lambda: ((cluster.msvc("chat", namespace)["status"].get("observed") or {}).get("lastSampleTime")),
                 timeout=60, what="chat: status.observed.lastSampleTime", explain=lambda: cluster.describe(namespace))
        assert _reason(cluster, namespace, "chat") != "NoSamplesYet"
    finally:
        prometheus.stop()


def _reason(cluster, namespace: str, name: str) -> str | None:
    return (cluster.condition(name, namespace, "MetricsAvailable") or {}).get("reason")
