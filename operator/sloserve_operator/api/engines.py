"""What differs between inference engines: image, command line, health paths and metric names.

One `EngineProfile` per engine (bundled, vllm, sglang) and one argument builder per engine that maps the
ModelService runtime knobs onto that engine's own flags. render.py puts the result into the Deployment,
local mode starts bundled-runtime processes with it, metrics.py reads `ENGINE_METRICS` to know what to query
and slo_rules.py builds its recording rules from it.

Flag names were checked against each project's documentation (vLLM engine arguments and
`--speculative-config`; SGLang server arguments and speculative decoding). Knob combinations an engine cannot
honour are refused earlier by api.cross_field_problems; the builders raise `UnsupportedKnob` if one slips
through, rather than render a Deployment that crash-loops.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import metadata

from sloserve_operator.api.spec import Engine, ModelServiceSpec, Quantization, SpeculativeMethod
from sloserve_operator.api.units import parse_cpu


def _sloserve_version() -> str:
    try:
        return metadata.version("sloserve")
    except metadata.PackageNotFoundError:  # running from a source tree without an install
        return "latest"


BUNDLED_IMAGE = f"ghcr.io/sloserve/runtime:{_sloserve_version()}"
VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
SGLANG_IMAGE = "lmsysorg/sglang:v0.5.19-cu129"

# Logical metric names -> each engine's Prometheus names (promql.LOGICAL_METRICS are required; refused,
# prefix_cache_* and prompt_length, the histogram of prompt lengths per request, are optional: an engine
# without them reports no refusals, no hit rate and no prompt-length spread). Histograms are base names (append _bucket, _sum,
# _count); counters are given as queried, with their _total suffix; gauges as exposed. Every engine labels
# its series with model_name; the target labels (namespace, model_service, region, role, pod) come from the
# PodMonitor relabelling (or file_sd labels in local mode).
ENGINE_METRICS: dict[str, dict[str, str]] = {
    "bundled": {
        "ttft": "sloserve:time_to_first_token_seconds",
        "itl": "sloserve:inter_token_latency_seconds",
        "e2e": "sloserve:e2e_request_latency_seconds",
        "queue_time": "sloserve:request_queue_time_seconds",
        "running": "sloserve:num_requests_running",
        "waiting": "sloserve:num_requests_waiting",
        "kv_usage": "sloserve:kv_cache_usage_perc",
        "prompt_tokens": "sloserve:prompt_tokens_total",
        "generation_tokens": "sloserve:generation_tokens_total",
        "request_success": "sloserve:request_success_total",
        "refused": "sloserve:request_refused_total",
        "prefix_cache_queries": "sloserve:prefix_cache_queries_total",
        "prefix_cache_hits": "sloserve:prefix_cache_hits_total",
        "prompt_length": "sloserve:request_prompt_tokens",
    },
    # vLLM v1 names (its /metrics with the V1 engine).
    "vllm": {
        "ttft": "vllm:time_to_first_token_seconds",
        "itl": "vllm:inter_token_latency_seconds",
        "e2e": "vllm:e2e_request_latency_seconds",
        "queue_time": "vllm:request_queue_time_seconds",
        "running": "vllm:num_requests_running",
        "waiting": "vllm:num_requests_waiting",
        "kv_usage": "vllm:kv_cache_usage_perc",
        "prompt_tokens": "vllm:prompt_tokens_total",
        "generation_tokens": "vllm:generation_tokens_total",
        "request_success": "vllm:request_success_total",
        "prefix_cache_queries": "vllm:prefix_cache_queries_total",
        "prefix_cache_hits": "vllm:prefix_cache_hits_total",
        "prompt_length": "vllm:request_prompt_tokens",
    },
    # SGLang (needs --enable-metrics, which its argument builder always passes). token_usage is the fraction
    # of the KV token pool in use, its equivalent of kv_cache_usage_perc; num_requests_total counts finished
    # requests (it has no finished_reason label).
    "sglang": {
        "ttft": "sglang:time_to_first_token_seconds",
        "itl": "sglang:inter_token_latency_seconds",
        "e2e": "sglang:e2e_request_latency_seconds",
        "queue_time": "sglang:queue_time_seconds",
        "running": "sglang:num_running_reqs",
        "waiting": "sglang:num_queue_reqs",
        "kv_usage": "sglang:token_usage",
        "prompt_tokens": "sglang:prompt_tokens_total",
        "generation_tokens": "sglang:generation_tokens_total",
        "request_success": "sglang:num_requests_total",
    },
}

# vLLM's latency buckets are fixed in its code (no flag changes them), so its "within budget" fraction is
# read from the largest boundary at or below the budget: conservative, never flattering. The bundled runtime
# (--slo-ttft-ms/--slo-itl-ms) and SGLang (--bucket-time-to-first-token/--bucket-inter-token-latency) get
# the budgets as exact boundaries.
VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                     10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                    20.0, 40.0, 80.0)
SGLANG_TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
                       200.0, 400.0)
SGLANG_ITL_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08,
                      0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0)
FIXED_BUCKETS: dict[str, dict[str, tuple[float, ...]]] = {
    "vllm": {"ttft": VLLM_TTFT_BUCKETS, "itl": VLLM_ITL_BUCKETS},
}

# n-gram prompt lookup window, the same defaults as the bundled runtime's EngineConfig.
PROMPT_LOOKUP_MIN = 2
PROMPT_LOOKUP_MAX = 5


class UnsupportedKnob(ValueError):
    """A runtime knob the chosen engine cannot honour; the message names the field."""


@dataclass(frozen=True)
class EngineProfile:
    """Static facts about one engine's container."""

    name: str
    image: str
    command: tuple[str, ...]
    health_path: str  # liveness: the process answers
    ready_path: str  # readiness: weights loaded, accepting requests
    metrics_path: str = "/metrics"
    grpc: bool = False  # serves the KServe v2 gRPC protocol on a second port


