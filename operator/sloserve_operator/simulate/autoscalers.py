"""The policies replayed by the simulator: sloserve's policy.decide and the baselines it is judged against.

Every autoscaler sees the same fleet through a View and acts through the same actuator (Fleet.apply);
each baseline follows its documented algorithm and defaults:

- StaticPeak: a fixed fleet. Default size: the peak minute's rate over the profile's per-replica capacity.
- KedaHpa: HPA on request rate per replica as KEDA's Prometheus scaler drives it (metric type
  AverageValue: desired = ceil(rate over the query window / threshold)); HPA sync 15 s, tolerance 10%,
  scale-up limited to max(100%, 4 pods) per 15 s, scale-down stabilization 300 s.
- KnativeKpa: Knative Pod Autoscaler on concurrency: stable window 60 s, panic window 6 s (10%), panic
  threshold 200%, target utilization 70%, container-concurrency-target-default 100, tick 2 s, max scale-down
  rate 2 (at most halve per tick); in panic mode it never scales down.
- LlmdSloRatio: the llm-d SLO-ratio rule: s = max(p90 TTFT / S_ttft, p90 ITL / S_itl), clamped at 2, averaged
  over 45 s (three 15 s samples); above 0.55 scale up (HPA-style proportional, at most max(100%, 4 pods) per
  60 s), below 0.40 scale down one pod per 120 s.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from sloserve_operator.api.spec import ModelServiceSpec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.autoscaler.decide.placement import region_bounds
from sloserve_operator.autoscaler.decide.policy import PolicyState, decide
from sloserve_operator.autoscaler.observe.observation import Observation
from sloserve_operator.simulate.fleet import Fleet
from sloserve_operator.simulate.recorder import Recorder


@dataclass
class View:
    now: float
    fleet: Fleet
    recorder: Recorder
    spec: ModelServiceSpec
    profile: CapacityProfile
    window: float  # the MetricsSource window

    def clamp(self, region: str, count: int) -> int:
        low, high = region_bounds(self.spec, region)
        return min(max(count, low, self.spec.scaling.min_replicas), high, self.spec.scaling.max_replicas)


class Autoscaler(Protocol):
    name: str
    interval: float

    def label(self) -> str: ...
    def decide(self, view: View) -> dict[str, tuple[int, int]]: ...  # region -> (serving, warm)


@dataclass
class SloservePolicy:
    """policy.decide, fed Observations computed like the MetricsSource computes them."""

    profile: CapacityProfile | None
    interval: float = 10.0
    name: str = "sloserve"
    state: PolicyState = field(default_factory=PolicyState)
    last_reason: str = ""

    def label(self) -> str:
        return "profile" if self.profile else "learned online"

    def decide(self, view: View) -> dict[str, tuple[int, int]]:
        regions = {}
        for region in view.fleet.regions:
            running, waiting = view.fleet.load(region)
            regions[region] = view.recorder.observe(region, view.now, view.window,
                                                    view.fleet.serving_count(region), running, waiting)
        observation = Observation(time=view.now, regions=regions)
        current = {region: view.fleet.targets[region].serving for region in view.fleet.regions}
        pending = {region: age for region in view.fleet.regions
                   if (age := view.fleet.pending_age(region, view.now)) is not None}
        decision = decide(view.spec, observation, self.state, view.now, current_serving=current,
                          pending_age=pending, profile=self.profile, load_aware_routing=view.fleet.router.load_aware)
        self.state = decision.state
        self.last_reason = decision.reason
        return {region: (decision.serving[region], decision.warm.get(region, 0)) for region in decision.serving}


@dataclass
class StaticPeak:
    replicas: int
    interval: float = 3600.0
    name: str = "static peak"

    def label(self) -> str:
        return f"{self.replicas} replicas"

    def decide(self, view: View) -> dict[str, tuple[int, int]]:
        return {region: (self.replicas, 0) for region in view.fleet.regions}


@dataclass
class KedaHpa:
    target_rate: float  # requests/s per replica (the scaler's threshold)
    query_window: float = 120.0  # rate(...[2m])
    interval: float = 15.0
    tolerance: float = 0.1
    stabilization_down: float = 300.0
    name: str = "KEDA HPA (request rate)"
    history: dict[str, deque] = field(default_factory=dict)

    def label(self) -> str:
        return f"threshold {self.target_rate:.2f} req/s, rate[{self.query_window:.0f}s]"

    def decide(self, view: View) -> dict[str, tuple[int, int]]:
        out = {}
        for region in view.fleet.regions:
            current = max(view.fleet.targets[region].serving, 1)
            rate = view.recorder.arrival_rate(region, view.now, self.query_window)
            raw = math.ceil(rate / self.target_rate - 1e-9)
            if abs(rate / (self.target_rate * current) - 1.0) <= self.tolerance:
                raw = current
            raw = view.clamp(region, raw)
            history = self.history.setdefault(region, deque())
            history.append((view.now, raw))
            while history and history[0][0] < view.now - self.stabilization_down:
                history.popleft()
            if raw > current:
                desired = min(raw, max(2 * current, current + 4))
            else:
                desired = min(current, max(n for _, n in history))
            out[region] = (view.clamp(region, desired), 0)
        return out


@dataclass
class KnativeKpa:
    target_concurrency: float = 100.0
    utilization: float = 0.7
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_down_rate: float = 2.0
    max_scale_up_rate: float = 1000.0
    interval: float = 2.0
    name: str = "Knative KPA (concurrency)"
    panic_until: dict[str, float] = field(default_factory=dict)

    def label(self) -> str:
        return f"target {self.target_concurrency:g} x {self.utilization:.0%}"

    def decide(self, view: View) -> dict[str, tuple[int, int]]:
        out = {}
        per_pod = self.target_concurrency * self.utilization
        for region in view.fleet.regions:
            ready = max(view.fleet.serving_count(region), 1)
            current = view.fleet.targets[region].serving
            stable = view.recorder.mean_concurrency(region, view.now, self.stable_window)
            panic = view.recorder.mean_concurrency(region, view.now, self.panic_window)
            want_stable = math.ceil(stable / per_pod - 1e-9)
            want_panic = math.ceil(panic / per_pod - 1e-9)
            if want_panic / ready >= self.panic_threshold:
                self.panic_until[region] = view.now + self.stable_window
            if self.panic_until.get(region, -1.0) > view.now:
                desired = max(want_panic, current)  # panic mode never scales down
            else:
                desired = want_stable
            desired = min(desired, math.ceil(ready * self.max_scale_up_rate))
            desired = max(desired, math.floor(ready / self.max_scale_down_rate))
            out[region] = (view.clamp(region, desired), 0)
        return out


@dataclass
class LlmdSloRatio:
    up_threshold: float = 0.55
    down_threshold: float = 0.40
    interval: float = 15.0
    average_over: int = 3  # samples: 45 s
    up_period: float = 60.0
    down_period: float = 120.0
    name: str = "llm-d SLO ratio"
    samples: dict[str, deque] = field(default_factory=dict)
    last_up: dict[str, float] = field(default_factory=dict)
    last_down: dict[str, float] = field(default_factory=dict)

    def label(self) -> str:
        return f"up > {self.up_threshold:.2f}, down < {self.down_threshold:.2f}"

    def decide(self, view: View) -> dict[str, tuple[int, int]]:
        out = {}
        ttft_budget, itl_budget = view.spec.slo.ttft.p95_seconds, view.spec.slo.itl.p95_seconds
        for region in view.fleet.regions:
            current = max(view.fleet.targets[region].serving, 1)
            ttft_p90, itl_p90, *_ = view.recorder.latency(region, view.now, self.interval, quantile=0.90)
            ratios = [v / b for v, b in ((ttft_p90, ttft_budget), (itl_p90, itl_budget)) if v is not None]
            sample = min(max(ratios, default=0.0), 2.0)
            window = self.samples.setdefault(region, deque(maxlen=self.average_over))
            window.append(sample)
            score = sum(window) / len(window)
            desired = current
            if score > self.up_threshold and view.now - self.last_up.get(region, -1e9) >= self.up_period:
                desired = min(math.ceil(current * score / self.up_threshold), current + max(current, 4))
                self.last_up[region] = view.now
            elif score < self.down_threshold and view.now - self.last_down.get(region, -1e9) >= self.down_period:
                desired = current - 1
                self.last_down[region] = view.now
            out[region] = (view.clamp(region, desired), 0)
        return out
