"""Capacity profiles: how much load one replica carries within latency budgets.

A profile is written by `sloserve profile` (a load sweep against a running runtime) or shipped under
profiles/. It holds the measured points of the sweep (per concurrency: TTFT/ITL percentiles, throughput)
and a fitted step-time model of continuous batching,

    step_seconds = base + per_prefill_token * prefill_tokens_in_step + per_decode_seq * sequences_decoding
                   + per_attended_token * attended_tokens

where `attended_tokens` sums, over the step's query tokens, the context each attends to (a prompt token at
position p attends p+1 tokens, a decoding sequence its whole context). That last term is attention, the
part of a step that grows with context length: on two CPU cores a 3,800-token prompt takes 3.9 s where the
linear terms say 1.0 s, and a chunk late in a long prompt makes its step several times longer. It is optional (0 when a
profile does not give it, e.g. one derived from published figures that have no context sweep).

which is what both the policy (to size the fleet before latency degrades) and the simulator (as the
physics of every simulated replica) use. One model, two users: the simulator's numbers stay honest only
because the policy gets no private knowledge beyond this file.

JSON schema (`schema`: "sloserve.capacity-profile/v1"):

    {"schema": ..., "model": str, "hardware": str, "engine": str, "source": str (how it was obtained),
     "maxBatchSize": int, "maxBatchedTokens": int, "coldStartSeconds": float,
     "step": {"baseSeconds": float, "perPrefillTokenSeconds": float, "perDecodeSeqSeconds": float,
              "perAttendedTokenSeconds": float (optional, default 0)},
     "workload": {"promptTokens": int, "outputTokens": int},      # of the sweep
     "fitError": float (optional: the step model's RMS relative error over the points it was fitted to),
     "points": [{"concurrency": int, "ttftP50": s, "ttftP95": s, "itlP50": s, "itlP95": s,
                 "outputTokensPerSecond": float, "requestsPerSecond": float}, ...]}
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

SCHEMA = "sloserve.capacity-profile/v1"
DEFAULT_COLD_START_SECONDS = 120.0
# The policy observes mean prompt lengths; the ITL p95 is set by steps carrying a prefill chunk, sized for a
# prompt this many times the mean (chunks are whole when tail prompts exceed the chunk budget).
PROMPT_TAIL_FACTOR = 2.5
# Squared coefficient of variation of prompt lengths assumed when none is observed: exponential lengths.
EXPONENTIAL_SPREAD = 1.0
# The quantile of prompt lengths a `prompt_tail` names (the runtime's prompt-length histogram gives it): the
# own prefill is an exponential whose PROMPT_TAIL_QUANTILE is that prompt's prefill time.
PROMPT_TAIL_QUANTILE = 0.95
RHO_MAX = 0.98  # utilisation at which a replica is treated as overloaded (queues grow without bound)


@dataclass(frozen=True)
class StepModel:
    """Seconds one engine step takes: linear in its prefill tokens, its decoding batch and the context its
    query tokens attend to."""

    base_seconds: float
    per_prefill_token_seconds: float
    per_decode_seq_seconds: float
    per_attended_token_seconds: float = 0.0

    def seconds(self, prefill_tokens: float, decoding: float, attended: float = 0.0) -> float:
        return (self.base_seconds + self.per_prefill_token_seconds * prefill_tokens
                + self.per_decode_seq_seconds * decoding + self.per_attended_token_seconds * attended)

    def effective(self, prompt_tokens: float, output_tokens: float,
                  prompt_spread: float = EXPONENTIAL_SPREAD) -> tuple[float, float]:
        """(seconds per prompt token, seconds per decoding sequence) with attention folded in at a
        workload's mean lengths: a prompt of L tokens attends L^2/2 in all, so a prompt token of the
        workload attends E[L^2] / (2 E[L]) = (1 + c^2) / 2 times the mean prompt, c^2 the prompts'
        squared coefficient of variation (`prompt_spread`; 1 for exponential lengths, 1.7 for Mooncake's
        heavy tail, where sizing at 1 left the model 21% optimistic); a decoding sequence attends its
        prompt plus half its output."""
        c = self.per_attended_token_seconds
        return (self.per_prefill_token_seconds + c * prompt_tokens * (1.0 + prompt_spread) / 2.0,
                self.per_decode_seq_seconds + c * (prompt_tokens + output_tokens / 2))


@dataclass(frozen=True)
class ProfilePoint:
    """One point of a load sweep at fixed concurrency."""

    concurrency: int
    ttft_p50: float | None = None
    ttft_p95: float | None = None
    itl_p50: float | None = None
    itl_p95: float | None = None
    output_tokens_per_second: float | None = None
    requests_per_second: float | None = None


_POINT_KEYS = {
    "concurrency": "concurrency", "ttftP50": "ttft_p50", "ttftP95": "ttft_p95", "itlP50": "itl_p50",
    "itlP95": "itl_p95", "outputTokensPerSecond": "output_tokens_per_second",
    "requestsPerSecond": "requests_per_second",
}


@dataclass(frozen=True)
class CapacityProfile:
    """A replica's measured (or derived) capacity; see the module docstring for the JSON layout."""

    model: str
    hardware: str
    step: StepModel
    max_batch_size: int = 64
    max_batched_tokens: int = 4096
    cold_start_seconds: float = DEFAULT_COLD_START_SECONDS
    engine: str = "bundled"
    source: str = ""
    workload_prompt_tokens: int | None = None
    workload_output_tokens: int | None = None
    points: tuple[ProfilePoint, ...] = field(default_factory=tuple)
    # How far the fitted step times were from the measured ones (RMS, relative); None for derived profiles.
    # Not used for sizing: it bounds how much a prediction made from this profile can be trusted.
    fit_error: float | None = None

    # ------------------------------------------------------------ JSON

    @classmethod
    def from_json(cls, data: str | bytes | dict[str, Any]) -> CapacityProfile:
        """Parse a profile; raises ValueError naming the offending field."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as error:
                raise ValueError(f"capacity profile: not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ValueError("capacity profile: expected a JSON object")
        if data.get("schema", SCHEMA) != SCHEMA:
            raise ValueError(f"capacity profile: schema {data.get('schema')!r} is not {SCHEMA!r}")
        step = data.get("step")
        if not isinstance(step, dict):
            raise ValueError("capacity profile: field 'step' (fitted step-time coefficients) is required")
        coefficients = {}
        for key in ("baseSeconds", "perPrefillTokenSeconds", "perDecodeSeqSeconds", "perAttendedTokenSeconds"):
            value = step.get(key, 0.0 if key == "perAttendedTokenSeconds" else None)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 or not math.isfinite(value):
                raise ValueError(f"capacity profile: step.{key} must be a non-negative number, got {value!r}")
            coefficients[key] = float(value)
        if coefficients["baseSeconds"] <= 0:
            raise ValueError("capacity profile: step.baseSeconds must be positive")
        fit_error = data.get("fitError")
        if fit_error is not None and (not isinstance(fit_error, int | float) or isinstance(fit_error, bool)
                                      or fit_error < 0 or not math.isfinite(fit_error)):
            raise ValueError(f"capacity profile: fitError must be a non-negative number, got {fit_error!r}")
        workload = data.get("workload") or {}
        points = []
        for index, raw in enumerate(data.get("points") or []):
            if not isinstance(raw, dict) or not isinstance(raw.get("concurrency"), int):
                raise ValueError(f"capacity profile: points[{index}] needs an integer 'concurrency'")
            points.append(ProfilePoint(**{_POINT_KEYS[k]: v for k, v in raw.items() if k in _POINT_KEYS}))
        try:
            return cls(
                model=str(data.get("model", "")),
                hardware=str(data.get("hardware", "")),
                engine=str(data.get("engine", "bundled")),
                source=str(data.get("source", "")),
                step=StepModel(coefficients["baseSeconds"], coefficients["perPrefillTokenSeconds"],
                               coefficients["perDecodeSeqSeconds"], coefficients["perAttendedTokenSeconds"]),
                max_batch_size=int(data.get("maxBatchSize", 64)),
                max_batched_tokens=int(data.get("maxBatchedTokens", 4096)),
                cold_start_seconds=float(data.get("coldStartSeconds", DEFAULT_COLD_START_SECONDS)),
                workload_prompt_tokens=workload.get("promptTokens"),
                workload_output_tokens=workload.get("outputTokens"),
                points=tuple(points),
                fit_error=None if fit_error is None else float(fit_error),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"capacity profile: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        inverse = {v: k for k, v in _POINT_KEYS.items()}
        optional = {} if self.fit_error is None else {"fitError": self.fit_error}
        return {
            "schema": SCHEMA,
            "model": self.model,
            "hardware": self.hardware,
            "engine": self.engine,
            "source": self.source,
            "maxBatchSize": self.max_batch_size,
            "maxBatchedTokens": self.max_batched_tokens,
            "coldStartSeconds": self.cold_start_seconds,
            "step": {
                "baseSeconds": self.step.base_seconds,
                "perPrefillTokenSeconds": self.step.per_prefill_token_seconds,
                "perDecodeSeqSeconds": self.step.per_decode_seq_seconds,
                "perAttendedTokenSeconds": self.step.per_attended_token_seconds,
            },
            "workload": {"promptTokens": self.workload_prompt_tokens, "outputTokens": self.workload_output_tokens},
            "points": [{inverse[k]: v for k, v in asdict(point).items() if v is not None} for point in self.points],
            **optional,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    # ------------------------------------------------------------ the capacity model

    def step_seconds(self, prefill_tokens: float, decoding: float) -> float:
        return self.step.seconds(prefill_tokens, decoding)

    def steady_state(self, rate: float, prompt_tokens: float, output_tokens: float, quantile: float = 0.95,
                     fleet_size: int = 1, prompt_spread: float = EXPONENTIAL_SPREAD,
                     pooled: bool = False, prompt_tail: float | None = None) -> SteadyState | None:
        """One replica at `rate` requests/s in steady state (None when overloaded): a queueing view of
        continuous batching with chunked prefill.

        - Every step costs `base`, each request a*P of prefill and b*O of decode work (a and b with
          attention folded in at the mean lengths and the prompts' spread, StepModel.effective), so the compute
          utilisation is rho = rate * (aP + bO) and the mean step is base / (1 - rho); the decoding batch
          follows by Little's law (rate * O * mean step) and must stay below maxBatchSize.
        - A decode-only step takes base + b*batch; a step carrying a prefill chunk (the token budget the
          decoders leave) takes longer by that chunk's prefill and attention (_chunk_tail). Once more than
          5% of steps carry a chunk, those set the ITL p95 (the mean step is not added on top: it already
          averages the chunks in).
        - Prefill is a FCFS queue of prompts served chunk by chunk at chunk / chunk-step tokens per second
          (every chunk step pays `base` and the decoders too, which is what limits long-prompt traffic).
          With exponential prompt lengths that queue is M/M/1, whose time in system is exponential with
          mean service / (1 - load): TTFT is that, plus the first decode step, plus the wait for a batch
          slot (Erlang C over the fleet's pooled slots, at `quantile`).
        - `prompt_tail`: the prompts' PROMPT_TAIL_QUANTILE as a multiple of their mean. A prompt's prefill
          grows faster than its length (each chunk pays a step, attention the square of the prefix), so the
          exponential at the mean prompt's prefill puts the own prefill's p95 11-36% too low at low load,
          which the calibration would learn as a factor and carry to high load (docs/autoscaling-history.md,
          "Ninth round"). With it the own prefill is the exponential whose p95 is that prompt's prefill
          (never shorter than the mean's); the queue's wait is unchanged.
        - `pooled`: a load-aware router (least outstanding, the inference gateway's endpoint picker) sends
          each prompt to a replica with little queued, so a prompt waits only when every replica of the
          fleet is busy (Erlang C over `fleet_size` servers, Sakasegawa's approximation), and then behind
          one replica's queue (the per-replica wait: a pick is not a central queue). Unpooled, each replica
          is its own M/M/1 queue, which is what random routing (a Kubernetes Service) gives.
        """
        base = self.step.base_seconds
        prompt = max(prompt_tokens, 1.0)
        output = max(output_tokens, 1.0)
        a, b = self.step.effective(prompt, output, prompt_spread)
        rho = rate * (a * prompt + b * output)
        if rho >= RHO_MAX:
            return None
        step = base / (1.0 - rho)
        batch = rate * output * step
        if batch >= self.max_batch_size:
            return None
        decode_step = base + b * batch
        chunk = max(self.max_batched_tokens - batch, 1.0)
        chunk_step = decode_step + a * chunk
        chunked_share = min(1.0, rate * max(1.0, prompt / chunk) * step)
        itl_p95 = decode_step + self._chunk_tail(chunk, prompt, chunked_share) * min(1.0, chunked_share / 0.05)
        prefill_rate = chunk / chunk_step  # prompt tokens per second while prefilling
        load = rate * prompt / prefill_rate
        if load >= RHO_MAX:
            return None
        service = max(prompt / prefill_rate, decode_step)
        own = service
        if prompt_tail is not None and prompt_tail > 0:
            own = max(service, self._lone_prefill(prompt * prompt_tail, chunk, decode_step)
                      / -math.log(1.0 - PROMPT_TAIL_QUANTILE))
        pool = max(fleet_size, 1)
        slot_wait = _slot_wait(self.max_batch_size * pool, batch * pool, output * step, max(quantile, 0.5))
        servers = pool if pooled else 1
        return SteadyState(batch=batch, itl_p95=itl_p95, ttft_shift=decode_step + slot_wait, prefill_seconds=own,
                           wait_probability=_wait_probability(servers, load),
                           wait_rate=(1.0 - load) / service)

    def _lone_prefill(self, prompt: float, chunk: float, decode_step: float) -> float:
        """Seconds a prompt of `prompt` tokens takes to prefill in `chunk`-token steps beside the decoders:
        a step's decode part per chunk, its prefill tokens, and each token attending to its prefix."""
        step = self.step
        return max(prompt / chunk * decode_step + step.per_prefill_token_seconds * prompt
                   + step.per_attended_token_seconds * prompt * prompt / 2.0, decode_step)

    def _chunk_tail(self, chunk: float, prompt: float, chunked_share: float) -> float:
        """What a prefill chunk adds to the step at the ITL p95, when `chunked_share` of steps carry one.

        Chunks are whole when tail prompts exceed the chunk budget. With attention, a chunk costs more the
        further into its prompt it is: with exponential prompt lengths, the prefix a chunk step sits at is
        itself exponential with the mean prompt as mean (length-biased prompts, uniform position), so the
        step at the p95 of all steps has the prefix at quantile 1 - 0.05 / chunked_share of that."""
        size = min(chunk, prompt * PROMPT_TAIL_FACTOR)
        prefix = prompt * math.log(max(chunked_share / 0.05, 1.0))
        return size * (self.step.per_prefill_token_seconds
                       + self.step.per_attended_token_seconds * (prefix + size / 2))

    def predict(self, rate: float, prompt_tokens: float, output_tokens: float,
                quantile: float = 0.95, fleet_size: int = 1, prompt_spread: float = EXPONENTIAL_SPREAD,
                pooled: bool = False, prompt_tail: float | None = None) -> tuple[float, float, float]:
        """(TTFT at `quantile`, ITL p95, batch) one replica would show at `rate` requests/s; inf when overloaded.

        `quantile` 0.95 is the p95 the budgets name; the SLO objective (say 99% of requests within budget)
        asks for the TTFT at that quantile instead. See steady_state for the model."""
        state = self.steady_state(rate, prompt_tokens, output_tokens, quantile, fleet_size, prompt_spread, pooled,
                                  prompt_tail)
        if state is None:
            return math.inf, math.inf, math.inf
        return state.ttft_quantile(quantile), state.itl_p95, state.batch

    def max_rate_within_budget(self, ttft_budget: float, itl_budget: float, prompt_tokens: float,
                               output_tokens: float, quantile: float = 0.95, fleet_size: int = 1,
                               prompt_spread: float = EXPONENTIAL_SPREAD, pooled: bool = False,
                               prompt_tail: float | None = None) -> float:
        """Requests/s one replica sustains with a `quantile` share of TTFTs within the TTFT budget and the ITL
        p95 within the ITL budget (0 if no rate does)."""

        def fits(rate: float) -> bool:
            state = self.steady_state(rate, prompt_tokens, output_tokens, quantile, fleet_size, prompt_spread, pooled,
                                      prompt_tail)
            return state is not None and state.ttft_within(ttft_budget) >= quantile and state.itl_p95 <= itl_budget

        if not fits(1e-9):
            return 0.0
        prompt, output = max(prompt_tokens, 1.0), max(output_tokens, 1.0)
        a, b = self.step.effective(prompt, output, prompt_spread)
        high = 1.0 / max(a * prompt + b * output, 1e-12)
        low = 0.0
        for _ in range(40):
            middle = (low + high) / 2
            if fits(middle):
                low = middle
            else:
                high = middle
        return low


@dataclass(frozen=True)
class SteadyState:
    """What the capacity model predicts for one replica at one load (CapacityProfile.steady_state).

    TTFT = ttft_shift + own prefill (exponential, mean prefill_seconds) + the wait for the prefill queue
    (none with probability 1 - wait_probability, else exponential with rate wait_rate). With one server per
    queue that sum is the M/M/1 time in system, exponential with rate wait_rate."""

    batch: float  # mean decoding sequences
    itl_p95: float  # seconds
    ttft_shift: float  # seconds every request pays (first decode step, batch-slot wait)
    prefill_seconds: float  # mean of the request's own prefill
    wait_probability: float  # share of requests that find the prefill queue busy
    wait_rate: float  # 1 / mean wait of those that do

    def _tail(self, excess: float) -> float:
        """P(own prefill + queue wait > excess)."""
        if excess <= 0:
            return 1.0
        mu, theta, busy = 1.0 / self.prefill_seconds, self.wait_rate, self.wait_probability
        if abs(theta - mu) <= 1e-9 * mu:
            both = (1.0 + mu * excess) * math.exp(-mu * excess)
        else:
            both = (theta * math.exp(-mu * excess) - mu * math.exp(-theta * excess)) / (theta - mu)
        return (1.0 - busy) * math.exp(-mu * excess) + busy * both

    def ttft_quantile(self, quantile: float) -> float:
        """Bisection on the tail: the sum of two exponentials has no closed-form quantile. At the bracket's
        top, 2 x (both means added) x ln(2 / tail), each part exceeds half of it with at most tail / 2."""
        tail = max(1.0 - quantile, 1e-9)
        low, high = 0.0, 2.0 * (self.prefill_seconds + 1.0 / self.wait_rate) * math.log(2.0 / tail)
        for _ in range(50):
            middle = (low + high) / 2
            if self._tail(middle) > tail:
                low = middle
            else:
                high = middle
        return self.ttft_shift + high

    def ttft_within(self, budget: float) -> float:
        """Share of requests whose TTFT is within `budget`."""
        if budget <= self.ttft_shift:
            return 0.0
        return 1.0 - self._tail(budget - self.ttft_shift)


def _wait_probability(servers: int, load: float) -> float:
    """Probability an arrival waits in an M/M/c queue at per-server load `load`: Sakasegawa's approximation
    of Erlang C (exact for c = 1: the load itself)."""
    if load <= 0:
        return 0.0
    return min(load ** (math.sqrt(2.0 * (servers + 1)) - 1.0), 1.0)


def _slot_wait(slots: int, busy: float, hold_seconds: float, quantile: float) -> float:
    """`quantile` of the wait for one of `slots` batch slots when `busy` of them are held on average, each for
    `hold_seconds`: M/M/c with P(wait) by Sakasegawa's approximation (O(1), good for large c) and waits
    exponential with rate (slots - busy) / hold."""
    if busy <= 0:
        return 0.0
    p_wait = _wait_probability(slots, busy / slots)
    tail = 1.0 - quantile
    if p_wait <= tail:
        return 0.0
    return math.log(p_wait / tail) * hold_seconds / (slots - busy)


def load_shipped(name: str) -> CapacityProfile:
    """A profile shipped in sloserve_operator/profiles/ by file stem, e.g. 'smollm2-135m-cpu'."""
    try:
        text = resources.files("sloserve_operator").joinpath("profiles", f"{name}.json").read_text()
    except FileNotFoundError as error:
        raise ValueError(f"no shipped capacity profile named {name!r}; see {', '.join(shipped_names())}") from error
    return CapacityProfile.from_json(text)


def shipped_names() -> list[str]:
    folder = resources.files("sloserve_operator").joinpath("profiles")
    return sorted(item.name.removesuffix(".json") for item in folder.iterdir() if item.name.endswith(".json"))


def load_profile(name_or_path: str) -> CapacityProfile:
    """A shipped profile by name, or a JSON file by path."""
    if name_or_path.endswith(".json") or "/" in name_or_path:
        with open(name_or_path, encoding="utf-8") as handle:
            return CapacityProfile.from_json(handle.read())
    return load_shipped(name_or_path)
