"""`sloserve load`: drive streaming load at an endpoint, print live TTFT/ITL percentiles and a summary.

Schedules: a constant rate (--rate), a ramp of steps (--rate R --step-to R2 [--steps N]), explicit steps
(--schedule 2:30,8:60), or a slice of a shared trace (--trace FILE with --trace-start/--duration, --speedup,
--rate-scale, token scaling). Budgets for the "within budget" line come from -f FILE (the ModelService) or
--slo-ttft/--slo-itl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_URL, help=f"OpenAI-compatible endpoint (default {DEFAULT_URL})")
    parser.add_argument("--model", default=None, help="model name in requests (default: the first /v1/models)")
    parser.add_argument("-f", "--filename", default=None, help="ModelService YAML: budgets and model name")
    parser.add_argument("--slo-ttft", default=None, help="TTFT budget for the within-budget figure, e.g. 1s")
    parser.add_argument("--slo-itl", default=None, help="ITL budget for the within-budget figure, e.g. 100ms")
    shape = parser.add_argument_group("schedule")
    shape.add_argument("--rate", type=float, default=1.0, help="requests per second (start rate of a ramp)")
    shape.add_argument("--step-to", type=float, default=None, help="ramp up (or down) to this rate in steps")
    shape.add_argument("--steps", type=int, default=4, help="number of steps of the ramp (default 4)")
    shape.add_argument("--schedule", default=None, help="explicit steps RATE:SECONDS,... e.g. 1:30,6:60,1:60")
    shape.add_argument("--duration", type=float, default=60.0, help="seconds of load (trace: seconds of trace)")
    shape.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of evenly spaced")
    shape.add_argument("--prompt-tokens", type=int, default=64, help="prompt length, about (default 64)")
    shape.add_argument("--max-tokens", type=int, default=64, help="output tokens per request (default 64)")
    trace = parser.add_argument_group("trace replay")
    trace.add_argument("--trace", default=None, help="Azure CSV or Mooncake JSONL trace (../shared/traces)")
    trace.add_argument("--trace-start", type=float, default=0.0, help="slice start, seconds into the trace")
    trace.add_argument("--speedup", type=float, default=1.0, help="replay the slice this many times faster")
    trace.add_argument("--rate-scale", type=float, default=1.0, help="scale the arrival rate (thinning below 1)")
    trace.add_argument("--token-scale", type=float, default=0.1, help="scale token counts (default 0.1)")
    trace.add_argument("--max-prompt-tokens", type=int, default=256)
    trace.add_argument("--max-output-tokens", type=int, default=64)
    parser.add_argument("--ignore-eos", action="store_true",
                        help="generate exactly the output length asked (vLLM's ignore_eos; the bundled runtime has it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-every", type=float, default=5.0, help="seconds between live lines")
    parser.add_argument("--json", default=None, help="write the summary and per-request results to this file")


def build_arrivals(args: argparse.Namespace) -> list:
    from sloserve_operator.local.workload import parse_steps, ramp_steps, step_schedule, trace_schedule

    if args.trace:
        return trace_schedule(args.trace, start=args.trace_start, duration=args.duration, speedup=args.speedup,
                              rate_scale=args.rate_scale, token_scale=args.token_scale,
                              max_prompt_tokens=args.max_prompt_tokens, max_output_tokens=args.max_output_tokens,
                              seed=args.seed)
    if args.schedule:
        steps = parse_steps(args.schedule)
    elif args.step_to is not None:
        steps = ramp_steps(args.rate, args.step_to, args.duration, args.steps)
    else:
        steps = [(args.rate, args.duration)]
    return step_schedule(steps, prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens,
                         poisson=args.poisson, seed=args.seed)


def _budgets(args: argparse.Namespace) -> tuple[float | None, float | None, str | None]:
    """(ttft budget, itl budget, model name) from -f and/or --slo-* flags."""
    from sloserve_operator.api.units import parse_duration

    ttft = parse_duration(args.slo_ttft) if args.slo_ttft else None
    itl = parse_duration(args.slo_itl) if args.slo_itl else None
    model = None
    if args.filename:
        from sloserve_operator.api.manifest_io import load_documents
        from sloserve_operator.api.spec import validate_document

        service, problems = validate_document((load_documents(args.filename) or [None])[0])
        if service is None:
            raise ValueError("; ".join(problems))
        ttft = ttft if ttft is not None else service.spec.slo.ttft.p95_seconds
        itl = itl if itl is not None else service.spec.slo.itl.p95_seconds
        model = service.spec.model.name
    return ttft, itl, model


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms"


def progress_line(elapsed: float, results: list, window: float) -> str:
    from sloserve_operator.load_client import percentile

    recent = [r for r in results if r.sent_at >= elapsed - window]
    done = [r for r in results if r.e2e is not None or r.error]
    failed = sum(1 for r in results if r.error)
    ttfts = [r.ttft for r in recent if r.ttft is not None]
    itls = [gap for r in recent for gap in r.itls]
    return (f"t={elapsed:5.0f}s sent={len(results)} done={len(done)} failed={failed} "
            f"in-flight={len(results) - len(done)} rate={len(recent) / window:.1f}/s | last {window:.0f}s: "
            f"TTFT p50 {_ms(percentile(ttfts, 50))} p95 {_ms(percentile(ttfts, 95))}, "
            f"ITL p50 {_ms(percentile(itls, 50))} p95 {_ms(percentile(itls, 95))}")


def format_summary(summary: dict, ttft_budget: float | None, itl_budget: float | None) -> str:
    lines = [
        f"requests {summary['requests']}  ok {summary['ok']}  failed {summary['failed']}  "
        f"in {summary['duration_s']:.1f}s",
        f"TTFT p50 {_ms(summary['ttft_p50'])}  p95 {_ms(summary['ttft_p95'])}  p99 {_ms(summary['ttft_p99'])}"
        + (f"  (budget {_ms(ttft_budget)})" if ttft_budget is not None else ""),
        f"ITL  p50 {_ms(summary['itl_p50'])}  p95 {_ms(summary['itl_p95'])}  p99 {_ms(summary['itl_p99'])}"
        + (f"  (budget {_ms(itl_budget)})" if itl_budget is not None else ""),
    ]
    if summary.get("output_tokens_per_s") is not None:
        lines.append(f"output {summary['output_tokens_per_s']:.1f} tokens/s")
    if summary.get("within_budget") is not None:
        lines.append(f"within both budgets: {summary['within_budget'] * 100:.1f}% of requests")
    for error, count in summary.get("errors", {}).items():
        lines.append(f"  {count} x {error}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from sloserve_operator.load_client import served_model
    from sloserve_operator.local.loadgen import run_load

    try:
        ttft_budget, itl_budget, spec_model = _budgets(args)
        arrivals = build_arrivals(args)
    except (OSError, ValueError) as error:
        print(f"sloserve load: {error}", file=sys.stderr)
        return 2
    if not arrivals:
        print("sloserve load: the schedule has no requests (check --rate/--duration or the trace slice)",
              file=sys.stderr)
        return 2

    async def main() -> int:
        model = args.model or spec_model or await served_model(args.url)
        span = max(a.at for a in arrivals)
        print(f"sending {len(arrivals)} requests over {span:.0f}s to {args.url} (model {model})", flush=True)
        report = await run_load(
            args.url, model, arrivals, seed=args.seed, progress_every=args.report_every,
            extra={"ignore_eos": True} if args.ignore_eos else None,
            on_progress=lambda elapsed, results: print(progress_line(elapsed, results, args.report_every),
                                                       flush=True),
        )
        summary = report.summary(ttft_budget, itl_budget)
        print(format_summary(summary, ttft_budget, itl_budget))
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"summary": summary, "results": [asdict(r) for r in report.results]}, indent=1))
        return 0 if not report.failed else 1

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # connection refused before any request, bad /v1/models: say it plainly
        print(f"sloserve load: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
