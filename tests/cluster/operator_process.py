"""The real `sloserve operator` process against the control plane, as the chart's ServiceAccount.

Run as a subprocess (not kopf.testing.KopfRunner in the test's process) so that killing and restarting
it, and running two replicas side by side, are what they are in a cluster: separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from controlplane.processes import free_port

SLOSERVE = Path(sys.executable).parent / "sloserve"


class OperatorProcess:
    """One operator replica; start(), kill(), stop(); its log is kept in `log_path`."""

    def __init__(self, kubeconfig: Path, workdir: Path, name: str = "operator", *args: str,
                 env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = workdir / f"{name}.log"
        self.args = list(args)
        self.env = env or {}
        self.process: subprocess.Popen | None = None
        self.health_port = 0

    def start(self, timeout: float = 60) -> OperatorProcess:
        self.health_port = free_port()
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        command = [str(SLOSERVE), "operator", "--log-format=plain", "--bind-address=127.0.0.1",
                   f"--health-port={self.health_port}", "--metrics-port=0", *self.args]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"operator not healthy in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean-up, no peering goodbye, as a node failure or OOM kill would do."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
