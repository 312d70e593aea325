"""What prompt and output lengths the fleet is sized for: the prompt's uncached part, the longest pooled mean
prompt of the last LENGTH_MEMORY_SECONDS, and the prompts' spread and tail. Apart from policy.py because the
length memory is its own idea, tuned on its own (docs/autoscaling.md), and read by calibration too.
"""

from __future__ import annotations

import math

from sloserve_operator.autoscaler.decide.capacity import EXPONENTIAL_SPREAD, CapacityProfile
from sloserve_operator.autoscaler.decide.policy_state import PolicyState
from sloserve_operator.autoscaler.observe.observation import RegionObservation

MAX_PREFIX_HIT_RATE = 0.9  # size for at least a tenth of the prompt, whatever the caches report
LENGTH_MEMORY_SECONDS = 600.0  # size for the longest mean prompt seen this long (see sizing_lengths)
# A remembered mean prompt is pooled over at least this many finished requests (consecutive windows), so
# that the memory's maximum is a phase of the traffic, not the luck of a few heavy-tailed prompts. (200 was
# cheaper on the bursty scenarios and lost 99% on more of the daily Mooncake ones.)
LENGTH_BLOCK_REQUESTS = 100


def _uncached_prompt(obs: RegionObservation) -> float | None:
    """The mean prompt's part that must be prefilled: what the prefix caches hold is not computed again
    (observed hit rate of prompt tokens; none observed: the whole prompt)."""
    if obs.mean_prompt_tokens is None:
        return None
    hit = min(max(obs.prefix_cache_hit_rate or 0.0, 0.0), MAX_PREFIX_HIT_RATE)
    return obs.mean_prompt_tokens * (1.0 - hit)


def mean_lengths(obs: RegionObservation, profile: CapacityProfile | None) -> tuple[float, float]:
    """The window's mean uncached prompt and mean output; where none was observed, the profile's workload
    (then 256 / 128 tokens): the model needs lengths even before the first request finishes."""
    prompt = _uncached_prompt(obs) or (profile and profile.workload_prompt_tokens) or 256
    output = obs.mean_output_tokens or (profile and profile.workload_output_tokens) or 128
    return float(prompt), float(output)


def _longest_pooled_prompt(windows: list[tuple[float, float, float]], window_seconds: float) -> float | None:
    """The largest mean prompt over blocks of consecutive, non-overlapping observation windows that hold at
    least LENGTH_BLOCK_REQUESTS finished requests (request-weighted); when the memory holds no such block
    (low request rates), the pooled mean of all it holds. A window's mean of a few dozen heavy-tailed prompts
    (the stragglers at a burst's end, whose long prompts finish last) reads up to 1.7x the traffic's mean."""
    best, pooled = None, None
    for end in range(len(windows) - 1, -1, -1):
        requests = tokens = 0.0
        taken_at = math.inf
        for at, mean, count in reversed(windows[: end + 1]):
            if at > taken_at - window_seconds:
                continue  # overlaps a window already in the block
            requests, tokens, taken_at = requests + count, tokens + mean * count, at
            if requests >= LENGTH_BLOCK_REQUESTS:
                break
        if requests <= 0:
            continue
        if requests >= LENGTH_BLOCK_REQUESTS:
            best = max(best or 0.0, tokens / requests)
        elif pooled is None:
            pooled = tokens / requests  # the newest block reaches furthest back: everything held
    return best if best is not None else pooled


def prompt_spread(state: PolicyState, region: str, obs: RegionObservation, now: float) -> float:
    """The prompts' squared coefficient of variation, pooled over the windows of the last
    LENGTH_MEMORY_SECONDS (request-weighted moments: one window's few dozen heavy-tailed prompts rarely hold
    the tail); exponential lengths until a prompt-length histogram has been seen. It scales the attention
    the capacity model charges per prompt token (StepModel.effective)."""
    windows = state.prompt_moments.setdefault(region, [])
    requests, mean, spread = obs.requests_observed or 0.0, obs.mean_prompt_tokens, obs.prompt_tokens_spread
    if requests > 0 and mean and spread is not None:
        windows.append((now, requests, mean, mean * mean * (1.0 + spread)))
    del windows[: sum(1 for at, *_ in windows if at < now - LENGTH_MEMORY_SECONDS)]
    total = sum(n for _, n, _, _ in windows)
    if total <= 0:
        return EXPONENTIAL_SPREAD
    first = sum(n * m for _, n, m, _ in windows) / total
    second = sum(n * m2 for _, n, _, m2 in windows) / total
    return max(second / (first * first) - 1.0, 0.0)


def prompt_tail(state: PolicyState, region: str, obs: RegionObservation, now: float) -> float | None:
    """The prompts' p95 as a multiple of their mean, request-weighted over the windows of the last
    LENGTH_MEMORY_SECONDS (like the spread); None until a prompt-length histogram has been seen. The
    capacity model sizes the own prefill's tail with it (CapacityProfile.steady_state): prefill-heavy
    lengths clipped at a context limit have a p95 of ~3.6x their mean at a spread an exponential has."""
    windows = state.prompt_tails.setdefault(region, [])
    requests, mean, p95 = obs.requests_observed or 0.0, obs.mean_prompt_tokens, obs.prompt_tokens_p95
    if requests > 0 and mean and p95:
        windows.append((now, requests, p95 / mean))
    del windows[: sum(1 for at, _, _ in windows if at < now - LENGTH_MEMORY_SECONDS)]
    total = sum(n for _, n, _ in windows)
    return sum(n * ratio for _, n, ratio in windows) / total if total > 0 else None


def sizing_lengths(state: PolicyState, region: str, obs: RegionObservation, profile: CapacityProfile | None,
                   now: float) -> tuple[float, float]:
    """Mean prompt and output lengths to size with: the longest mean prompt of the last
    LENGTH_MEMORY_SECONDS (pooled over enough requests, see _longest_pooled_prompt), the current mean
    output. The mix of prompts shifts (a trace's long-prompt phase comes back minutes later), and a fleet
    shrunk for the short-prompt phase meets the long one with a cold start to wait for. Sizing for the
    memory's average instead cost half the replica-hours on the bursty dev scenarios but dropped the
    held-out daily Mooncake scenarios from ~99% to 84-86% within budget (docs/autoscaling.md).
    (Remembering outputs too cost replica-hours and bought nothing in the benchmark.)"""
    windows = state.prompt_tokens.setdefault(region, [])
    uncached, requests = _uncached_prompt(obs), obs.requests_observed or 0.0
    if uncached is not None and requests > 0:
        windows.append((now, uncached, requests))
    del windows[: sum(1 for at, _, _ in windows if at < now - LENGTH_MEMORY_SECONDS)]
    prompt, output = mean_lengths(obs, profile)
    return (_longest_pooled_prompt(windows, obs.window_seconds) or prompt), output
