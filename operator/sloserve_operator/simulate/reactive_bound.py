"""The reactive bound: what exact knowledge of the past buys, without foresight.

The oracle (oracle.py) knows the future; a real autoscaler knows only what it has seen. To tell apart what
the targets ask of any reactive policy from what sloserve's policy does badly, this replays the oracle's own
per-minute needs (the smallest fleet that meets the objective on each minute's requests, found with the
simulator) as a policy that learns each minute's need only when the minute has ended and asks for it then,
so new pods arrive a cold start later. It keeps the largest need of the last `memory` minutes (memory buys
headroom against the next minute, as the policy's burst memory does); the cheapest memory whose replay
meets the objective is reported, or the one serving the most if none does.

A reference, not a proof: a policy that sees inside a minute reacts up to a minute sooner, and one that has
learned a trace's pattern (a daily cycle) can anticipate it. But no policy here predicts an onset it has not
seen, so where this bound misses 99% (a lone spike shorter than a cold start) or costs well above the oracle,
so does every policy that reacts to what it observes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sloserve_operator.api.spec import ModelServiceSpec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.simulate.oracle import MinuteSizing, Oracle
from sloserve_operator.simulate.run import WARMUP_SECONDS, SimResult, simulate
from sloserve_operator.simulate.traces import Request

REACTIVE = "reactive bound (past needs, no foresight)"
MEMORIES = (1, 2, 3, 5, 10, 15, 30)  # minutes of past needs the fleet keeps the largest of


@dataclass
class ReactiveReplay(Oracle):
    """The oracle's replay with no lead: minute m's fleet is asked for when minute m starts."""

    memory: int = 1
    lead: float = 0.0
    name: str = REACTIVE

    def label(self) -> str:
        return f"largest need of the last {self.memory} min, asked when known, fleet {min(self.fleets)}-{max(self.fleets)}"


def reactive_fleets(needs: list[int], memory: int) -> list[int]:
    """Minute m's fleet: the largest need among minutes m - memory .. m - 1 (known once each ended); the
    first minute starts at its own need, as every policy starts sized for the opening load."""
    fleets = []
    for minute in range(len(needs)):
        seen = needs[max(minute - memory, 0):minute]
        fleets.append(max(seen) if seen else needs[0] if needs else 0)
    return fleets


def run_reactive_bound(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec,
                       minutes: list[MinuteSizing], options: dict | None = None) -> tuple[SimResult, int]:
    """The cheapest replay meeting the objective over MEMORIES (or the one with the most within budget),
    with its memory in minutes. `minutes` are run_oracle's, indexed on the pre-rolled trace."""
    options = dict(options or {})
    warmup = min(options.pop("warmup", WARMUP_SECONDS), requests[-1].arrival)
    needs = [m.need for m in minutes]
    objective = spec.slo.objective_fraction
    results: list[tuple[SimResult, int]] = []
    for memory in MEMORIES:
        policy = ReactiveReplay(reactive_fleets(needs, memory), memory=memory)
        result = simulate(requests, profile, spec, policy, initial_serving=max(policy.wanted(0.0), 1),
                          warmup=warmup, **options)
        results.append((result, memory))
    meeting = [r for r in results if r[0].within_both >= objective]
    if meeting:
        return min(meeting, key=lambda r: r[0].replica_hours)
    return max(results, key=lambda r: (r[0].within_both, -r[0].replica_hours))
