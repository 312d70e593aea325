"""Metrics for local mode: an embedded Prometheus server when the binary is installed, else direct scrapes.

With Prometheus, replicas are discovered through a file_sd targets file that the controller rewrites on
every role change, carrying the labels the PodMonitor's relabelling gives in a cluster (namespace=local,
model_service, region, role, pod), so the operator's PrometheusSource and PromQL run unchanged. Config and
TSDB live in the run directory. Without the binary, ScrapeSource reads the serving replicas' /metrics.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import yaml

from sloserve_operator.api.labels import SERVING
from sloserve_operator.api.spec import ModelService
from sloserve_operator.autoscaler.observe.sources import PrometheusSource, ScrapeSource
from sloserve_operator.kube.slo_rules import rule_groups
from sloserve_operator.local.replicas import Replica, die_with_parent, free_port, terminate_process
from sloserve_operator.local.rundir import RunDir, write_json_atomic

log = logging.getLogger("sloserve.local")

LOCAL_NAMESPACE = "local"


def file_sd_entries(service: ModelService, replicas: Iterable[Replica]) -> list[dict[str, Any]]:
    """One file_sd entry per replica process, labelled as the PodMonitor labels pods in a cluster."""
    return [
        {
            "targets": [f"127.0.0.1:{replica.port}"],
            "labels": {
                "namespace": LOCAL_NAMESPACE,
                "model_service": service.metadata.name,
                "region": replica.region,
                "role": replica.role,
                "pod": replica.name,
            },
        }
        for replica in sorted(replicas, key=lambda r: r.name)
        if not replica.stopping
    ]


def prometheus_config(run_dir: RunDir, scrape_interval: float, rule_files: list[str]) -> dict[str, Any]:
    interval = f"{max(int(scrape_interval * 1000), 100)}ms"
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [{
            "job_name": "sloserve-local",
            "metrics_path": "/metrics",
            "scrape_timeout": interval,
            "file_sd_configs": [{"files": [str(run_dir.targets_file.resolve())], "refresh_interval": "1s"}],
        }],
    }
    if rule_files:
        config["rule_files"] = rule_files
    return config


def write_rule_file(service: ModelService, run_dir: RunDir) -> list[str]:
    """The SLO recording rules and alerts render gives a cluster's PrometheusRule, when render provides them."""
    try:
        groups = rule_groups(service)
    except Exception as error:  # a rule problem must not stop local serving; say so
        log.warning("SLO rules not loaded into the local Prometheus: %s", error)
        return []
    path = run_dir.root / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    promtool = shutil.which("promtool")
    if promtool:  # Prometheus refuses to start on a bad rule file: check it first, serve without it if bad
        check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        if check.returncode != 0:
            log.warning("SLO rules not loaded into the local Prometheus: %s", check.stdout + check.stderr)
            return []
    return [str(path.resolve())]


@dataclass
class EmbeddedPrometheus:
    """A `prometheus` process scraping the local replicas; stopped by PID."""

    binary: str
    run_dir: RunDir
    port: int
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def find_binary(cls) -> str | None:
        return shutil.which("prometheus")

    def start(self, service: ModelService, scrape_interval: float) -> None:
        self.run_dir.ensure()
        if not self.run_dir.targets_file.exists():
            write_json_atomic(self.run_dir.targets_file, [])
        config = prometheus_config(self.run_dir, scrape_interval, write_rule_file(service, self.run_dir))
        self.run_dir.prometheus_config.write_text(yaml.safe_dump(config, sort_keys=False))
        self.run_dir.prometheus_data.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            f"--config.file={self.run_dir.prometheus_config.resolve()}",
            f"--storage.tsdb.path={self.run_dir.prometheus_data.resolve()}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
        ]
        with open(self.run_dir.log_for("prometheus"), "ab") as log_file:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            preexec_fn=die_with_parent)
        log.info("prometheus starting on %s (pid %d)", self.url, self.process.pid)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    break
                try:
                    async with session.get(self.url + "/-/ready") as response:
                        if response.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"prometheus did not become ready; see {self.run_dir.log_for('prometheus')}")

    async def stop(self) -> None:
        await terminate_process(self.process, grace=10.0, name="prometheus")


class MetricsBackend:
    """The metrics source the controller observes through, and what it needs told about replicas."""

    def __init__(self, service: ModelService, run_dir: RunDir, *, mode: str, window_seconds: float,
                 scrape_interval: float) -> None:
        self.service = service
        self.run_dir = run_dir
        self.window_seconds = window_seconds
        self.scrape_interval = scrape_interval
        self.prometheus: EmbeddedPrometheus | None = None
        self.scrape_targets: dict[str, list[str]] = {}
        binary = EmbeddedPrometheus.find_binary()
        if mode == "prometheus" and binary is None:
            raise RuntimeError("--metrics prometheus: no `prometheus` binary on PATH (apt-get install prometheus)")
        self.kind = "prometheus" if mode in ("auto", "prometheus") and binary else "scrape"
        if self.kind == "prometheus":
            self.prometheus = EmbeddedPrometheus(binary, run_dir, free_port())
        self.source: Any = None

    def describe(self) -> str:
        if self.prometheus is not None:
            return (f"metrics: embedded Prometheus at {self.prometheus.url} (file_sd targets in "
                    f"{self.run_dir.targets_file}, {self.window_seconds:.0f}s window)")
        return (f"metrics: direct scrape of the replicas' /metrics (no prometheus binary found; "
                f"{self.window_seconds:.0f}s window)")

    async def start(self) -> None:
        if self.prometheus is not None:
            self.prometheus.start(self.service, self.scrape_interval)
            await self.prometheus.wait_ready()
            # An integral timeout: Prometheus 2.42 (Debian) refuses "5.0s" as a duration.
            self.source = PrometheusSource(self.prometheus.url, window_seconds=self.window_seconds, timeout_seconds=5)
        else:
            self.source = ScrapeSource(lambda: self.scrape_targets, window_seconds=self.window_seconds)

    def update_targets(self, replicas: Iterable[Replica]) -> None:
        """Tell the source which replicas exist and which serve (called on every role change)."""
        replicas = list(replicas)
        write_json_atomic(self.run_dir.targets_file, file_sd_entries(self.service, replicas))
        serving: dict[str, list[str]] = {}
        for replica in replicas:
            if replica.role == SERVING and replica.ready and not replica.stopping:
                serving.setdefault(replica.region, []).append(replica.url)
        self.scrape_targets = serving  # ScrapeSource reads it through a callable at every observe()

    def observe(self, now: float):
        # Local targets carry namespace=local whatever metadata.namespace says: ask for that namespace.
        local = self.service.model_copy(update={
            "metadata": self.service.metadata.model_copy(update={"namespace": LOCAL_NAMESPACE})})
        return self.source.observe(local, now)

    @property
    def pid(self) -> int | None:
        return self.prometheus.process.pid if self.prometheus and self.prometheus.process else None

    async def stop(self) -> None:
        if self.prometheus is not None:
            await self.prometheus.stop()
