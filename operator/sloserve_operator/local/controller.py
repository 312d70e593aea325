"""The local control loop: observe -> policy.decide -> act, every interval.

The decision is the operator's (policy.decide, pure); the acting is local: warmpool.plan_roles says which
replicas to promote or demote and how many processes each region needs; promotion adds a warm replica to
the router's serving set at once (the local label patch), new processes start warm and join where the plan
puts them when /ready answers, and victims leave the router, finish their in-flight requests and get
SIGTERM. Every tick writes the state file that `sloserve status` prints.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from sloserve_operator.api.labels import SERVING, WARM
from sloserve_operator.api.spec import ModelService
from sloserve_operator.autoscaler.act.warmpool import PodInfo, plan_roles
from sloserve_operator.autoscaler.decide.placement import (
    region_names,
    region_weights,
    split_by_weight,
    split_plain,
)
from sloserve_operator.autoscaler.decide.policy import PolicyState, decide
from sloserve_operator.autoscaler.observe.observation import Observation
from sloserve_operator.local.prometheus import MetricsBackend
from sloserve_operator.local.replicas import Replica, ReplicaSet
from sloserve_operator.local.router import Router
from sloserve_operator.local.rundir import RunDir, write_json_atomic

log = logging.getLogger("sloserve.local")


@dataclass
class DecisionRecord:
    time: float
    reason: str
    serving_from: int
    serving_to: int
    warm_to: int
    metrics_available: bool
    degraded: str | None
    observed_at: float = 0.0  # when the observation it was based on was taken


@dataclass
class ReplicaEvent:
    time: float
    kind: str  # start | ready | promote | demote | stop | crash
    replica: str
    detail: str = ""


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())


class Controller:
    """Owns the policy state and the desired counts; turns decisions into process and router changes."""

    def __init__(self, service: ModelService, replicas: ReplicaSet, router: Router, metrics: MetricsBackend,
                 run_dir: RunDir, *, interval: float, endpoint: str, profile: Any = None) -> None:
        self.service = service
        self.spec = service.spec
        self.replicas = replicas
        self.router = router
        self.metrics = metrics
        self.run_dir = run_dir
        self.interval = interval
        self.endpoint = endpoint
        self.profile = profile
        self.state = PolicyState()
        self.started_at = time.time()
        self.desired_serving = split_by_weight(self.spec, self.spec.scaling.min_replicas)
        warm = split_plain(self.spec.scaling.warm_pool.size, region_weights(self.spec))  # as policy.decide does
        self.desired_warm = {region: warm.get(region, 0) for region in region_names(self.spec)}
        self.decisions: deque[DecisionRecord] = deque(maxlen=20)  # every decision whose reason changed
        self.changes: deque[DecisionRecord] = deque(maxlen=100)  # decisions that changed the desired counts
        self.scale_events = 0
        self.events: deque[ReplicaEvent] = deque(maxlen=100)
        self.last_observation: Any = None
        self.last_reason = ""
        self.ticks = 0
        self.stopped = False
        self._stopping_tasks: set[asyncio.Task] = set()
        replicas.on_ready = self._on_ready
        replicas.on_crash = self._on_crash
        router.on_first_request = self._on_first_request

    # ------------------------------------------------------------ views of the fleet

    def _region_replicas(self, region: str) -> list[Replica]:
        return [r for r in self.replicas.replicas.values() if r.region == region and not r.stopping]

    def serving_counts(self) -> dict[str, int]:
        return {region: sum(1 for r in self._region_replicas(region) if r.role == SERVING and r.ready)
                for region in region_names(self.spec)}

    def warm_counts(self) -> dict[str, int]:
        return {region: sum(1 for r in self._region_replicas(region) if r.role == WARM and r.ready)
                for region in region_names(self.spec)}

    def _event(self, kind: str, replica: Replica, detail: str = "") -> None:
        self.events.append(ReplicaEvent(time.time(), kind, replica.name, detail))

    # ------------------------------------------------------------ act

    def start(self) -> None:
        """Launch the initial fleet: min serving + the warm pool; roles are settled as replicas get ready."""
        self.reconcile()

    def reconcile(self) -> None:
        """Make processes and roles match desired_serving / desired_warm (idempotent, no waiting)."""
        changed = False
        for region in region_names(self.spec):
            members = self._region_replicas(region)
            pods = [PodInfo(name=r.name, region=r.region, role=r.role, ready=r.ready, created_at=r.created_at)
                    for r in members]
            plan = plan_roles(pods, self.desired_serving.get(region, 0), self.desired_warm.get(region, 0))
            by_name = {r.name: r for r in members}
            for name in plan.promote:
                replica = by_name[name]
                replica.role = SERVING
                self.router.add(replica.name, replica.url)
                self._event("promote", replica)
                log.info("promoted %s to serving", name)
                changed = True
            for name in plan.demote:
                replica = by_name[name]
                replica.role = WARM
                self.router.remove(replica.name)
                self._event("demote", replica)
                log.info("demoted %s to warm", name)
                changed = True
            surplus = len(members) - plan.replicas
            if surplus > 0:
                victims = sorted((r for r in members if r.role != SERVING),
                                 key=lambda r: (plan.deletion_cost.get(r.name, 0), r.ready, r.created_at))
                for replica in victims[:surplus]:
                    self._stop_later(replica)
                    changed = True
            for _ in range(max(-surplus, 0)):
                replica = self.replicas.launch(region, WARM)
                self._event("start", replica, f"pid {replica.pid}")
                changed = True
        # A ready serving replica always belongs in the router (also after a restart).
        for replica in self.replicas.replicas.values():
            if replica.role == SERVING and replica.ready and not replica.stopping:
                self.router.add(replica.name, replica.url)
        if changed:
            self.metrics.update_targets(self.replicas.replicas.values())

    def _stop_later(self, replica: Replica) -> None:
        replica.stopping = True
        self.router.remove(replica.name)
        self._event("stop", replica)
        log.info("stopping %s (scale down)", replica.name)

        async def drain_and_stop() -> None:
            await self.router.wait_idle(replica.name, timeout=60.0)
            await self.replicas.stop(replica.name)
            self.write_state()

        task = asyncio.get_running_loop().create_task(drain_and_stop())
        self._stopping_tasks.add(task)
        task.add_done_callback(self._stopping_tasks.discard)

    def _on_ready(self, replica: Replica) -> None:
        self._event("ready", replica, f"{(replica.ready_at or 0) - replica.started_at:.1f}s after start")
        self.reconcile()
        self.metrics.update_targets(self.replicas.replicas.values())
        self.write_state()

    def _on_first_request(self, name: str, at: float) -> None:
        self.events.append(ReplicaEvent(at, "first-request", name))

    def _on_crash(self, replica: Replica) -> None:
        self.router.remove(replica.name)
        self._event("crash", replica, f"restart #{replica.restarts}")
        self.metrics.update_targets(self.replicas.replicas.values())
        self.write_state()

    # ------------------------------------------------------------ the loop

    async def tick(self) -> None:
        """One observe -> decide -> act round."""
        now = time.time()
        try:
            observation = await asyncio.to_thread(self.metrics.observe, now)
        except Exception as error:  # a metrics outage must not stop serving: the policy holds on no data
            log.warning("observing failed: %s", error)
            observation = Observation(time=now, problems=(f"metrics source error: {error}",))
        self.last_observation = observation
        # What is asked for (starting and promoted replicas included), as decide() expects; the ready count
        # reaches the policy through observation.ready_replicas.
        current = dict(self.desired_serving)
        decision = decide(self.spec, observation, self.state, now, current_serving=current,
                          pending_age=None, profile=self.profile, load_aware_routing=self.router.policy.load_aware)
        decided_at = time.time()  # observing can take a while; the decision exists from here on
        self.state = decision.state
        self.ticks += 1
        before, after = _total(self.desired_serving), _total(decision.serving)
        changed = decision.serving != self.desired_serving or decision.warm != self.desired_warm
        if changed or decision.reason != self.last_reason:
            record = DecisionRecord(decided_at, decision.reason, before, after, _total(decision.warm),
                                    decision.metrics_available, decision.degraded, observed_at=now)
            self.decisions.append(record)
            if changed:
                self.changes.append(record)
                self.scale_events += 1
            log.info("decision: serving %d -> %d, warm %d: %s", before, after, _total(decision.warm),
                     decision.reason)
        self.last_reason = decision.reason
        self.desired_serving = dict(decision.serving)
        self.desired_warm = dict(decision.warm)
        self.reconcile()
        self.write_state()

    async def run(self, stop: asyncio.Event) -> None:
        """Tick every interval until `stop` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.tick()
            except Exception:
                log.exception("control loop tick failed; holding the fleet as it is")
            remaining = self.interval - (time.monotonic() - started)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(remaining, 0.05))
            except TimeoutError:
                pass

    async def shutdown(self, drain_timeout: float) -> None:
        """Stop taking requests, let in-flight ones finish (bounded), then stop every replica by PID."""
        self.router.accepting = False
        drained = await self.router.drain(drain_timeout)
        if not drained:
            log.warning("requests still in flight after %.0fs; stopping anyway", drain_timeout)
        for task in list(self._stopping_tasks):
            task.cancel()
        await self.replicas.stop_all(grace=drain_timeout)
        self.stopped = True
        self.write_state()

    # ------------------------------------------------------------ the state file

    def _observed(self) -> dict[str, Any]:
        observation = self.last_observation
        if observation is None:
            return {"metrics_available": False, "problems": ["no observation yet"]}
        regions = {}
        for name, region in observation.regions.items():
            regions[name] = {key: getattr(region, key) for key in (
                "ready_replicas", "request_rate", "ttft_p95", "itl_p95", "ttft_within_budget",
                "itl_within_budget", "running", "waiting", "requests_observed", "stale")}
        return {"metrics_available": observation.available, "problems": list(observation.problems),
                "time": observation.time, "regions": regions}

    def state_dict(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": self.service.metadata.name,
            "namespace": self.service.metadata.namespace,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "stopped": self.stopped,
            "endpoint": self.endpoint,
            "interval": self.interval,
            "metrics": self.metrics.describe(),
            "metrics_kind": self.metrics.kind,
            "slo": {"ttft_p95": spec.slo.ttft.p95_seconds, "itl_p95": spec.slo.itl.p95_seconds},
            "scaling": {"min": spec.scaling.min_replicas, "max": spec.scaling.max_replicas,
                        "warm_pool": spec.scaling.warm_pool.size,
                        "stabilization_seconds": spec.scaling.scale_down.stabilization_seconds},
            "desired": {"serving": self.desired_serving, "warm": self.desired_warm},
            "current": {"serving": self.serving_counts(), "warm": self.warm_counts()},
            "replicas": [r.to_dict() for r in sorted(self.replicas.replicas.values(), key=lambda r: r.name)],
            "observed": self._observed(),
            "decisions": [asdict(d) for d in self.decisions],
            "changes": [asdict(d) for d in self.changes],
            "scale_events": self.scale_events,
            "events": [asdict(e) for e in self.events],
            "router": self.router.snapshot(),
            "pids": {"replicas": self.replicas.live_pids(), "prometheus": self.metrics.pid,
                     "started": list(self.replicas.started_pids)},
        }

    def write_state(self) -> None:
        write_json_atomic(self.run_dir.state_file, self.state_dict())
