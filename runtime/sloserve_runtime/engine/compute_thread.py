"""One long-lived thread for all of a runtime's tensor work: loading the weights, warm-up and every step.

Why one thread and not asyncio.to_thread: on CPU, torch runs its kernels on an OpenMP team owned by the
calling thread, and a step is hundreds of small parallel regions, fast only while the team's workers spin
between them. libgomp counts every thread of every team; once there are more than CPUs (a second thread
that ever ran torch work, such as the one that loaded the weights, keeps its team), it cuts the spin to
about 100 iterations (libgomp manual, GOMP_SPINCOUNT), so workers sleep and are woken by futex for each
region. Measured on SmolLM2-135M bf16, 2 cores: a batch-1 decode step took 12.5 ms with one team and
24 ms with two, both cores half idle. Loading and stepping on one thread keeps a single team.

A daemon thread, so a SIGTERM that arrives during a slow load does not wait for the load to finish.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


class ComputeThread(threading.Thread):
    """A single-worker executor on a daemon thread; `await compute.call(fn)` runs fn there."""

    def __init__(self, name: str = "sloserve-compute") -> None:
        super().__init__(name=name, daemon=True)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self.start()

    @staticmethod
    def current() -> ComputeThread | None:
        """The compute thread we are running on, if any (an engine built there keeps stepping there)."""
        thread = threading.current_thread()
        return thread if isinstance(thread, ComputeThread) else None

    def submit(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((function, future))
        return future

    async def call(self, function: Callable[[], T]) -> T:
        if threading.current_thread() is self:  # already here: queueing behind ourselves would deadlock
            return function()
        return await asyncio.wrap_future(self.submit(function))

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Finish the queued jobs, then let the thread end (it does not block the caller)."""
        if not self._closed:
            self._closed = True
            self._jobs.put(_STOP)

    def run(self) -> None:  # the thread's body
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            function, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function()
            except BaseException as error:  # handed to whoever awaits the future
                future.set_exception(error)
            else:
                future.set_result(result)
