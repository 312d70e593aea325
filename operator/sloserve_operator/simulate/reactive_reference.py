"""The reactive reference: the oracle's own sizing, replayed without foresight.

The oracle (oracle.py) knows the future; a real autoscaler knows only what it has seen. To tell what the
targets ask of any policy that reacts from what sloserve's policy does badly, this replays the oracle's
per-minute needs (the smallest fleet meeting the objective on each minute's requests, found with the
simulator) as a policy that learns each minute's need once the minute has ended and asks for it then, so new
pods arrive a cold start later. It keeps the largest need of the last `memory` minutes; the cheapest memory
whose replay meets the objective is reported, or the one serving the most if none does.

A reference, not a bound: it adds no headroom beyond the largest recent need, so a policy that
over-provisions (square-root staffing) can serve more than it, at a cost; a policy that sees inside a minute
reacts up to a minute sooner; one that learned a trace's pattern can anticipate it. What it shows is what
exact knowledge of the past is worth: where it misses 99% with every memory (a lone spike shorter than a
cold start), only holding the spike's fleet all the time, i.e. a static fleet, reaches 99%.

The frontier (`reactive_frontier`) widens the family with a margin: k times the largest need of the last
`memory` minutes, the cheapest k of MULTIPLIERS meeting the objective per memory. Its cheapest replay
meeting the objective is what exact knowledge of the past, plus any margin of that form, pays for it: where
even that costs more than the targets allow, a policy that knows only the past (and knows it less exactly)
has no setting of this form that meets both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sloserve_operator.api.spec import ModelServiceSpec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.simulate.oracle import MinuteSizing, Oracle
from sloserve_operator.simulate.run import WARMUP_SECONDS, SimResult, simulate
from sloserve_operator.simulate.traces import Request

REACTIVE = "reactive reference (past needs, no foresight)"
MEMORIES = (1, 2, 3, 5, 10, 15, 30)  # minutes of past needs the fleet keeps the largest of
MULTIPLIERS = (1.0, 1.25, 1.5, 2.0, 3.0)  # the frontier's margins on the largest past need


@dataclass
class ReactiveReplay(Oracle):
    """The oracle's replay with no lead: minute m's fleet is asked for when minute m starts."""

    memory: int = 1
    lead: float = 0.0
    name: str = REACTIVE
    multiplier: float = 1.0

    def label(self) -> str:
        margin = "" if self.multiplier == 1.0 else f"{self.multiplier:g}x the "
        return (f"{margin}largest need of the last {self.memory} min, asked when known, "
                f"fleet {min(self.fleets)}-{max(self.fleets)}")


def reactive_fleets(needs: list[int], memory: int, multiplier: float = 1.0) -> list[int]:
    """Minute m's fleet: `multiplier` times the largest need among minutes m - memory .. m - 1 (known once
    each ended), rounded up; the first minute starts at its own need, as every policy starts sized for the
    opening load."""
    fleets = []
    for minute in range(len(needs)):
        seen = needs[max(minute - memory, 0):minute]
        largest = max(seen) if seen else needs[0] if needs else 0
        fleets.append(math.ceil(multiplier * largest - 1e-9))
    return fleets


def _replay(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec, needs: list[int],
            memory: int, multiplier: float, warmup: float, options: dict) -> SimResult:
    policy = ReactiveReplay(reactive_fleets(needs, memory, multiplier), memory=memory, multiplier=multiplier)
    return simulate(requests, profile, spec, policy, initial_serving=max(policy.wanted(0.0), 1), warmup=warmup,
                    **options)


def run_reactive_reference(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec,
                           minutes: list[MinuteSizing], options: dict | None = None) -> tuple[SimResult, int]:
    """The cheapest replay meeting the objective over MEMORIES (or the one with the most within budget),
    with its memory in minutes. `minutes` are run_oracle's, indexed on the pre-rolled trace."""
    options = dict(options or {})
    warmup = min(options.pop("warmup", WARMUP_SECONDS), requests[-1].arrival)
    needs = [m.need for m in minutes]
    results = [(_replay(requests, profile, spec, needs, memory, 1.0, warmup, options), memory)
               for memory in MEMORIES]
    return _cheapest_meeting(results, spec.slo.objective_fraction)


def reactive_frontier(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec,
                      minutes: list[MinuteSizing], options: dict | None = None,
                      memories: tuple[int, ...] = MEMORIES,
                      multipliers: tuple[float, ...] = MULTIPLIERS) -> list[tuple[SimResult, int, float]]:
    """Per memory, the replays at rising margins up to the first that meets the objective (a larger margin
    only costs more): every point tried, with its memory and margin."""
    options = dict(options or {})
    warmup = min(options.pop("warmup", WARMUP_SECONDS), requests[-1].arrival)
    needs = [m.need for m in minutes]
    objective = spec.slo.objective_fraction
    tried: list[tuple[SimResult, int, float]] = []
    for memory in memories:
        for multiplier in multipliers:
            result = _replay(requests, profile, spec, needs, memory, multiplier, warmup, options)
            tried.append((result, memory, multiplier))
            if result.within_both >= objective:
                break
    return tried


def _cheapest_meeting(results: list[tuple[SimResult, int]], objective: float) -> tuple[SimResult, int]:
    """The cheapest result meeting the objective, or the one with the most within budget if none does."""
    meeting = [r for r in results if r[0].within_both >= objective]
    if meeting:
        return min(meeting, key=lambda r: r[0].replica_hours)
    return max(results, key=lambda r: (r[0].within_both, -r[0].replica_hours))
