"""Request traces: the Request, rate/token scaling, sessions, synthetic bursts (files: trace_files.py).

A trace is a list of Request sorted by arrival (seconds from the trace start).

A request may name its prompt's blocks (`prefix`: chained block hashes, as the runtime's prefix cache names
them, kv_cache.chain_hashes: each hash covers its block and everything before it, so equal hashes mean
equal prefixes). The Mooncake trace carries them (`hash_ids`, 512-token blocks); traces without them can be
given multi-turn sessions (`with_sessions`) whose prompts extend an earlier turn of the same session.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Request:
    arrival: float  # seconds since the trace start
    prompt_tokens: int
    output_tokens: int
    region: str = "default"
    prefix: tuple[int, ...] = ()  # chained hashes of the prompt's blocks (empty: nothing shared with others)
    block_tokens: int = 16  # tokens per block of `prefix` (the runtime's --block-size by default)


_ROOT = 0x5105E7E  # the runtime's chain root (kv_cache._ROOT_HASH); any constant works, it only salts


def chain_ids(block_ids: Iterable[int], root: int = _ROOT) -> tuple[int, ...]:
    """Chained hashes of a sequence of block ids, like the runtime chains its blocks' tokens."""
    out, parent = [], root
    for block in block_ids:
        parent = hash((parent, block))
        out.append(parent)
    return tuple(out)


def scale_rate(requests: list[Request], factor: float, seed: int = 0) -> list[Request]:
    """`factor` times the arrival rate with the same shape over time.

    factor > 1 superimposes ceil(factor) copies of the trace, each thinned to factor/ceil(factor) and
    shifted by a random sub-second offset (so copies do not arrive in lockstep); factor < 1 thins. Each copy
    is another population of users: its prefixes are salted, so copies share no blocks with one another."""
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
                prefix = request.prefix if copy == 0 else tuple(hash((copy, h)) for h in request.prefix)
                out.append(replace(request, arrival=request.arrival + offset, prefix=prefix))
    out.sort(key=lambda r: r.arrival)
    return out


def scale_tokens(requests: list[Request], factor: float, max_model_len: int | None = None) -> list[Request]:
    """Prompt and output lengths times `factor` (at least 1), clipped so prompt + output <= max_model_len.
    Blocks scale with the prompt (a 512-token Mooncake block at 1/32 is a 16-token block, the runtime's)."""
    out = []
    for request in requests:
        prompt = max(1, round(request.prompt_tokens * factor))
        output = max(1, round(request.output_tokens * factor))
        if max_model_len is not None and prompt + output > max_model_len:
            output = min(output, max(1, max_model_len // 4))
            prompt = max(1, max_model_len - output)
        block = max(1, round(request.block_tokens * factor))
        prefix = request.prefix[: -(-prompt // block)]
        out.append(replace(request, prompt_tokens=prompt, output_tokens=output, prefix=prefix, block_tokens=block))
    return out


def without_prefixes(requests: list[Request]) -> list[Request]:
    """The same requests sharing nothing: the control for prefix caching and routing."""
    return [replace(r, prefix=()) for r in requests]


def with_sessions(requests: list[Request], continue_share: float = 0.5, max_gap: float = 600.0,
                  block_tokens: int = 16, seed: int = 0) -> list[Request]:
    """Give a trace without block hashes multi-turn sessions, keeping every arrival and length as it is.

    Each request continues, with probability `continue_share`, a session whose last turn arrived at most
    `max_gap` seconds before and whose context (prompt + output) fits in this prompt: the prompt then
    starts with that context (the conversation so far) and extends it. Otherwise it opens a new session.
    A session is a stream of blocks; a turn's prompt is its first prompt_tokens of it."""
    rng = random.Random(seed)
    open_sessions: deque[tuple[float, int, int]] = deque()  # (last arrival, session id, context tokens)
    out, sessions = [], 0
    for request in requests:
        while open_sessions and request.arrival - open_sessions[0][0] > max_gap:
            open_sessions.popleft()
        session = None
        if rng.random() < continue_share:
            fits = [i for i, (_, _, context) in enumerate(open_sessions) if context <= request.prompt_tokens]
            if fits:
                session = open_sessions[rng.choice(fits)]
                open_sessions.remove(session)
        ident = session[1] if session else sessions
        sessions += session is None
        stream = chain_ids(range(-(-request.prompt_tokens // block_tokens)), root=hash((0x5E55, seed, ident)))
        out.append(replace(request, prefix=stream, block_tokens=block_tokens))
        open_sessions.append((request.arrival, ident, request.prompt_tokens + request.output_tokens))
    return out


def time_slice(requests: list[Request], start: float, end: float) -> list[Request]:
    """Requests arriving in [start, end), re-based to start at 0."""
    return [replace(r, arrival=r.arrival - start) for r in requests if start <= r.arrival < end]


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
