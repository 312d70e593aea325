"""`sloserve-runtime` / `python -m sloserve_runtime`: flags -> EngineConfig + ServerOptions -> serve."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.server.frontend import ServerOptions

QUANTIZATIONS = ("none", "int8", "int4", "fp8")
SPECULATIVE_METHODS = ("none", "ngram", "draft")
DTYPES = ("auto", "bfloat16", "float16", "float32")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = EngineConfig()
    server = ServerOptions()
    p = argparse.ArgumentParser(prog="sloserve-runtime",
                                description="Continuous-batching LLM server (OpenAI, KServe v2 HTTP, Triton gRPC).")
    p.add_argument("--model", default=None,
                   help="GGUF file or Hugging Face directory (default: the bundled SmolLM2-135M-Instruct GGUF)")
    p.add_argument("--served-model-name", default=None, help="name on the API and in metrics")
    p.add_argument("--host", default=server.host)
    p.add_argument("--port", type=_non_negative_int, default=server.port)
    p.add_argument("--grpc-port", type=_non_negative_int, default=server.grpc_port,
                   help="Triton GRPCInferenceService port (0: off)")
    p.add_argument("--device", default=defaults.device, help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", choices=DTYPES, default=defaults.dtype)
    p.add_argument("--threads", type=_positive_int, default=defaults.threads, help="torch intra-op threads")
    p.add_argument("--max-batch-size", type=_positive_int, default=defaults.max_batch_size)
    p.add_argument("--max-batched-tokens", type=_positive_int, default=defaults.max_batched_tokens)
    p.add_argument("--max-model-len", type=_positive_int, default=defaults.max_model_len)
    p.add_argument("--block-size", type=_positive_int, default=defaults.block_size)
    p.add_argument("--kv-cache-blocks", type=_positive_int, default=defaults.kv_cache_blocks)
    p.add_argument("--prefix-caching", action=argparse.BooleanOptionalAction, default=defaults.prefix_caching)
    p.add_argument("--max-queue", type=_non_negative_int, default=server.max_queue,
                   help="waiting requests beyond this are refused with 429")
    p.add_argument("--drain-timeout", type=_non_negative_float, default=server.drain_timeout,
                   help="seconds to finish in-flight requests after SIGTERM")
    p.add_argument("--slo-ttft-ms", type=_positive_float, default=None, help="TTFT budget (a histogram bucket)")
    p.add_argument("--slo-itl-ms", type=_positive_float, default=None, help="ITL budget (a histogram bucket)")
    p.add_argument("--admission-limit-ms", type=_positive_float, default=None,
                   help="refuse (429) a request whose expected time to first token exceeds this (default: never)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default=defaults.quantization)
    p.add_argument("--speculative-method", choices=SPECULATIVE_METHODS, default=defaults.speculative_method)
    p.add_argument("--num-speculative-tokens", type=_positive_int, default=defaults.num_speculative_tokens)
    p.add_argument("--draft-model", default=None)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--log-level", choices=LOG_LEVELS, default=server.log_level)
    return p


def configs_from_args(args: argparse.Namespace) -> tuple[EngineConfig, ServerOptions]:
    if args.speculative_method == "draft" and not args.draft_model:
        raise SystemExit("sloserve-runtime: --speculative-method draft needs --draft-model PATH")
    config = EngineConfig(
        model=args.model, served_model_name=args.served_model_name, dtype=args.dtype, device=args.device,
        threads=args.threads, max_batch_size=args.max_batch_size, max_batched_tokens=args.max_batched_tokens,
        max_model_len=args.max_model_len, block_size=args.block_size, kv_cache_blocks=args.kv_cache_blocks,
        prefix_caching=args.prefix_caching, quantization=args.quantization,
        speculative_method=args.speculative_method, num_speculative_tokens=args.num_speculative_tokens,
        draft_model=args.draft_model, seed=args.seed)
    options = ServerOptions(host=args.host, port=args.port, grpc_port=args.grpc_port, max_queue=args.max_queue,
                            drain_timeout=args.drain_timeout, slo_ttft_ms=args.slo_ttft_ms,
                            slo_itl_ms=args.slo_itl_ms, log_level=args.log_level,
                            admission_limit_ms=args.admission_limit_ms)
    return config, options


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config, options = configs_from_args(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import prometheus_client

    # One series per histogram bucket is plenty; `_created` samples would double the series count.
    prometheus_client.disable_created_metrics()
    from sloserve_runtime.server.app import (
        Runtime,  # FastAPI/uvicorn only once the flags are known to be good
    )

    async def serve() -> int:
        return await Runtime(config, options).run()

    return asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
