"""Request traces: loaders for the shared Azure and Mooncake files, rate/token scaling, synthetic bursts.

A trace is a list of Request sorted by arrival (seconds from the trace start). Bad files fail with the
file name and line number rather than producing a partial trace.
"""

from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds since the trace start
    prompt_tokens: int
    output_tokens: int
    region: str = "default"


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""


def load_azure(path: str | Path) -> list[Request]:
    """Azure LLM inference trace CSV: TIMESTAMP,ContextTokens,GeneratedTokens (Splitwise, ISCA'24)."""
    path = Path(path)
    requests: list[Request] = []
    start: datetime | None = None
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or [h.strip() for h in header[:3]] != ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise TraceError(f"{path}:1: expected header TIMESTAMP,ContextTokens,GeneratedTokens, got {header}")
        for line, row in enumerate(reader, start=2):
            try:
                stamp = datetime.fromisoformat(row[0].strip()[:26])
                prompt, output = int(row[1]), int(row[2])
            except (IndexError, ValueError) as error:
                raise TraceError(f"{path}:{line}: cannot parse {row!r}: {error}") from error
            start = start or stamp
            requests.append(Request((stamp - start).total_seconds(), max(prompt, 1), max(output, 1)))
    requests.sort(key=lambda r: r.arrival)
    return requests


def load_mooncake(path: str | Path, seed: int = 0) -> list[Request]:
    """Mooncake FAST'25 JSONL. Timestamps come in ~3 s ticks; requests sharing a tick are spread uniformly
    (seeded) over the tick, since the trace does not record finer arrival times."""
    path = Path(path)
    raw: list[tuple[float, int, int]] = []
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
                raw.append((float(item["timestamp"]) / 1000.0, int(item["input_length"]), int(item["output_length"])))
            except (ValueError, KeyError, TypeError) as error:
                raise TraceError(f"{path}:{line}: expected timestamp/input_length/output_length: {error}") from error
    if not raw:
        raise TraceError(f"{path}: no requests")
    ticks = sorted({t for t, _, _ in raw})
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False) if b > a]
    tick = min(gaps) if gaps else 3.0
    rng = random.Random(seed)
    requests = [Request(t + rng.random() * tick, max(p, 1), max(o, 1)) for t, p, o in raw]
    requests.sort(key=lambda r: r.arrival)
    return requests


def load_trace(path: str | Path, seed: int = 0) -> list[Request]:
    """By extension: .csv -> Azure, .jsonl -> Mooncake."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return load_azure(path)
    if suffix in (".jsonl", ".json"):
        return load_mooncake(path, seed=seed)
    raise TraceError(f"{path}: unknown trace format (expected .csv Azure or .jsonl Mooncake)")


def scale_rate(requests: list[Request], factor: float, seed: int = 0) -> list[Request]:
    """`factor` times the arrival rate with the same shape over time.

    factor > 1 superimposes ceil(factor) copies of the trace, each thinned to factor/ceil(factor) and
    shifted by a random sub-second offset (so copies do not arrive in lockstep); factor < 1 thins."""
    if factor <= 0:
        raise ValueError("rate scale must be positive")
    copies = max(1, math.ceil(factor))
    keep = factor / copies
    rng = random.Random(seed)
    out = []
    for copy in range(copies):
        offset = 0.0 if copy == 0 else rng.random()
        for request in requests:
            if rng.random() < keep:
                out.append(replace(request, arrival=request.arrival + offset))
    out.sort(key=lambda r: r.arrival)
    return out


def scale_tokens(requests: list[Request], factor: float, max_model_len: int | None = None) -> list[Request]:
    """Prompt and output lengths times `factor` (at least 1), clipped so prompt + output <= max_model_len."""
    out = []
    for request in requests:
        prompt = max(1, round(request.prompt_tokens * factor))
        output = max(1, round(request.output_tokens * factor))
        if max_model_len is not None and prompt + output > max_model_len:
            output = min(output, max(1, max_model_len // 4))
            prompt = max(1, max_model_len - output)
        out.append(replace(request, prompt_tokens=prompt, output_tokens=output))
    return out


def time_slice(requests: list[Request], start: float, end: float) -> list[Request]:
    """Requests arriving in [start, end), re-based to start at 0."""
    return [replace(r, arrival=r.arrival - start) for r in requests if start <= r.arrival < end]


def assign_regions(requests: list[Request], weights: dict[str, float], seed: int = 0) -> list[Request]:
    """Spread requests over regions at random with the given weights (traces carry no region)."""
    rng = random.Random(seed)
    names, values = list(weights), list(weights.values())
    return [replace(r, region=rng.choices(names, values)[0]) for r in requests]


def synthetic_bursty(duration: float, base_rate: float, burst_rate: float, burst_every: float = 600.0,
                     burst_length: float = 120.0, prompt_tokens: int = 512, output_tokens: int = 128,
                     seed: int = 0) -> list[Request]:
    """Poisson arrivals at `base_rate` with periodic bursts at `burst_rate` (ramping up over 30 s);
    lengths drawn log-normally around the given means."""
    rng = random.Random(seed)
    requests = []
    t = 0.0
    peak = max(base_rate, burst_rate)
    while True:
        t += rng.expovariate(peak)  # thinning: candidate arrivals at the peak rate, kept with rate(t)/peak
        if t >= duration:
            break
        phase = t % burst_every
        in_burst = burst_every - burst_length <= phase
        ramp = min(1.0, (phase - (burst_every - burst_length)) / 30.0) if in_burst else 0.0
        rate = base_rate + (burst_rate - base_rate) * ramp
        if rng.random() < rate / peak:
            prompt = max(1, int(rng.lognormvariate(math.log(prompt_tokens) - 0.32, 0.8)))
            output = max(1, int(rng.lognormvariate(math.log(output_tokens) - 0.32, 0.8)))
            requests.append(Request(t, prompt, output))
    return requests


def synthetic_wave(duration: float, low_rate: float, high_rate: float, period: float = 1800.0,
                   prompt_tokens: int = 512, output_tokens: int = 128, seed: int = 0) -> list[Request]:
    """Poisson arrivals whose rate swings smoothly between low and high over `period` seconds (a compressed
    daily cycle): the load shape autoscaling exists for, slower than a cold start but far from flat."""
    rng = random.Random(seed)
    requests = []
    t = 0.0
    peak = max(low_rate, high_rate)
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            break
        rate = low_rate + (high_rate - low_rate) * (0.5 - 0.5 * math.cos(2 * math.pi * t / period))
        if rng.random() < rate / peak:
            prompt = max(1, int(rng.lognormvariate(math.log(prompt_tokens) - 0.32, 0.8)))
            output = max(1, int(rng.lognormvariate(math.log(output_tokens) - 0.32, 0.8)))
            requests.append(Request(t, prompt, output))
    return requests


def per_minute_rates(requests: list[Request]) -> list[float]:
    """Arrivals per second averaged over each whole minute (for peak provisioning and plots)."""
    if not requests:
        return []
    minutes = int(requests[-1].arrival // 60) + 1
    counts = [0] * minutes
    for request in requests:
        counts[int(request.arrival // 60)] += 1
    return [c / 60.0 for c in counts]
