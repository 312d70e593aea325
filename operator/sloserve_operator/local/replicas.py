"""Replicas as local processes: one `sloserve-runtime` per replica on 127.0.0.1, each with its own port.

A replica is the local stand-in for a pod: it has a region, a role (serving or warm, as the pod label in the
cluster) and a readiness (GET /ready, as the pod's readiness probe). The ReplicaSet starts processes with the
flags render.container_args gives the container, restarts crashed ones (and counts it, like a pod's
restartCount) and stops them with SIGTERM so the runtime drains in-flight requests first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sloserve_operator.api.engines import ModelPaths
from sloserve_operator.api.spec import ModelService
from sloserve_operator.autoscaler.decide.placement import DEFAULT_REGION
from sloserve_operator.kube.render import container_args
from sloserve_operator.local.rundir import RunDir

log = logging.getLogger("sloserve.local")

DEFAULT_RUNTIME_COMMAND: tuple[str, ...] = (sys.executable, "-m", "sloserve_runtime")
RESTART_BACKOFF_MAX = 30.0


class LocalModeError(Exception):
    """A spec or option that local mode cannot run; the message says what to change."""


def die_with_parent() -> None:
    """preexec_fn for children: SIGTERM them when `sloserve up` dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the normal shutdown path still stops every child


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def set_flag(args: list[str], flag: str, value: str | None) -> list[str]:
    """args with `flag` set to value (replacing `--flag v` or `--flag=v`), or removed when value is None."""
    result: list[str] = []
    skip_next = False
    for index, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        if arg == flag:
            has_value = index + 1 < len(args) and not args[index + 1].startswith("--")
            skip_next = has_value
            continue
        if arg.startswith(flag + "="):
            continue
        result.append(arg)
    if value is not None:
        result += [flag, value]
    return result


def local_path(uri: str | None, field: str, override: str | None = None) -> str | None:
    """A local path for a model URI: an explicit override, a file:// URI, or None (the bundled model)."""
    if override:
        return override
    if not uri:
        return None
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    raise LocalModeError(
        f"{field} {uri!r} cannot be served locally: use file:///PATH, leave it empty for the bundled "
        "SmolLM2-135M-Instruct, or pass --model PATH to `sloserve up`"
    )


def local_model_path(service: ModelService, model_override: str | None) -> str | None:
    return local_path(service.spec.model.uri, "spec.model.uri", model_override)


def runtime_args(service: ModelService, port: int, *, threads: int | None, model: str | None) -> list[str]:
    """Runtime flags for one local replica: render's container args (so it runs as its pod would), with
    local weights, bound to 127.0.0.1 on its own port."""
    if service.spec.engine.value != "bundled":
        raise LocalModeError(
            f"spec.engine {service.spec.engine.value} is not supported in local mode: it runs the bundled "
            "runtime only (set spec.engine: bundled)"
        )
    draft = service.spec.runtime.speculative.draft_model
    paths = ModelPaths(local_model_path(service, model),
                       local_path(draft, "spec.runtime.speculative.draftModel") if draft else None)
    args = list(container_args(service, port, paths=paths))
    args = set_flag(args, "--host", "127.0.0.1")
    args = set_flag(args, "--port", str(port))
    args = set_flag(args, "--grpc-port", "0")
    if threads is not None:
        args = set_flag(args, "--threads", str(threads))
    return args


@dataclass
class Replica:
    """One runtime process: the local stand-in for a pod."""

    name: str
    region: str
    port: int
    role: str
    created_at: float
    command: list[str]
    log_path: Path
    process: subprocess.Popen | None = None
    ready: bool = False
    ready_at: float | None = None
    started_at: float = 0.0
    restarts: int = 0
    stopping: bool = False
    next_restart_at: float = 0.0
    all_pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def to_dict(self) -> dict:
        return {
            "name": self.name, "region": self.region, "role": self.role, "ready": self.ready,
            "port": self.port, "url": self.url, "pid": self.pid, "restarts": self.restarts,
            "created_at": self.created_at, "ready_at": self.ready_at, "stopping": self.stopping,
        }


ReplicaCallback = Callable[[Replica], None]


