"""Drive `sloserve up` as a child process: start, wait on its state file, sample it, stop it by PID.

Used by bench/live.py (and usable by scripts) to replay load through a real local-mode fleet. Every wait
has a deadline; `stop` sends SIGTERM (local mode drains and stops its children) and, only if that fails,
SIGKILLs the processes the state file lists.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sloserve_operator.api.labels import SERVING, WARM
from sloserve_operator.local.replicas import free_port, process_alive


@dataclass
class UpProcess:
    spec_file: Path
    run_base: Path
    name: str
    extra_args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.run_base / self.name / "state.json"

    @property
    def log_path(self) -> Path:
        return self.run_base / f"{self.name}-up.log"

    def start(self) -> UpProcess:
        self.run_base.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "sloserve_operator.cli", "up", "-f", str(self.spec_file),
                   "--port", str(self.port), "--run-dir", str(self.run_base), *self.extra_args]
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    async def wait_for(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"sloserve up exited ({self.process.returncode}) while waiting for {what}; "
                                   f"see {self.log_path}")
            state = self.state()
            if state and check(state):
                return state
            await asyncio.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; see {self.log_path}")

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM and wait; SIGKILL whatever is left. Returns sloserve up's exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        state = self.state() or {"pids": {}}
        pids = set(state["pids"].get("started") or []) | {state["pids"].get("prometheus")} - {None}
        for pid in pids:
            if process_alive(pid) and _is_local_mode_child(pid):
                os.kill(pid, signal.SIGKILL)
        return self.process.returncode


def _is_local_mode_child(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"sloserve_runtime" in command or b"prometheus" in command


def ready_counts(state: dict[str, Any]) -> tuple[int, int]:
    """(ready serving, ready warm) replicas in a state file."""
    live = [r for r in state["replicas"] if r["ready"] and not r["stopping"]]
    return sum(r["role"] == SERVING for r in live), sum(r["role"] == WARM for r in live)
