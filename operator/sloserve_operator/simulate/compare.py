"""Side-by-side runs: sloserve's policy, the clairvoyant oracle (the cost floor, oracle.py), the reactive
reference (the oracle's needs without foresight, reactive_reference.py) and every
baseline, each at its documented defaults and tuned by a small grid search on the same trace (the best
setting in hindsight, which flatters the baselines).

Tuned = among the grid's settings that meet the objective (fraction of requests within both budgets),
the one with the fewest replica-hours; if none meets it, the one with the most requests within budget.

Every grid row keeps a setting key that means the same on every scenario (a KEDA threshold as a share of the
profile's capacity, a static fleet as a multiple of the profile-sized peak fleet, ...), so that
`leave_one_out` can tune each baseline out of sample: for each scenario, the setting that met the objective
on most of the *other* scenarios, at the fewest replica-hours relative to their oracles. Users tune on last
week's traffic, not on the hour being scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sloserve_operator.api.spec import ModelServiceSpec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.simulate.autoscalers import (
    Autoscaler,
    KedaHpa,
    KnativeKpa,
    LlmdSloRatio,
    SloservePolicy,
    StaticPeak,
)
from sloserve_operator.simulate.oracle import run_oracle
from sloserve_operator.simulate.reactive_reference import run_reactive_reference
from sloserve_operator.simulate.run import SimResult, simulate
from sloserve_operator.simulate.traces import Request, per_minute_rates

KPA_TARGETS = (1, 2, 3, 4, 6, 8, 12, 16, 24)
KEDA_FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2)
LLMD_THRESHOLDS = ((0.65, 0.5), (0.45, 0.3), (0.35, 0.25), (0.3, 0.2), (0.25, 0.15), (0.2, 0.1))
STATIC_MULTIPLES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)  # of the profile-sized peak fleet (out-of-sample grid)
ORACLE = "oracle (clairvoyant)"


@dataclass
class Entry:
    result: SimResult
    setting: str  # "defaults", "tuned", "grid" or "-"
    grid: list[SimResult] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # per grid row: its setting, comparable across scenarios


@dataclass
class Comparison:
    entries: list[Entry]
    objective: float

    def find(self, policy: str, setting: str) -> Entry | None:
        return next((e for e in self.entries if e.result.policy == policy and e.setting == setting), None)


def reference_capacity(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec) -> float:
    """Per-replica req/s within budget at the trace's mean lengths: what a load test would tell a user."""
    prompt = sum(r.prompt_tokens for r in requests) / len(requests)
    output = sum(r.output_tokens for r in requests) / len(requests)
    return profile.max_rate_within_budget(spec.slo.ttft.p95_seconds, spec.slo.itl.p95_seconds, prompt, output)


def pick_tuned(results: list[SimResult], objective: float) -> SimResult:
    meeting = [r for r in results if r.within_both >= objective]
    if meeting:
        return min(meeting, key=lambda r: (r.replica_hours, -r.within_both))
    return max(results, key=lambda r: (r.within_both, -r.replica_hours))


