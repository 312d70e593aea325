"""`sloserve profile`: measure one replica's capacity with a load sweep and write a CapacityProfile.

Two sweeps against a running runtime's streaming /v1/completions (any OpenAI-compatible server that
streams and honours vLLM's `ignore_eos`):

1. Prefill: at concurrency 1, prompts of several lengths with max_tokens=1; TTFT is one prefill step.
2. Decode: a closed-loop concurrency sweep (c workers, each sending its next request when the previous
   ends) with a fixed prompt and output length; per level the TTFT/ITL percentiles and throughput. The
   median inter-token gap at concurrency c is a decode step with c sequences.

The step model (capacity.StepModel: base + per_prefill_token * prefill + per_decode_seq * batch) is the
non-negative least-squares fit of both sweeps' points. Prompts are distinct from their first word, so the
prefix cache does not shorten prefill. Requests go through load_client.LoadClient (the client `sloserve load`
uses), so both commands report the same (nearest-rank) percentiles from the same samples. The result is the capacity.py JSON, or a ConfigMap holding it that
spec.scaling.profile can reference.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.load_client import LoadClient, RequestResult, make_prompt, percentile, served_model


class ProfileError(RuntimeError):
    """The sweep could not produce a trustworthy profile (server errors, no tokens streamed...)."""


@dataclass
class LevelResult:
    concurrency: int
    results: list[RequestResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def complete(client: LoadClient, prompt: str, max_tokens: int) -> RequestResult:
    """One request of the sweep (greedy, ignore_eos: exactly max_tokens out); ProfileError when it failed."""
    result = await client.complete(prompt, max_tokens, extra={"ignore_eos": True})
    if not result.ok:
        raise ProfileError(f"HTTP {result.status}: {result.error}" if result.status not in (None, 200)
                           else f"request failed: {result.error}")
    if result.ttft is None:
        raise ProfileError("the server streamed no text")
    return result


# ---------------------------------------------------------------- sweeps


async def run_level(client: LoadClient, concurrency: int, requests: int, prompt_words: int, max_tokens: int,
                    salts: itertools.count) -> LevelResult:
    """`requests` requests through `concurrency` closed-loop workers."""
    level = LevelResult(concurrency)
    remaining = itertools.count()

    async def worker() -> None:
        while next(remaining) < requests:
            try:
                level.results.append(await complete(client, make_prompt(next(salts), prompt_words), max_tokens))
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                level.errors.append(f"{type(error).__name__}: {error}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    level.seconds = time.perf_counter() - started
    return level


def summarize(level: LevelResult) -> dict[str, Any]:
    """One profile point (capacity.py's keys)."""
    ttfts = [result.ttft for result in level.results]
    gaps = [gap for result in level.results for gap in result.itls]
    output_tokens = sum(result.output_tokens for result in level.results)
    point: dict[str, Any] = {"concurrency": level.concurrency}
    for key, values, q in (("ttftP50", ttfts, 50), ("ttftP95", ttfts, 95), ("itlP50", gaps, 50), ("itlP95", gaps, 95)):
        value = percentile(values, q)
        if value is not None:
            point[key] = round(value, 6)
    if level.seconds > 0:
        point["outputTokensPerSecond"] = round(output_tokens / level.seconds, 3)
        point["requestsPerSecond"] = round(len(level.results) / level.seconds, 4)
    return point


@dataclass(frozen=True)
class StepPoint:
    """One measured step time: its prefill tokens, decoding sequences and attended context (see
    capacity.StepModel); `is_ttft` when it was timed from the request's start (it carries the overhead)."""

    prefill_tokens: float
    decoding: float
    attended: float
    seconds: float
    is_ttft: bool


@dataclass(frozen=True)
class StepFit:
    base_seconds: float
    per_prefill_token_seconds: float
    per_decode_seq_seconds: float
    per_attended_token_seconds: float
    request_overhead_seconds: float  # HTTP, tokenization, scheduling: in every TTFT, in no token gap
    rms_relative_error: float  # root mean square of (fitted - measured) / measured over the points


def fit_step_model(points: list[StepPoint]) -> StepFit:
    """Non-negative least squares of seconds ~ base + a * prefill_tokens + b * decoding + c * attended
    (+ overhead for points timed from the request's start, i.e. TTFTs).

    Errors are relative to each point's time: a 40 ms decode step must be fitted as closely as a 2 s
    prefill, since ITL budgets are judged on the former. Five unknowns: the optimum is the plain
    least-squares solution on one subset of the columns, so trying every subset that keeps the intercept
    and keeping the best feasible one is exact. base stays positive.
    """
    import numpy as np

    if len(points) < 2:
        raise ProfileError("need at least two measured points to fit the step model")
    data = np.asarray([(p.prefill_tokens, p.decoding, p.attended, float(p.is_ttft), p.seconds) for p in points],
                      dtype=float)
    seconds = data[:, 4]
    if np.any(seconds <= 0):
        raise ProfileError("step model fit: every measured time must be positive")
    weights = 1.0 / seconds
    design = np.column_stack([np.ones(len(data)), data[:, :4]]) * weights[:, None]
    target = seconds * weights
    best: tuple[float, np.ndarray] | None = None
    for size in range(4, -1, -1):
        for extra in itertools.combinations((1, 2, 3, 4), size):
            columns = [0, *extra]
            solution, *_ = np.linalg.lstsq(design[:, columns], target, rcond=None)
            if solution[0] <= 0 or any(value < 0 for value in solution[1:]):
                continue
            full = np.zeros(5)
            full[columns] = solution
            residual = float(np.sum((design @ full - target) ** 2))
            if best is None or residual < best[0] - 1e-15:
                best = (residual, full)
    if best is None:
        raise ProfileError("step model fit failed: no non-negative solution")
    residual, coefficients = best
    base, per_prefill, per_decode, per_attended, overhead = (float(value) for value in coefficients)
    return StepFit(base, per_prefill, per_decode, per_attended, overhead, math.sqrt(residual / len(data)))


@dataclass
class SweepSettings:
    url: str
    model: str | None
    title: str | None  # the model's name in the profile (default: the served name)
    concurrency: list[int]
    requests_per_level: int
    prompt_tokens: int
    output_tokens: int
    prefill_lengths: list[int]
    prefill_repeats: int
    timeout: float
    max_batch_size: int
    max_batched_tokens: int
    hardware: str
    engine: str
    cold_start_seconds: float
    quiet: bool


def _say(settings: SweepSettings, text: str) -> None:
    if not settings.quiet:
        print(text, file=sys.stderr, flush=True)


async def _words_per_token(client: LoadClient) -> float:
    """Calibrate prompt length: words per prompt token of this server's tokenizer."""
    probe_words = 64
    result = await complete(client, make_prompt(999_999, probe_words), max_tokens=1)
    if not result.usage_prompt_tokens:
        return 1.0  # no usage reported: assume a word per token
    return probe_words / result.usage_prompt_tokens


async def sweep(settings: SweepSettings) -> dict[str, Any]:
    """Run both sweeps; return the profile as a capacity.py JSON dict."""
    model = settings.model or await served_model(settings.url, settings.timeout)
    title = settings.title or model
    client = LoadClient(settings.url, model, settings.timeout, max_connections=256)
    salts = itertools.count(1)
    try:
        ratio = await _words_per_token(client)
        await complete(client, make_prompt(next(salts), 16), max_tokens=4)  # warm-up (lazy init, caches)
        step_points: list[StepPoint] = []
        for length in settings.prefill_lengths:
            ttfts = []
            for _ in range(settings.prefill_repeats):
                result = await complete(client, make_prompt(next(salts), max(int(length * ratio), 1)), max_tokens=1)
                ttfts.append(result.ttft)
                tokens = result.usage_prompt_tokens or length
            chunks = max(math.ceil(tokens / settings.max_batched_tokens), 1)
            median = percentile(ttfts, 50) or 0.0
            # One step per prefill chunk, each with its share of the prompt (and of the context its tokens
            # attend to: token p attends p + 1) and nothing else decoding.
            step_points.append(StepPoint(tokens / chunks, 0.0, tokens * (tokens + 1) / 2 / chunks, median / chunks,
                                         True))
            _say(settings, f"prefill {tokens:5d} tokens: ttft p50 {median * 1000:7.1f} ms")
        points = []
        prompt_words = max(int(settings.prompt_tokens * ratio), 1)
        for concurrency in settings.concurrency:
            requests = max(settings.requests_per_level, 2 * concurrency)
            level = await run_level(client, concurrency, requests, prompt_words, settings.output_tokens, salts)
            if len(level.errors) > len(level.results):
                raise ProfileError(f"concurrency {concurrency}: {len(level.errors)} of {requests} requests failed; "
                                   f"first: {level.errors[0]}")
            point = summarize(level)
            points.append(point)
            if "itlP50" in point:
                # Each decoder attends to its prompt plus, on average, half its output.
                prompt = statistics.fmean(r.usage_prompt_tokens or 0 for r in level.results) or settings.prompt_tokens
                context = prompt + settings.output_tokens / 2
                step_points.append(StepPoint(0.0, float(concurrency), concurrency * context, point["itlP50"], False))
            _say(settings, f"concurrency {concurrency:3d}: ttft p50/p95 {point.get('ttftP50', 0) * 1000:7.1f}/"
                           f"{point.get('ttftP95', 0) * 1000:7.1f} ms, itl p50/p95 "
                           f"{point.get('itlP50', 0) * 1000:6.1f}/{point.get('itlP95', 0) * 1000:6.1f} ms, "
                           f"{point.get('outputTokensPerSecond', 0):7.1f} tok/s"
                           + (f", {len(level.errors)} errors" if level.errors else ""))
    finally:
        await client.close()
    fit = fit_step_model(step_points)
    _say(settings, f"step model: {fit.base_seconds * 1000:.2f} ms + {fit.per_prefill_token_seconds * 1e6:.1f} "
                   f"us/prefill token + {fit.per_decode_seq_seconds * 1000:.3f} ms/decoding seq + "
                   f"{fit.per_attended_token_seconds * 1e9:.1f} ns/attended token; request "
                   f"overhead {fit.request_overhead_seconds * 1000:.1f} ms (RMS error {fit.rms_relative_error:.0%})")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return {
        "schema": "sloserve.capacity-profile/v1",
        "model": title,
        "hardware": settings.hardware,
        "engine": settings.engine,
        "source": (f"measured by `sloserve profile` on {today}: prefill sweep {settings.prefill_lengths} tokens at "
                   f"concurrency 1, decode sweep at concurrency {settings.concurrency} with ~{settings.prompt_tokens}"
                   f"-token distinct prompts and {settings.output_tokens} output tokens (ignore_eos, temperature "
                   f"0); step model fitted by relative non-negative least squares to {len(step_points)} points "
                   f"(TTFTs carry a separate request overhead, {fit.request_overhead_seconds * 1000:.1f} ms), "
                   f"RMS relative error {fit.rms_relative_error:.1%}"),
        "maxBatchSize": settings.max_batch_size,
        "maxBatchedTokens": settings.max_batched_tokens,
        "coldStartSeconds": settings.cold_start_seconds,
        "step": {"baseSeconds": round(fit.base_seconds, 7),
                 "perPrefillTokenSeconds": round(fit.per_prefill_token_seconds, 9),
                 "perDecodeSeqSeconds": round(fit.per_decode_seq_seconds, 8),
                 "perAttendedTokenSeconds": round(fit.per_attended_token_seconds, 12)},
        "workload": {"promptTokens": settings.prompt_tokens, "outputTokens": settings.output_tokens},
        "points": points,
        "fitError": round(fit.rms_relative_error, 4),
    }


# ---------------------------------------------------------------- output


def configmap_yaml(profile_json: str, name: str, namespace: str | None, key: str = "profile.json") -> str:
    """A ConfigMap holding the profile, for spec.scaling.profile {configMap: name, key: key}."""
    import yaml

    class LiteralDumper(yaml.SafeDumper):
        pass

    def literal(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    LiteralDumper.add_representer(str, literal)
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/managed-by": "sloserve-profile"}}
    if namespace:
        metadata["namespace"] = namespace
    document = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {key: profile_json}}
    return yaml.dump(document, Dumper=LiteralDumper, sort_keys=False)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _default_hardware() -> str:
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({platform.node() or 'unknown host'})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="base URL of a running runtime, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", help="model name to request (default: the first one /v1/models lists)")
    parser.add_argument("--model-title", help="model name recorded in the profile (default: the served name)")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 2, 4, 8, 16],
                        help="closed-loop concurrency levels of the decode sweep (default 1,2,4,8,16)")
    parser.add_argument("--requests-per-level", type=int, default=24,
                        help="requests per concurrency level (at least 2x the concurrency; default 24)")
    parser.add_argument("--prompt-tokens", type=int, default=200, help="prompt length of the decode sweep")
    parser.add_argument("--output-tokens", type=int, default=64, help="output tokens per request (EOS ignored)")
    parser.add_argument("--prefill-lengths", type=_int_list, default=[32, 128, 256, 512],
                        help="prompt lengths (tokens) of the prefill sweep at concurrency 1")
    parser.add_argument("--prefill-repeats", type=int, default=3, help="requests per prefill length (median)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-request timeout, seconds")
    parser.add_argument("--max-batch-size", type=int, default=64, help="the runtime's --max-batch-size")
    parser.add_argument("--max-batched-tokens", type=int, default=4096, help="the runtime's --max-batched-tokens")
    parser.add_argument("--hardware", default=None, help="hardware description recorded in the profile")
    parser.add_argument("--engine", default="bundled", choices=["bundled", "vllm", "sglang"])
    parser.add_argument("--cold-start-seconds", type=float, default=120.0,
                        help="replica start-up time the policy plans ahead for (default 120)")
    parser.add_argument("-o", "--output", help="write the profile here (default: stdout)")
    parser.add_argument("--configmap", metavar="NAME", help="emit a ConfigMap NAME holding the profile instead")
    parser.add_argument("--namespace", help="namespace of the ConfigMap")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    for name in ("requests_per_level", "prompt_tokens", "output_tokens", "prefill_repeats", "max_batch_size",
                 "max_batched_tokens"):
        if getattr(args, name) < 1:
            print(f"sloserve profile: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 2
    settings = SweepSettings(
        url=args.url, model=args.model, title=args.model_title, concurrency=args.concurrency, requests_per_level=args.requests_per_level,
        prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens, prefill_lengths=args.prefill_lengths,
        prefill_repeats=args.prefill_repeats, timeout=args.timeout, max_batch_size=args.max_batch_size,
        max_batched_tokens=args.max_batched_tokens, hardware=args.hardware or _default_hardware(),
        engine=args.engine, cold_start_seconds=args.cold_start_seconds, quiet=args.quiet,
    )
    try:
        document = asyncio.run(sweep(settings))
        profile = CapacityProfile.from_json(document)  # the schema check the operator will apply
    except (RuntimeError, ValueError, aiohttp.ClientError, OSError, TimeoutError) as error:  # ProfileError too
        print(f"sloserve profile: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    text = profile.to_json()
    if args.configmap:
        text = configmap_yaml(text, args.configmap, args.namespace)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0
