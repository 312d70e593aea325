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
"""

from __future__ import annotations

from dataclasses import dataclass

from sloserve_operator.api.spec import ModelServiceSpec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.simulate.oracle import MinuteSizing, Oracle
from sloserve_operator.simulate.run import WARMUP_SECONDS, SimResult, simulate
from sloserve_operator.simulate.traces import Request

REACTIVE = "reactive reference (past needs, no foresight)"
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


def run_reactive_reference(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec,
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