class ReplicaSet:
    """Starts, watches, restarts and stops the replica processes of one local ModelService."""

    def __init__(
        self,
        service: ModelService,
        run_dir: RunDir,
        *,
        threads: int | None = 1,
        model: str | None = None,
        runtime_command: Sequence[str] = DEFAULT_RUNTIME_COMMAND,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        on_ready: ReplicaCallback | None = None,
        on_crash: ReplicaCallback | None = None,
    ) -> None:
        self.service = service
        self.run_dir = run_dir.ensure()
        self.threads = threads
        self.model = model
        self.runtime_command = list(runtime_command)
        self.extra_args = list(extra_args)
        self.env = env
        self.on_ready = on_ready
        self.on_crash = on_crash
        self.replicas: dict[str, Replica] = {}
        self.started_pids: list[int] = []
        self._next_index: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        local_model_path(service, model)  # fail early on a URI local mode cannot serve

    # ------------------------------------------------------------ naming and launching

    def _new_name(self, region: str) -> str:
        index = self._next_index.get(region, 0)
        self._next_index[region] = index + 1
        base = self.service.metadata.name if region == DEFAULT_REGION else f"{self.service.metadata.name}-{region}"
        return f"{base}-{index}"

    def command_for(self, port: int) -> list[str]:
        args = runtime_args(self.service, port, threads=self.threads, model=self.model)
        return [*self.runtime_command, *args, *self.extra_args]

    def launch(self, region: str, role: str) -> Replica:
        """Start a new replica process; it joins its role once /ready answers."""
        name = self._new_name(region)
        port = free_port()
        replica = Replica(name=name, region=region, port=port, role=role, created_at=time.time(),
                          command=self.command_for(port), log_path=self.run_dir.log_for(name))
        self.replicas[name] = replica
        self._spawn(replica)
        log.info("replica %s starting on port %d (pid %s, role %s)", name, port, replica.pid, role)
        return replica

    def _spawn(self, replica: Replica) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        if self.threads:
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
        with open(replica.log_path, "ab") as log_file:
            # Own session: a Ctrl-C in the terminal reaches `sloserve up` only, which then drains in order.
            replica.process = subprocess.Popen(replica.command, stdin=subprocess.DEVNULL, stdout=log_file,
                                               stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                               preexec_fn=die_with_parent)
        replica.started_at = time.time()
        replica.ready = False
        replica.ready_at = None
        replica.all_pids.append(replica.process.pid)
        self.started_pids.append(replica.process.pid)

    # ------------------------------------------------------------ supervision

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0))
        return self._session

    async def _probe_ready(self, replica: Replica) -> bool:
        session = await self._client()
        try:
            async with session.get(replica.url + "/ready") as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def supervise_once(self) -> None:
        """Restart crashed replicas (with backoff) and mark replicas ready when /ready answers 200."""
        now = time.time()
        for replica in list(self.replicas.values()):
            if replica.stopping:
                continue
            if replica.exited:
                if replica.ready or replica.next_restart_at == 0.0:
                    code = replica.process.returncode if replica.process else None
                    replica.restarts += 1
                    backoff = min(2.0 ** (replica.restarts - 1), RESTART_BACKOFF_MAX)
                    replica.next_restart_at = now + (0.0 if replica.restarts == 1 else backoff)
                    replica.ready = False
                    log.warning("replica %s exited with code %s: restart #%d (log: %s)", replica.name, code,
                                replica.restarts, replica.log_path)
                    if self.on_crash:
                        self.on_crash(replica)
                if now >= replica.next_restart_at:
                    replica.next_restart_at = 0.0
                    self._spawn(replica)
                continue
            if not replica.ready and await self._probe_ready(replica):
                replica.ready = True
                replica.ready_at = time.time()
                log.info("replica %s ready after %.1fs", replica.name, replica.ready_at - replica.started_at)
                if self.on_ready:
                    self.on_ready(replica)

    async def supervise(self, interval: float = 0.25) -> None:
        """Runs until cancelled."""
        while True:
            await self.supervise_once()
            await asyncio.sleep(interval)

    # ------------------------------------------------------------ stopping

    async def stop(self, name: str, *, grace: float = 30.0) -> None:
        """SIGTERM (the runtime drains in-flight requests), SIGKILL after `grace` seconds; forget the replica."""
        replica = self.replicas.get(name)
        if replica is None:
            return
        replica.stopping = True
        replica.ready = False
        await terminate_process(replica.process, grace=grace, name=name)
        self.replicas.pop(name, None)
        log.info("replica %s stopped", name)

    async def stop_all(self, *, grace: float = 30.0) -> None:
        await asyncio.gather(*(self.stop(name, grace=grace) for name in list(self.replicas)))
        if self._session is not None:
            await self._session.close()

    def live_pids(self) -> list[int]:
        return [pid for pid in self.started_pids if process_alive(pid)]


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a reaped or never-seen pid is not alive)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


async def terminate_process(process: subprocess.Popen | None, *, grace: float, name: str = "") -> None:
    """SIGTERM, wait up to `grace` seconds (polling, never blocking the loop), then SIGKILL and reap."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if process.poll() is None:
        log.warning("%s did not exit within %.0fs of SIGTERM: SIGKILL", name or process.pid, grace)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.to_thread(process.wait, 10)

