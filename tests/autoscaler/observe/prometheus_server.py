"""The real Prometheus server (Debian package) on 127.0.0.1 with a temporary config and data directory.

Started and stopped by PID; scrape interval 1 s so tests see data within seconds. Each scrape target
carries the conventional target labels (namespace, model_service, region, role, pod) as static labels,
the way local mode's file_sd and the in-cluster PodMonitor attach them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

PROMETHEUS = shutil.which("prometheus")


@dataclass(frozen=True)
class Target:
    url: str  # http://127.0.0.1:PORT
    labels: dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusServer:
    def __init__(self, directory: Path, targets: list[Target], scrape_interval: str = "1s") -> None:
        self.directory = directory
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def _write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": self.scrape_interval, "scrape_timeout": "900ms",
                       "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": "sloserve",
                "static_configs": [
                    {"targets": [target.url.removeprefix("http://")], "labels": target.labels}
                    for target in self.targets
                ],
            }],
        }
        path = self.directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, deadline_seconds: float = 30.0) -> str:
        if PROMETHEUS is None:
            raise RuntimeError("prometheus binary not found on PATH")
        config = self._write_config()
        for _attempt in range(3):  # the free port can be taken between probing and binding
            port = free_port()
            log = (self.directory / "prometheus.log").open("wb")
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT,
            )
            log.close()
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_ready(deadline_seconds):
                return self.url
            self.stop()
        raise RuntimeError(f"prometheus did not become ready; log:\n{(self.directory / 'prometheus.log').read_text()}")

    def _wait_ready(self, deadline_seconds: float) -> bool:
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/-/ready", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
