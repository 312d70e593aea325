"""Shared runtime fixtures: a real `python -m sloserve_runtime` process on free ports, stopped by its PID.

- `tiny_model_dir` (session): the random-weight tiny Llama from sloserve_runtime.testing.make_tiny_model.
- `tiny_runtime` (session): one runtime serving it as model "tiny", with gRPC on, SLO buckets 250 ms / 45 ms.
- `runtime_factory` (module): `runtime_factory(model, *flags, grpc=False, wait=True)` starts your own runtime
  (different flags); every one it started is stopped at the end of the module (by PID).
Fixtures, not imports: test modules here are not a package, so they take what they need as fixtures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TINY_NAME = "tiny"
SLO_TTFT_MS = 250
SLO_ITL_MS = 45


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RuntimeProcess:
    process: subprocess.Popen
    port: int
    grpc_port: int
    log_path: Path
    model_name: str
    _log_file: object = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"runtime exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/ready", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"runtime not ready after {timeout}s:\n{self.log()[-3000:]}")

    def engine_state(self) -> dict:
        return httpx.get(self.url + "/debug/engine", timeout=5.0).json()

    def wait_engine(self, predicate, timeout: float = 10.0) -> dict:
        """Poll /debug/engine until predicate(state) holds; returns that state."""
        deadline = time.monotonic() + timeout
        state = self.engine_state()
        while not predicate(state):
            if time.monotonic() > deadline:
                raise AssertionError(f"engine state never matched within {timeout}s: {state}")
            time.sleep(0.02)
            state = self.engine_state()
        return state

    def terminate(self) -> None:
        """SIGTERM (the drain signal), by PID."""
        os.kill(self.pid, signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self._log_file is not None:
            self._log_file.close()
        return self.process.returncode


def start_runtime(log_dir: Path, model: Path | None, *extra: str, name: str = TINY_NAME, grpc: bool = False,
                  ready_timeout: float = 90.0, wait: bool = True) -> RuntimeProcess:
    port = free_port()
    grpc_port = free_port() if grpc else 0
    command = [sys.executable, "-m", "sloserve_runtime", "--host", "127.0.0.1", "--port", str(port),
               "--grpc-port", str(grpc_port), "--served-model-name", name, "--threads", "1", *extra]
    if model is not None:
        command += ["--model", str(model)]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"runtime-{port}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    runtime = RuntimeProcess(process, port, grpc_port, log_path, name, log_file)
    if wait:
        try:
            runtime.wait_ready(ready_timeout)
        except BaseException:
            runtime.stop()
            raise
    return runtime


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sloserve_runtime.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_runtime(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    runtime = start_runtime(tmp_path_factory.mktemp("tiny-runtime"), tiny_model_dir, "--max-model-len", "512",
                            "--slo-ttft-ms", str(SLO_TTFT_MS), "--slo-itl-ms", str(SLO_ITL_MS), grpc=True)
    yield runtime
    runtime.stop()


@pytest.fixture(scope="module")
def runtime_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    started: list[RuntimeProcess] = []
    log_dir = tmp_path_factory.mktemp("runtimes")

    def start(model: Path | None, *flags: str, **options) -> RuntimeProcess:
        runtime = start_runtime(log_dir, model, *flags, **options)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        runtime.stop()