PROFILES: dict[str, EngineProfile] = {
    # Our runtime: /health is liveness, /ready turns false while loading and while draining.
    "bundled": EngineProfile("bundled", BUNDLED_IMAGE, ("sloserve-runtime",), "/health", "/ready", grpc=True),
    # vLLM and SGLang only listen once the weights are loaded, so /health doubles as readiness.
    "vllm": EngineProfile("vllm", VLLM_IMAGE, ("python3", "-m", "vllm.entrypoints.openai.api_server"),
                          "/health", "/health"),
    "sglang": EngineProfile("sglang", SGLANG_IMAGE, ("python3", "-m", "sglang.launch_server"),
                            "/health", "/health"),
}


@dataclass(frozen=True)
class ModelPaths:
    """Where the engine finds its weights inside the container (None: the engine's own default)."""

    model: str | None
    draft_model: str | None = None


def profile(engine: Engine | str) -> EngineProfile:
    return PROFILES[Engine(engine).value]


def budget_bucket(engine: Engine | str, logical: str, budget_seconds: float) -> float:
    """The histogram boundary (seconds) whose bucket counts the requests within `budget_seconds`."""
    buckets = FIXED_BUCKETS.get(Engine(engine).value, {}).get(logical)
    if not buckets:
        return budget_seconds
    at_or_below = [edge for edge in buckets if edge <= budget_seconds + 1e-12]
    return at_or_below[-1] if at_or_below else buckets[0]


def ms(seconds: float) -> str:
    """Milliseconds as a flag value: "500" rather than "500.0", fractions kept ("0.5")."""
    return f"{round(seconds * 1000, 6):g}"


def _seconds_list(buckets: tuple[float, ...], extra: float) -> list[str]:
    return [f"{edge:g}" for edge in sorted({*buckets, round(extra, 6)})]


def cpu_threads(spec: ModelServiceSpec) -> int:
    """Threads for CPU serving: spec.runtime.threads, else the CPU request rounded down (at least 1)."""
    if spec.runtime.threads is not None:
        return spec.runtime.threads
    return max(1, math.floor(parse_cpu(spec.resources.cpu)))


def bundled_args(spec: ModelServiceSpec, port: int, paths: ModelPaths, *, grpc_port: int = 0,
                 drain_timeout: int = 30) -> list[str]:
    """Flags of `sloserve-runtime` (the shared runtime CLI convention)."""
    runtime = spec.runtime
    args: list[str] = []
    if paths.model:
        args += ["--model", paths.model]
    args += [
        "--served-model-name", spec.model.name,
        "--port", str(port),
        "--grpc-port", str(grpc_port),
        "--device", "cuda" if spec.resources.gpus > 0 else "cpu",
        "--max-batch-size", str(runtime.max_batch_size),
        "--max-batched-tokens", str(runtime.max_batched_tokens),
        "--max-model-len", str(runtime.max_model_len),
        "--prefix-caching" if runtime.prefix_caching else "--no-prefix-caching",
        "--quantization", runtime.quantization.value,
        "--speculative-method", runtime.speculative.method.value,
    ]
    if spec.resources.gpus == 0:
        args += ["--threads", str(cpu_threads(spec))]
    if runtime.speculative.method != SpeculativeMethod.none:
        args += ["--num-speculative-tokens", str(runtime.speculative.num_tokens)]
    if runtime.speculative.method == SpeculativeMethod.draft:
        args += ["--draft-model", _required_draft(paths)]
    args += [
        "--slo-ttft-ms", ms(spec.slo.ttft.p95_seconds),
        "--slo-itl-ms", ms(spec.slo.itl.p95_seconds),
        "--drain-timeout", str(drain_timeout),
    ]
    limit = spec.admission.limit_seconds(spec.slo.ttft.p95_seconds)
    if limit is not None:
        args += ["--admission-limit-ms", ms(limit)]
    return args