def compare(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec, *,
            policies: tuple[str, ...] = ("sloserve", "oracle", "static", "keda", "kpa", "llmd"), tune: bool = True,
            run_options: dict | None = None, progress: Callable[[str], None] | None = None) -> Comparison:
    options = dict(run_options or {})
    objective = spec.slo.objective_fraction
    capacity = reference_capacity(requests, profile, spec) or 1e-3
    peak = max(per_minute_rates(requests))
    entries: list[Entry] = []

    def run(autoscaler: Autoscaler) -> SimResult:
        result = simulate(requests, profile, spec, autoscaler, **options)
        if progress:
            progress(f"{result.policy} [{result.config}]: {result.within_both:.2%} within, "
                     f"{result.replica_hours:.2f} replica-hours")
        return result

    def defaults_and_tuned(make: Callable[[object], Autoscaler], default: object, grid: list[object]) -> None:
        base = run(make(default))
        entries.append(Entry(base, "defaults"))
        if tune:
            values = [default] + [value for value in grid if value != default]
            results = [base] + [run(make(value)) for value in values[1:]]
            entries.append(Entry(pick_tuned(results, objective), "tuned", results))
            entries.append(Entry(base, "grid", results, [setting_key(v) for v in values]))

    if "sloserve" in policies:
        entries.append(Entry(run(SloservePolicy(profile)), "-"))
    if "oracle" in policies or "reactive" in policies:
        result, minutes = run_oracle(requests, profile, spec, options)
        references = [result] if "oracle" in policies else []
        if "reactive" in policies:
            references.append(run_reactive_reference(requests, profile, spec, minutes, options)[0])
        for reference in references:
            if progress:
                progress(f"{reference.policy} [{reference.config}]: {reference.within_both:.2%} within, "
                         f"{reference.replica_hours:.2f} replica-hours")
            entries.append(Entry(reference, "-"))
    if "static" in policies:
        default_size = min(max(math.ceil(peak / capacity), 1), spec.scaling.max_replicas)
        base = run(StaticPeak(default_size))
        entries.append(Entry(base, "defaults"))
        if tune:
            walk = _tune_static(run, base, default_size, spec.scaling.max_replicas, objective)
            entries.append(walk)
            by_size = {int(r.config.split()[0]): r for r in walk.grid}
            sizes = [min(max(math.ceil(k * default_size - 1e-9), 1), spec.scaling.max_replicas)
                     for k in STATIC_MULTIPLES]
            for size in sizes:
                if size not in by_size:
                    by_size[size] = run(StaticPeak(size))
            entries.append(Entry(base, "grid", [by_size[n] for n in sizes], [setting_key(k) for k in STATIC_MULTIPLES]))
    if "keda" in policies:
        defaults_and_tuned(lambda f: KedaHpa(target_rate=capacity * f), 1.0, list(KEDA_FRACTIONS))
    if "kpa" in policies:
        defaults_and_tuned(lambda t: KnativeKpa(target_concurrency=t), 100, list(KPA_TARGETS))
    if "llmd" in policies:
        defaults_and_tuned(lambda th: LlmdSloRatio(up_threshold=th[0], down_threshold=th[1]), (0.55, 0.40),
                           list(LLMD_THRESHOLDS))
    return Comparison(entries, objective)


def _tune_static(run: Callable[[Autoscaler], SimResult], base: SimResult, size: int, cap: int,
                 objective: float) -> Entry:
    """Smallest fixed fleet meeting the objective: walk down from the default while it holds, up while not."""
    results = {size: base}
    if base.within_both >= objective:
        n = size - 1
        while n >= 1:
            results[n] = run(StaticPeak(n))
            if results[n].within_both < objective:
                break
            n -= 1
    else:
        n = size + 1
        while n <= cap:
            results[n] = run(StaticPeak(n))
            if results[n].within_both >= objective:
                break
            n += 1
    ordered = [results[k] for k in sorted(results)]
    return Entry(pick_tuned(ordered, objective), "tuned", ordered)


def setting_key(value: object) -> str:
    """A grid value as text (tuples joined by '/'), the same on every scenario."""
    if isinstance(value, tuple):
        return "/".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float | int) else str(value)


@dataclass(frozen=True)
class GridRow:
    """One baseline setting's outcome on one scenario, as read back from results.json."""

    key: str
    config: str
    within_both: float
    replica_hours: float


def leave_one_out(grids: dict[str, list[GridRow]], oracle_hours: dict[str, float],
                  objective: float) -> dict[str, GridRow | None]:
    """For each scenario, the row of the setting chosen on all the others: the one meeting the objective on
    most of them, then the fewest replica-hours relative to each one's oracle (absolute hours differ
    between scenarios by an order of magnitude). None when no setting was run on every scenario."""
    keys = set.intersection(*(set(r.key for r in rows) for rows in grids.values())) if grids else set()
    chosen: dict[str, GridRow | None] = {}
    for held in grids:
        others = [name for name in grids if name != held]

        def score(key: str, others: list[str] = others) -> tuple[int, float]:
            met, cost = 0, 0.0
            for name in others:
                row = next(r for r in grids[name] if r.key == key)
                met += row.within_both >= objective
                cost += row.replica_hours / max(oracle_hours.get(name, 1.0), 1e-9)
            return (-met, cost)

        best = min(sorted(keys), key=score) if keys and others else None
        chosen[held] = next((r for r in grids[held] if r.key == best), None) if best is not None else None
    return chosen
