"""Spec and observation builders shared by the autoscaler tests."""

from __future__ import annotations

from pathlib import Path

from sloserve_operator.api.spec import parse_spec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile, load_profile
from sloserve_operator.autoscaler.observe.observation import Observation, RegionObservation

FIXTURE_PROFILE_PATH = Path(__file__).parent / "fixtures" / "cpu-test-profile.json"


def fixture_profile() -> CapacityProfile:
    """The tests' own CPU profile: fixed numbers, independent of the shipped (re-measurable) profiles."""
    return load_profile(str(FIXTURE_PROFILE_PATH))


def make_spec(min_replicas: int = 1, max_replicas: int = 10, warm: int = 1, window: str = "1m", max_step: int = 1,
              regions: list[dict] | None = None, ttft: str = "1s", itl: str = "100ms",
              pending_timeout: str = "5m"):
    spec = {
        "model": {"name": "m"},
        "slo": {"ttft": {"p95": ttft}, "itl": {"p95": itl}},
        "scaling": {"minReplicas": min_replicas, "maxReplicas": max_replicas, "warmPool": {"size": warm},
                    "scaleDown": {"stabilizationWindow": window, "maxStep": max_step}},
        "placement": {"regions": regions or [], "pendingTimeout": pending_timeout},
    }
    return parse_spec(spec)


def region_obs(region: str = "default", *, ready: int | None = 2, rate: float | None = 1.0, ttft: float | None = 0.3,
               itl: float | None = 0.03, ttft_within: float | None = 1.0, itl_within: float | None = 1.0,
               prompt: float | None = 200.0, output: float | None = 128.0, observed: float = 100.0,
               stale: bool = False) -> RegionObservation:
    return RegionObservation(region=region, window_seconds=60.0, ready_replicas=ready, request_rate=rate,
                             ttft_p95=ttft, itl_p95=itl, ttft_within_budget=ttft_within,
                             itl_within_budget=itl_within, mean_prompt_tokens=prompt, mean_output_tokens=output,
                             requests_observed=observed, stale=stale)


def observation(now: float, *regions: RegionObservation) -> Observation:
    return Observation(time=now, regions={r.region: r for r in regions})