def vllm_args(spec: ModelServiceSpec, port: int, paths: ModelPaths) -> list[str]:
    """Flags of vLLM's OpenAI-compatible server."""
    runtime = spec.runtime
    args = [
        "--model", paths.model or spec.model.name,
        "--served-model-name", spec.model.name,
        "--port", str(port),
        "--max-num-seqs", str(runtime.max_batch_size),
        "--max-num-batched-tokens", str(runtime.max_batched_tokens),
        "--max-model-len", str(runtime.max_model_len),
        "--enable-prefix-caching" if runtime.prefix_caching else "--no-enable-prefix-caching",
    ]
    if spec.resources.gpus > 1:
        args += ["--tensor-parallel-size", str(spec.resources.gpus)]
    if runtime.quantization == Quantization.fp8:
        args += ["--quantization", "fp8"]
    elif runtime.quantization != Quantization.none:
        raise _unsupported_quantization(spec)
    speculative = runtime.speculative
    if speculative.method == SpeculativeMethod.ngram:
        config = {"method": "ngram", "num_speculative_tokens": speculative.num_tokens,
                  "prompt_lookup_min": PROMPT_LOOKUP_MIN, "prompt_lookup_max": PROMPT_LOOKUP_MAX}
        args += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
    elif speculative.method == SpeculativeMethod.draft:
        config = {"model": _required_draft(paths), "num_speculative_tokens": speculative.num_tokens}
        args += ["--speculative-config", json.dumps(config, separators=(",", ":"))]
    return args


def sglang_args(spec: ModelServiceSpec, port: int, paths: ModelPaths) -> list[str]:
    """Flags of `python -m sglang.launch_server`; the SLO budgets become exact histogram boundaries."""
    runtime = spec.runtime
    args = [
        "--model-path", paths.model or spec.model.name,
        "--served-model-name", spec.model.name,
        "--port", str(port),
        "--max-running-requests", str(runtime.max_batch_size),
        "--chunked-prefill-size", str(runtime.max_batched_tokens),
        "--context-length", str(runtime.max_model_len),
    ]
    if not runtime.prefix_caching:
        args.append("--disable-radix-cache")
    if spec.resources.gpus > 1:
        args += ["--tp-size", str(spec.resources.gpus)]
    if runtime.quantization == Quantization.fp8:
        args += ["--quantization", "fp8"]
    elif runtime.quantization != Quantization.none:
        raise _unsupported_quantization(spec)
    speculative = runtime.speculative
    if speculative.method == SpeculativeMethod.ngram:
        raise UnsupportedKnob("spec.runtime.speculative.method ngram is not supported by engine sglang")
    if speculative.method == SpeculativeMethod.draft:
        # A plain smaller draft model is SGLang's STANDALONE algorithm; a chain of k steps with top-1 drafts
        # proposes k tokens, verified as k + 1 (the draft plus the bonus token).
        k = speculative.num_tokens
        args += [
            "--speculative-algorithm", "STANDALONE",
            "--speculative-draft-model-path", _required_draft(paths),
            "--speculative-num-steps", str(k),
            "--speculative-eagle-topk", "1",
            "--speculative-num-draft-tokens", str(k + 1),
        ]
    args += [
        "--enable-metrics",
        "--bucket-time-to-first-token", *_seconds_list(SGLANG_TTFT_BUCKETS, spec.slo.ttft.p95_seconds),
        "--bucket-inter-token-latency", *_seconds_list(SGLANG_ITL_BUCKETS, spec.slo.itl.p95_seconds),
    ]
    return args


def engine_args(spec: ModelServiceSpec, port: int, paths: ModelPaths, *, grpc_port: int = 0,
                drain_timeout: int = 30) -> list[str]:
    """The engine's flags for this spec, without --host (the caller decides where to listen)."""
    if spec.engine == Engine.vllm:
        return vllm_args(spec, port, paths)
    if spec.engine == Engine.sglang:
        return sglang_args(spec, port, paths)
    return bundled_args(spec, port, paths, grpc_port=grpc_port, drain_timeout=drain_timeout)


def _required_draft(paths: ModelPaths) -> str:
    if not paths.draft_model:
        raise UnsupportedKnob("spec.runtime.speculative.draftModel is required when method is draft")
    return paths.draft_model


def _unsupported_quantization(spec: ModelServiceSpec) -> UnsupportedKnob:
    return UnsupportedKnob(
        f"spec.runtime.quantization {spec.runtime.quantization.value} is not supported by engine "
        f"{spec.engine.value}: use none with a pre-quantized model, fp8, or engine bundled"
    )
