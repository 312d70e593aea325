"""What the autoscaler observes about a ModelService: the contract between metrics sources and the policy.

A MetricsSource (metrics.py: Prometheus or direct scrape), the simulator and local mode all produce these;
the policy (policy.py) consumes them. A figure that could not be measured is None, never 0: missing data
must make the policy hold, not scale down.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def with_refusals(ttft_within: float | None, served: float | None, refused: float | None) -> float | None:
    """The TTFT attainment with refused requests counted as misses: served-within / (served + refused)."""
    if not refused or refused <= 0:
        return ttft_within
    if not served or served <= 0:
        return 0.0
    return None if ttft_within is None else ttft_within * served / (served + refused)



@dataclass(frozen=True)
class RegionObservation:
    """One region (or the whole fleet when placement names no regions) over the observation window."""

    region: str
    window_seconds: float
    ready_replicas: int | None = None  # serving pods reporting metrics
    request_rate: float | None = None  # arrivals per second (finished + running growth + refused)
    refused_rate: float | None = None  # of those, refused with 429 by admission (counted as misses too)
    ttft_p95: float | None = None  # seconds
    itl_p95: float | None = None  # seconds
    ttft_within_budget: float | None = None  # fraction of requests with TTFT <= budget (bucket at threshold);
    # refused requests count as misses: served-within / (served + refused)
    itl_within_budget: float | None = None  # fraction of inter-token gaps <= budget
    mean_prompt_tokens: float | None = None
    mean_output_tokens: float | None = None
    prompt_tokens_spread: float | None = None  # squared coefficient of variation of prompt lengths (histogram)
    prompt_tokens_p95: float | None = None  # 95th percentile of prompt lengths, tokens (histogram)
    running: float | None = None  # requests in the running batch, summed over replicas
    waiting: float | None = None  # requests queued, summed over replicas
    kv_usage: float | None = None  # mean KV-cache usage fraction 0..1
    prefix_cache_hit_rate: float | None = None  # share of prompt tokens found in prefix caches (hits/queries)
    requests_observed: float | None = None  # finished requests in the window (confidence in the p95s)
    stale: bool = False  # the newest sample is older than the window: treat as missing

    @property
    def complete(self) -> bool:
        """True when the latency figures the policy needs are present and fresh."""
        return not self.stale and self.request_rate is not None and self.ready_replicas is not None


@dataclass(frozen=True)
class Observation:
    """Everything observed for one ModelService at one time."""

    time: float  # seconds (unix time, or simulated time)
    regions: dict[str, RegionObservation] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # why data is missing or partial, for the MetricsAvailable condition

    @property
    def available(self) -> bool:
        return bool(self.regions) and all(region.complete for region in self.regions.values())
