"""What the policy remembers between decisions (PolicyState, persisted by the operator as JSON) and what
a decision returns (ScalingDecision): plain data, kept apart from the decision so every part can share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The fewest finished requests a window needs for calibration to learn from it (calibration.py). Defined here
# because from_dict weighs a persisted prompt window written without its request count as this many, and
# calibration imports this module (an import back would be a cycle).
MIN_REQUESTS_FOR_LEARNING = 20


@dataclass
class PolicyState:
    """What the policy remembers between calls; the operator persists it (to_dict/from_dict, JSON-safe)."""

    rates: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # region -> (time, rate)
    recommendations: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # region -> (time, n)
    latency_factor: dict[str, list[float]] = field(default_factory=dict)  # region -> [ttft, itl] observed/model
    learned_capacity: dict[str, float] = field(default_factory=dict)  # req/s per replica, when no profile
    blocked_until: dict[str, float] = field(default_factory=dict)  # region -> time its spill ends
    # region -> (time, finished requests, mean prompt, mean squared prompt) per window, for the prompts' spread
    prompt_moments: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    # region -> (time, finished requests, p95 prompt / mean prompt) per window, for the prompts' tail
    prompt_tails: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    # region -> (time, mean uncached prompt, finished requests) per observation window
    prompt_tokens: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    queue: dict[str, tuple[float, float]] = field(default_factory=dict)  # region -> (time, running + waiting)
    fleet_since: dict[str, tuple[int, float]] = field(default_factory=dict)  # region -> (ready replicas, since)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rates": {k: [list(p) for p in v] for k, v in self.rates.items()},
            "recommendations": {k: [list(p) for p in v] for k, v in self.recommendations.items()},
            "latencyFactor": {k: list(v) for k, v in self.latency_factor.items()},
            "learnedCapacity": dict(self.learned_capacity),
            "blockedUntil": dict(self.blocked_until),
            "promptTokens": {k: [list(p) for p in v] for k, v in self.prompt_tokens.items()},
            "promptMoments": {k: [list(p) for p in v] for k, v in self.prompt_moments.items()},
            "promptTails": {k: [list(p) for p in v] for k, v in self.prompt_tails.items()},
            "queue": {k: list(v) for k, v in self.queue.items()},
            "fleetSince": {k: list(v) for k, v in self.fleet_since.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyState:
        """Tolerant: a missing or malformed field starts empty (a lost state only costs some memory)."""
        data = data or {}

        def pairs(raw: Any, cast) -> dict[str, list[tuple[float, Any]]]:
            if not isinstance(raw, dict):
                return {}
            return {str(k): [(float(p[0]), cast(p[1])) for p in v if isinstance(p, list | tuple) and len(p) == 2]
                    for k, v in raw.items() if isinstance(v, list)}

        def prompt_windows(raw: Any) -> dict[str, list[tuple[float, float, float]]]:
            # State written before the request counts were kept has (time, mean): weigh those as a small window.
            if not isinstance(raw, dict):
                return {}
            return {str(k): [(float(p[0]), float(p[1]), float(p[2]) if len(p) == 3 else MIN_REQUESTS_FOR_LEARNING)
                             for p in v if isinstance(p, list | tuple) and len(p) in (2, 3)]
                    for k, v in raw.items() if isinstance(v, list)}

        def floats(raw: Any) -> dict[str, float]:
            return {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

        def factors(raw: Any) -> dict[str, list[float]]:
            if not isinstance(raw, dict):
                return {}
            return {str(k): [float(v[0]), float(v[1])] for k, v in raw.items()
                    if isinstance(v, list | tuple) and len(v) == 2}

        def triples(raw: Any) -> dict[str, list[tuple[float, float, float]]]:
            if not isinstance(raw, dict):
                return {}
            return {str(k): [(float(p[0]), float(p[1]), float(p[2])) for p in v
                             if isinstance(p, list | tuple) and len(p) == 3]
                    for k, v in raw.items() if isinstance(v, list)}

        def moments(raw: Any) -> dict[str, list[tuple[float, float, float, float]]]:
            if not isinstance(raw, dict):
                return {}
            return {str(k): [(float(p[0]), float(p[1]), float(p[2]), float(p[3])) for p in v
                             if isinstance(p, list | tuple) and len(p) == 4]
                    for k, v in raw.items() if isinstance(v, list)}

        queue, fleet = data.get("queue"), data.get("fleetSince")
        return cls(
            fleet_since={str(k): (int(v[0]), float(v[1])) for k, v in fleet.items()
                         if isinstance(v, list | tuple) and len(v) == 2} if isinstance(fleet, dict) else {},
            queue={str(k): (float(v[0]), float(v[1])) for k, v in queue.items()
                   if isinstance(v, list | tuple) and len(v) == 2} if isinstance(queue, dict) else {},
            rates=pairs(data.get("rates"), float),
            recommendations=pairs(data.get("recommendations"), int),
            latency_factor=factors(data.get("latencyFactor")),
            learned_capacity=floats(data.get("learnedCapacity")),
            blocked_until=floats(data.get("blockedUntil")),
            prompt_moments=moments(data.get("promptMoments")),
            prompt_tails=triples(data.get("promptTails")),
            prompt_tokens=prompt_windows(data.get("promptTokens")),
        )


@dataclass
class ScalingDecision:
    serving: dict[str, int]  # desired serving replicas per region
    warm: dict[str, int]  # desired warm-pool pods per region
    reason: str  # one line, human readable
    metrics_available: bool
    degraded: str | None
    state: PolicyState
