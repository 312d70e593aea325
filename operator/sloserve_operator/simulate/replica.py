"""One simulated replica: continuous batching with chunked prefill, step time from a CapacityProfile.

Each engine step decodes one token for every running sequence and spends the rest of the
maxBatchedTokens budget on prompt chunks, first come first served; its duration is the profile's
base + per_prefill_token * chunk tokens + per_decode_seq * decoding sequences + per_attended_token *
context attended (each chunk token attends to its prefix, each decoding sequence to its whole context).
Admission is bounded by maxBatchSize; the rest waits in the replica's queue (KV-cache capacity is not
modelled as a limit on admission).

With a KV pool (`kv_cache_tokens`), the replica keeps a prefix cache (prefix_cache.py) like the runtime's: at
admission a request's longest cached run of leading blocks is taken back and its prefill starts after it
(its chunks still attend to the whole prefix); when its prefill completes its full prompt blocks are cached,
evicting least recently used blocks beyond the pool minus what running sequences hold (the prompts still
prefilling and the tokens decoded so far; decoding sequences' prompt blocks are counted once, in the cache).
Queried and hit prompt tokens are reported like the runtime's sloserve:prefix_cache_queries/hits.

With an admission limit (spec.admission, as the runtime's --admission-limit-ms), the replica runs the runtime's
own gate (sloserve_runtime/server/admission.py: AdmissionGate, pure, here on the simulated clock): expected
TTFT = a * (prompt tokens admitted ahead whose first token has not come + its own) + b * (sequences running),
a and b fitted by decayed least squares to this replica's observed TTFTs, starting from a calibration prefill
(a lone 256-token prefill on the profile, as the runtime measures one at start-up); an idle replica always
admits. `submit` refuses a request whose expected TTFT exceeds the limit; the fleet then tries its other
serving replicas, as local mode's router retries a 429 elsewhere, and once every one has refused the refusal
is recorded (a miss and demand) and the request is gone, as a 429 is for a client. Each first token is an
observation, timed from the moment the replica received the request (`submit`'s `now`), as the runtime times it.

Simulated event by event, not step by step: while the batch composition does not change, consecutive steps
differ only by the context the decoders attend to, which grows by one token per sequence per step, so a run
of k steps is applied at once (until a prefill or a sequence finishes, a new second starts, or the caller's
horizon is reached; with attention, a step carrying a prefill chunk runs alone, and a decode run is cut
before its step time drifts 2%). Per-request ITL is exact all the same: all decoding sequences share every
step, so counting over-budget steps on the replica and diffing the counter between a sequence's first and
last token gives that sequence's number of slow gaps.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from sloserve_runtime.server.admission import CALIBRATION_PROMPT_TOKENS, AdmissionGate

from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.simulate.prefix_cache import PrefixCache
from sloserve_operator.simulate.traces import Request


@dataclass(eq=False)
class Sequence:
    request: Request
    prefill_left: int
    first_token: float | None = None
    finish_step: int = 0
    join_over: int = 0
    join_step: int = 0
    key: str = ""  # its id in the admission gate's ledger


class Recorder(Protocol):
    def ttft(self, region: str, time: float, value: float) -> None: ...
    def itl(self, region: str, time: float, value: float, count: int) -> None: ...
    def finished(self, region: str, time: float, request: Request, ttft: float, gaps: int, slow_gaps: int) -> None: ...
    def prefix_cache(self, region: str, time: float, queried: int, hit: int) -> None: ...
    def refused(self, region: str, time: float, request: Request) -> None: ...


class ReplicaEngine:
    def __init__(self, profile: CapacityProfile, region: str, itl_budget: float, recorder: Recorder,
                 clock: float = 0.0, kv_cache_tokens: float | None = None,
                 admission_limit: float | None = None) -> None:
        self.profile = profile
        self._gate_now = clock  # the simulated time the gate reads (its injected clock)
        self.gate: AdmissionGate | None = None  # None: admit everything
        if admission_limit is not None:
            self.gate = AdmissionGate(admission_limit, clock=lambda: self._gate_now)
            self.gate.calibrate(CALIBRATION_PROMPT_TOKENS / self._lone_prefill_seconds(CALIBRATION_PROMPT_TOKENS))
        self._submitted = 0
        self.kv_cache_tokens = kv_cache_tokens
        self.cache = PrefixCache() if kv_cache_tokens else None
        self.prefix_queried = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0  # of those, found cached
        self.region = region
        self.itl_budget = itl_budget
        self.recorder = recorder
        self.clock = clock
        # Steps take this many times the profile's time: replicas sharing a machine's cores (fleet.SharedHost).
        self.slowdown = 1.0
        self.waiting: deque[Sequence] = deque()
        self.prefilling: list[Sequence] = []
        self.decoding: list[tuple[int, int, Sequence]] = []  # heap of (finish_step, tiebreak, seq)
        self.steps = 0
        self.slow_steps = 0
        self._tiebreak = 0
        # sum over decoding sequences of (prompt tokens - step they joined at): their summed context at
        # step count S is this + S * len(decoding)
        self._context_offset = 0

    @property
    def outstanding(self) -> int:
        return len(self.waiting) + len(self.prefilling) + len(self.decoding)

    @property
    def running(self) -> int:
        return len(self.prefilling) + len(self.decoding)

    @property
    def queued_prefill_tokens(self) -> int:
        """Prompt tokens still to prefill: queued prompts whole, admitted ones what they have left."""
        return sum(seq.prefill_left for seq in self.waiting) + sum(seq.prefill_left for seq in self.prefilling)

    def _lone_prefill_seconds(self, tokens: int) -> float:
        """Seconds the profile gives one prompt of `tokens` alone on the replica (chunked, attending to its
        prefix): what the runtime's start-up calibration measures."""
        seconds, done = 0.0, 0
        while done < tokens:
            chunk = min(max(self.profile.max_batched_tokens, 1), tokens - done)
            seconds += self.profile.step.seconds(chunk, 0, chunk * (done + (chunk + 1) / 2))
            done += chunk
        return max(seconds, 1e-9)

    def expected_ttft(self, request: Request, now: float) -> float | None:
        """The admission gate's expected TTFT for `request` arriving at `now`; None without admission."""
        if self.gate is None:
            return None
        self._gate_now = now
        return self.gate.expected_ttft(request.prompt_tokens, self.running)

    def submit(self, request: Request, now: float, record_refusal: bool = True) -> bool:
        """Queue `request`; False when admission turns it away, recorded as refused unless the caller will
        try another replica (`record_refusal` False, the router's retry)."""
        seq = Sequence(request, request.prompt_tokens)
        if self.gate is not None:
            self._gate_now = now
            if self.gate.over_limit(request.prompt_tokens, self.running) is not None:
                if record_refusal:
                    self.recorder.refused(self.region, now, request)
                return False
            self._submitted += 1
            seq.key = str(self._submitted)
            self.gate.admit(seq.key, request.prompt_tokens, self.running)
        if self.outstanding == 0:
            self.clock = max(self.clock, now)
        self.waiting.append(seq)
        return True

    def advance(self, until: float) -> None:
        """Run steps until the clock reaches `until` (the last step may end a little after it)."""
        guard = 0
        while self.clock < until:
            self._admit()
            if not self.prefilling and not self.decoding:
                self.clock = until
                return
            self._segment(until)
            guard += 1
            if guard > 10_000_000:  # a bug, not a workload: fail loudly instead of spinning
                raise RuntimeError("replica simulation did not advance")

    def _admit(self) -> None:
        while self.waiting and self.running < self.profile.max_batch_size:
            seq = self.waiting.popleft()
            if self.cache is not None:
                request = seq.request
                hit = self.cache.match(request.prefix, request.prompt_tokens, request.block_tokens)
                seq.prefill_left = request.prompt_tokens - hit
                self.prefix_queried += request.prompt_tokens
                self.prefix_hits += hit
                self.recorder.prefix_cache(self.region, self.clock, request.prompt_tokens, hit)
            self.prefilling.append(seq)

    def _cache_prompt(self, seq: Sequence) -> None:
        if self.cache is None or not seq.request.prefix:
            return
        held = sum(s.request.prompt_tokens for s in self.prefilling)
        held += sum(self.steps - s.join_step for _, _, s in self.decoding)
        self.cache.insert(seq.request.prefix, seq.request.prompt_tokens, seq.request.block_tokens,
                          (self.kv_cache_tokens or 0) - held)

    def _segment(self, until: float) -> None:
        step_model = self.profile.step
        decoding = len(self.decoding)
        budget = max(self.profile.max_batched_tokens - decoding, 0)
        chunks: list[tuple[Sequence, int]] = []
        for seq in self.prefilling:
            if budget <= 0:
                break
            chunk = min(seq.prefill_left, budget)
            chunks.append((seq, chunk))
            budget -= chunk
        prefill_tokens = sum(chunk for _, chunk in chunks)
        per_attended = step_model.per_attended_token_seconds
        attended = self._context_offset + self.steps * decoding + sum(
            chunk * (seq.request.prompt_tokens - seq.prefill_left + (chunk + 1) / 2) for seq, chunk in chunks)
        duration = step_model.seconds(prefill_tokens, decoding, attended) * self.slowdown
        # each following step is this much longer: decoders' contexts grow
        growth = per_attended * decoding * self.slowdown
        limits = [max(1, math.ceil((until - self.clock) / duration)),
                  max(1, math.ceil((math.floor(self.clock) + 1 - self.clock) / duration))]
        # A prompt keeps the same chunk size for as many whole chunks as it has left (its last may be smaller).
        limits.extend(max(1, seq.prefill_left // chunk) for seq, chunk in chunks)
        if self.decoding:
            limits.append(self.decoding[0][0] - self.steps)
        if per_attended > 0 and chunks:
            limits.append(1)  # the next chunk sits further into its prompt: a different step
        if growth > 0:
            limits.append(max(1, int(0.02 * duration / growth)))
        count = max(1, min(limits))
        mean_duration = duration + growth * (count - 1) / 2
        self.clock += count * mean_duration
        self.steps += count
        self.slow_steps += _steps_over(self.itl_budget, duration, growth, count)
        if decoding:
            self.recorder.itl(self.region, self.clock, mean_duration, decoding * count)
        while self.decoding and self.decoding[0][0] <= self.steps:
            _, _, seq = heapq.heappop(self.decoding)
            self._context_offset -= seq.request.prompt_tokens - seq.join_step
            self._finish(seq)
        done = []
        for seq, chunk in chunks:
            seq.prefill_left -= chunk * count
            if seq.prefill_left <= 0:
                done.append(seq)
        for seq in done:
            self.prefilling.remove(seq)
            self._cache_prompt(seq)
            seq.first_token = self.clock
            if self.gate is not None:
                self._gate_now = self.clock
                self.gate.first_token(seq.key)
            self.recorder.ttft(self.region, self.clock, self.clock - seq.request.arrival)
            if seq.request.output_tokens <= 1:
                self._finish(seq)
            else:
                seq.finish_step = self.steps + seq.request.output_tokens - 1
                seq.join_over = self.slow_steps
                seq.join_step = self.steps
                self._context_offset += seq.request.prompt_tokens - seq.join_step
                self._tiebreak += 1
                heapq.heappush(self.decoding, (seq.finish_step, self._tiebreak, seq))

    def _finish(self, seq: Sequence) -> None:
        gaps = seq.request.output_tokens - 1
        slow = self.slow_steps - seq.join_over if gaps > 0 else 0
        ttft = (seq.first_token if seq.first_token is not None else self.clock) - seq.request.arrival
        self.recorder.finished(self.region, self.clock, seq.request, ttft, gaps, slow)


def _steps_over(budget: float, first: float, growth: float, count: int) -> int:
    """How many of `count` steps lasting first, first + growth, first + 2 growth, ... exceed `budget`."""
    if first > budget:
        return count
    if growth <= 0:
        return 0
    within = math.floor((budget - first) / growth) + 1  # steps j with first + j * growth <= budget
    return max(count - within, 0)
