"""The simulated fleet: pods with roles and lifecycles, routing, and the actuator every policy goes through.

Pod lifecycle: starting (cold start: scheduling, image, weights; `cold_start` seconds) -> warm or serving;
warm -> serving by promotion (a label patch; `promotion` seconds until the Service routes to it);
serving -> warm or draining on scale-down (no new requests; removed once its in-flight requests finish).
Every pod costs from creation to removal, whatever its role: warm pods hold a GPU too.

Routing: a routing.Router's pick among a region's serving pods (default least outstanding requests; the
routers are compared by bench/routing.py); with none, requests wait at the gateway (their TTFT keeps
counting) until a pod serves. A pod whose SLO admission refuses passes the request on to the router's next
pick, as local mode's router retries a 429 on another replica; refused only when every serving pod refuses.
With `kv_cache_tokens` every pod keeps a prefix cache of that size. With `host` (SharedHost) every pod runs on
one machine, as local mode's replicas do, and busy replicas slow each other down beyond its cores.

The same `apply(serving, warm)` actuator serves every policy: baselines ask for warm 0, so for them it is a
Deployment scale. It acts through warmpool.plan_roles on `role_view`, the pods as the operator would list
them, so the simulated fleet is promoted, demoted and shrunk exactly as the Kubernetes actuator and local
mode do it (tests/simulate pins the plans equal).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

from sloserve_operator.api.labels import SERVING, WARM
from sloserve_operator.autoscaler.act.warmpool import COST_VICTIM, PodInfo, RolePlan, plan_roles
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.routing import Candidate, Router, RouteRequest
from sloserve_operator.simulate.prefix_cache import PrefixCache
from sloserve_operator.simulate.recorder import Recorder
from sloserve_operator.simulate.replica import ReplicaEngine
from sloserve_operator.simulate.traces import Request

# A simulated pod's state: the two roles (SERVING, WARM) plus the transitions a real pod goes through.
STARTING, PROMOTING, DRAINING = "starting", "promoting", "draining"
HOST_RATE_SECONDS = 5.0  # SharedHost's request rate is over this many seconds


@dataclass(eq=False)
class Pod:
    ident: int
    region: str
    state: str
    created: float
    engine: ReplicaEngine
    ready_at: float = 0.0
    serving_at: float = 0.0
    removed: float | None = None
    loading_left: float = 0.0  # seconds of its cold start still to do at full speed (STARTING pods)


@dataclass(frozen=True)
class SharedHost:
    """Every pod on one machine with `cores` cores, one thread per replica, as local mode runs them. Wanting
    a core each: every busy replica, every starting one (loading weights, `starting_pod_cores` each), and the
    rest of the machine, which spends `cpu_per_request` CPU-seconds per arriving request (the router
    proxying it, the client sending it). While that is more than there are cores, every busy replica steps
    and every starting one loads that much slower (processor sharing). Models the live check's host; a
    cluster gives each pod its own hardware."""

    cores: float
    starting_pod_cores: float = 1.0
    cpu_per_request: float = 0.0

    def slowdown(self, busy: int, starting: int, request_rate: float = 0.0) -> float:
        wanted = busy + self.starting_pod_cores * starting + self.cpu_per_request * request_rate
        return max(1.0, wanted / self.cores)


@dataclass
class Targets:
    serving: int = 0
    warm: int = 0


@dataclass
class Fleet:
    profile: CapacityProfile
    regions: list[str]
    recorder: Recorder
    itl_budget: float
    cold_start: float = 120.0
    promotion: float = 2.0
    kv_cache_tokens: float | None = None  # per pod; None: no prefix caching
    # One cache every pod reads and fills (the routing ceiling, bench/routing.py --ceiling): any block any pod
    # ever computed counts as cached on every pod, bounded by each pod's kv_cache_tokens.
    shared_cache: PrefixCache | None = None
    admission_limit: float | None = None  # per pod, seconds of expected TTFT (replica.py); None: admit all
    host: SharedHost | None = None  # every pod on one machine (local mode); None: a node per pod
    router: Router = field(default_factory=lambda: Router("least-outstanding"))
    pods: list[Pod] = field(default_factory=list)
    retired: list[Pod] = field(default_factory=list)
    targets: dict[str, Targets] = field(default_factory=dict)
    gateway: dict[str, deque[Request]] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)
    _advanced_to: float = 0.0  # the time advance() has simulated up to
    _recent_arrivals: deque[float] = field(default_factory=deque)  # for SharedHost's request rate

    def __post_init__(self) -> None:
        for region in self.regions:
            self.targets.setdefault(region, Targets())
            self.gateway.setdefault(region, deque())

    # ---------------------------------------------------------------- queries
    def in_region(self, region: str, *states: str) -> list[Pod]:
        return [pod for pod in self.pods if pod.region == region and (not states or pod.state in states)]

    def serving_count(self, region: str) -> int:
        return len(self.in_region(region, SERVING))

    def pending_age(self, region: str, now: float) -> float | None:
        starting = self.in_region(region, STARTING)
        return max(now - pod.created for pod in starting) if starting else None

    def load(self, region: str) -> tuple[float, float]:
        """(running, waiting) summed over the region's pods, gateway queue counted as waiting."""
        pods = self.in_region(region)
        running = sum(pod.engine.running for pod in pods)
        waiting = sum(len(pod.engine.waiting) for pod in pods) + len(self.gateway[region])
        return float(running), float(waiting)

    def next_timer(self) -> float:
        times = [pod.ready_at for pod in self.pods if pod.state == STARTING]
        times += [pod.serving_at for pod in self.pods if pod.state == PROMOTING]
        return min(times, default=float("inf"))

    # ---------------------------------------------------------------- time
    def advance(self, until: float) -> None:
        busy = [pod for pod in self.pods if pod.engine.outstanding]
        slowdown = 1.0
        if self.host is not None:
            starting = [pod for pod in self.pods if pod.state == STARTING]
            while self._recent_arrivals and self._recent_arrivals[0] < until - HOST_RATE_SECONDS:
                self._recent_arrivals.popleft()
            slowdown = self.host.slowdown(len(busy), len(starting), len(self._recent_arrivals) / HOST_RATE_SECONDS)
            for pod in starting:  # loading weights gets the same share of a core: the cold start stretches
                pod.loading_left -= max(until - self._advanced_to, 0.0) / slowdown
                pod.ready_at = until + max(pod.loading_left, 0.0) * slowdown
        self._advanced_to = max(self._advanced_to, until)
        for pod in busy:
            pod.engine.slowdown = slowdown
            pod.engine.advance(until)

    def on_time(self, now: float) -> None:
        """Finish cold starts and promotions due by `now`; retire drained pods."""
        for pod in list(self.pods):
            if pod.state == STARTING and pod.ready_at <= now:
                target = self.targets[pod.region]
                wanted = target.serving - len(self.in_region(pod.region, SERVING, PROMOTING))
                if wanted > 0:
                    pod.state, pod.serving_at = PROMOTING, pod.ready_at + self.promotion
                else:
                    pod.state = WARM
            if pod.state == PROMOTING and pod.serving_at <= now:
                pod.state = SERVING
                pod.engine.clock = max(pod.engine.clock, pod.serving_at)
            if pod.state == DRAINING and not pod.engine.outstanding:
                self._remove(pod, max(now, pod.engine.clock))
        for region in self.regions:
            self._drain_gateway(region, now)

    # ---------------------------------------------------------------- requests
    def dispatch(self, request: Request, now: float) -> None:
        self.recorder.arrival(request.region, now)
        if self.host is not None:
            self._recent_arrivals.append(now)
        self.gateway[request.region].append(request)
        self._drain_gateway(request.region, now)

    def _drain_gateway(self, region: str, now: float) -> None:
        queue = self.gateway[region]
        if not queue:
            return
        serving = self.in_region(region, SERVING)
        if not serving:
            return
        while queue:
            self._route(queue.popleft(), serving, now)

    def _route(self, request: Request, serving: list[Pod], now: float) -> None:
        """The router's pick; a pod whose admission refuses passes the request to the router's next pick among
        the pods left, as local mode's router retries a 429 (local/router.py); refused once all have refused."""
        route = RouteRequest(request.prompt_tokens, request.prefix, request.block_tokens)
        left = list(serving)
        while left:
            candidates = [Candidate(pod.ident, pod.engine.outstanding, pod.engine.queued_prefill_tokens)
                          for pod in left]
            pod = left.pop(self.router.choose(candidates, route))
            if pod.engine.submit(request, now, record_refusal=not left):
                return

    # ---------------------------------------------------------------- the actuator
    def start_ready(self, region: str, serving: int, warm: int, now: float) -> None:
        """Initial fleet: pods that are already up at the start of the replay."""
        self.targets[region] = Targets(serving, warm)
        for role, count in ((SERVING, serving), (WARM, warm)):
            for _ in range(count):
                self.pods.append(self._new_pod(region, role, now))

    def role_view(self, region: str) -> list[PodInfo]:
        """The region's live pods as the operator sees them: promoting pods already carry the serving label,
        starting ones the template's (serving) and are not ready; draining pods have left the Deployment."""
        return [PodInfo(name=str(pod.ident), region=region, role=WARM if pod.state == WARM else SERVING,
                        ready=pod.state != STARTING, created_at=pod.created)
                for pod in self.in_region(region, STARTING, WARM, PROMOTING, SERVING)]

    def apply(self, region: str, serving: int, warm: int, now: float) -> RolePlan:
        """Act on the targets as the Kubernetes actuator does: warmpool.plan_roles decides, then promotion
        (seconds), demotion, cold starts up to the plan's replicas, and the ReplicaSet's victims (lowest
        deletion cost) removed once their in-flight requests finish."""
        serving, warm = max(serving, 0), max(warm, 0)
        self.targets[region] = Targets(serving, warm)
        plan = plan_roles(self.role_view(region), serving, warm)
        by_name = {str(pod.ident): pod for pod in self.in_region(region)}
        for name in plan.promote:
            by_name[name].state, by_name[name].serving_at = PROMOTING, now + self.promotion
        for name in plan.demote:
            if by_name[name].state != STARTING:  # a starting pod takes its role when it is ready (on_time)
                by_name[name].state = WARM
        live = len(plan.deletion_cost)
        for _ in range(plan.replicas - live):
            pod = self._new_pod(region, STARTING, now)
            pod.ready_at, pod.loading_left = now + self.cold_start, self.cold_start
            self.pods.append(pod)
        for name, cost in plan.deletion_cost.items():
            if cost == COST_VICTIM:
                pod = by_name[name]
                if pod.engine.outstanding:
                    pod.state = DRAINING
                else:
                    self._remove(pod, now)
        self._drain_gateway(region, now)
        return plan

    def _new_pod(self, region: str, state: str, now: float) -> Pod:
        engine = ReplicaEngine(self.profile, region, self.itl_budget, self.recorder, clock=now,
                               kv_cache_tokens=self.kv_cache_tokens, admission_limit=self.admission_limit)
        if self.shared_cache is not None:
            engine.cache = self.shared_cache
        return Pod(next(self._ids), region, state, now, engine, ready_at=now, serving_at=now)

    def _remove(self, pod: Pod, now: float) -> None:
        pod.removed = now
        self.router.forget(pod.ident)
        self.pods.remove(pod)
        self.retired.append(pod)

    def pod_seconds(self, start: float, end: float) -> float:
        """Pod-seconds spent in [start, end), every role counted."""
        total = 0.0
        for pod in self.pods + self.retired:
            stop = min(pod.removed if pod.removed is not None else end, end)
            total += max(stop - max(pod.created, start), 0.0)
        return total
