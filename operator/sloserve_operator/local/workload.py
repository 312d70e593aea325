"""What `sloserve load` sends: arrival schedules (constant, steps, a shared trace slice); prompts are
load_client.make_prompt.

An Arrival is when (seconds after the start) a request is sent, with its prompt and output length. Trace
slices are scaled down to what a CPU fleet can take: time compressed by `speedup`, rate scaled by
`rate_scale`, token counts scaled and capped, all seeded so a run can be repeated.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sloserve_operator.simulate.trace_files import load_trace
from sloserve_operator.simulate.traces import scale_rate, scale_tokens, time_slice


@dataclass(frozen=True)
class Arrival:
    at: float  # seconds after the start of the run
    prompt_tokens: int
    max_tokens: int


def _times(rate: float, start: float, seconds: float, rng: random.Random | None) -> Iterator[float]:
    """Arrival times in [start, start + seconds): evenly spaced, or Poisson when rng is given."""
    if rate <= 0:
        return
    t = start + (rng.expovariate(rate) if rng else 0.5 / rate)
    while t < start + seconds:
        yield t
        t += rng.expovariate(rate) if rng else 1.0 / rate


def step_schedule(steps: list[tuple[float, float]], *, prompt_tokens: int, max_tokens: int,
                  poisson: bool = False, seed: int = 0) -> list[Arrival]:
    """steps: (rate per second, seconds) in order; rate 0 is a pause."""
    rng = random.Random(seed) if poisson else None
    arrivals: list[Arrival] = []
    start = 0.0
    for rate, seconds in steps:
        arrivals += [Arrival(t, prompt_tokens, max_tokens) for t in _times(rate, start, seconds, rng)]
        start += seconds
    return arrivals


def parse_steps(text: str) -> list[tuple[float, float]]:
    """"2:30,8:60,1:30" -> [(2, 30), (8, 60), (1, 30)] (rate per second : seconds)."""
    steps = []
    for part in text.split(","):
        try:
            rate, seconds = part.split(":")
            steps.append((float(rate), float(seconds)))
        except ValueError:
            raise ValueError(f"bad step {part!r}: use RATE:SECONDS, e.g. 2:30,8:60") from None
        if steps[-1][0] < 0 or steps[-1][1] <= 0:
            raise ValueError(f"bad step {part!r}: rate must be >= 0 and seconds > 0")
    return steps


def ramp_steps(rate: float, step_to: float, duration: float, count: int) -> list[tuple[float, float]]:
    """`count` equal-length steps from `rate` to `step_to` over `duration` seconds."""
    if count <= 1:
        return [(step_to, duration)]
    return [(rate + (step_to - rate) * i / (count - 1), duration / count) for i in range(count)]


def trace_schedule(path: Path | str, *, start: float, duration: float, speedup: float = 1.0,
                   rate_scale: float = 1.0, token_scale: float = 1.0, max_prompt_tokens: int = 512,
                   max_output_tokens: int = 128, seed: int = 0) -> list[Arrival]:
    """A slice [start, start + duration) of trace time, replayed `speedup` times faster, at `rate_scale`
    times its rate, with token counts scaled and capped. Uses the simulator's trace loaders and scalers, so
    `bench/live.py` sends exactly the requests it asks the simulator about (see `trace_requests`)."""
    return [Arrival(r.arrival, r.prompt_tokens, r.output_tokens) for r in trace_requests(
        path, start=start, duration=duration, speedup=speedup, rate_scale=rate_scale, token_scale=token_scale,
        max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens, seed=seed)]


def trace_requests(path: Path | str, *, start: float, duration: float, speedup: float = 1.0,
                   rate_scale: float = 1.0, token_scale: float = 1.0, max_prompt_tokens: int = 512,
                   max_output_tokens: int = 128, seed: int = 0) -> list:
    """The slice as simulator Requests (arrival seconds after the slice start, on the replay clock)."""
    from dataclasses import replace

    requests = time_slice(load_trace(path, seed=seed), start, start + duration)
    if rate_scale != 1.0:
        requests = scale_rate(requests, rate_scale, seed=seed)
    requests = scale_tokens(requests, token_scale)
    return [replace(r, arrival=r.arrival / speedup,
                    prompt_tokens=min(max(r.prompt_tokens, 8), max_prompt_tokens),
                    output_tokens=min(r.output_tokens, max_output_tokens)) for r in requests]
