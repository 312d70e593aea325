"""`sloserve simulate`: replay a trace through the sloserve policy and the baselines; print the scorecard.

    sloserve simulate --trace ../shared/traces/AzureLLMInferenceTrace_conv.csv --profile smollm2-135m-cpu \\
        --token-scale 0.25 --rate-scale 8 --ttft 1s --itl 250ms --out out/azure-cpu

--trace takes a trace file (CSV with a header, JSON lines or a JSON array, optionally .gz; columns found by
name: Azure's TIMESTAMP/ContextTokens/GeneratedTokens, BurstGPT's, Mooncake's and the like: trace_files.py),
`synthetic-bursty` or `synthetic-wave`. SLO budgets and scaling come from the flags or from a ModelService
file (-f), whose spec.slo, spec.scaling and spec.placement then apply; a trace without regions is split
over the spec's regions by weight.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_PROFILE = "smollm2-135m-cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True,
                        help="trace file (.csv, .jsonl, .json, optionally .gz: a time, a prompt length and an "
                             "output length per request, e.g. Azure or Mooncake), 'synthetic-bursty' (2/s with 8/s "
                             "bursts every 10 min) or 'synthetic-wave' (2..10/s over a 30 min cycle)")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="shipped profile name or JSON path")
    parser.add_argument("-f", "--filename", help="ModelService YAML: take spec.slo, spec.scaling and spec.placement from it")
    parser.add_argument("--ttft", default="1s", help="p95 TTFT budget (without -f)")
    parser.add_argument("--itl", default="250ms", help="p95 inter-token latency budget (without -f)")
    parser.add_argument("--objective", default="99%", help="share of requests that must meet both budgets")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=64)
    parser.add_argument("--warm-pool", type=int, default=1, help="sloserve's warm pods")
    parser.add_argument("--stabilization", default="5m", help="sloserve's scale-down stabilization window")
    parser.add_argument("--start-minute", type=float, default=0.0, help="replay from this minute of the trace")
    parser.add_argument("--minutes", type=float, default=None, help="replay this many minutes (default: all)")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply the arrival rate")
    parser.add_argument("--token-scale", type=float, default=1.0, help="multiply prompt and output lengths")
    parser.add_argument("--max-model-len", type=int, default=None, help="clip prompt+output to this many tokens")
    parser.add_argument("--cold-start", type=float, default=120.0, help="seconds from pod creation to ready")
    parser.add_argument("--promotion", type=float, default=2.0, help="seconds to promote a warm pod")
    parser.add_argument("--window", type=float, default=60.0, help="metrics window of the observations (s)")
    parser.add_argument("--policies", default="sloserve,oracle,static,keda,kpa,llmd",
                        help="comma list of sloserve, oracle (the clairvoyant cost floor), reactive (the oracle's "
                             "needs without foresight), static, keda, kpa, llmd")
    parser.add_argument("--no-tune", action="store_true", help="baselines at defaults only (no grid search)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="directory for results.md, results.json and timeline.png")


def make_spec(args: argparse.Namespace):
    from sloserve_operator.api.manifest_io import load_documents
    from sloserve_operator.api.spec import parse_spec

    if args.filename:
        documents = [d for d in load_documents(args.filename) if isinstance(d, dict) and d.get("kind") == "ModelService"]
        if not documents:
            raise ValueError(f"{args.filename}: no ModelService found")
        spec = dict(documents[0]["spec"])
        spec["scaling"] = {**spec.get("scaling", {}), "mode": "slo"}
        return parse_spec(spec)
    return parse_spec({
        "model": {"name": "simulated"},
        "slo": {"ttft": {"p95": args.ttft}, "itl": {"p95": args.itl}, "objective": args.objective},
        "scaling": {"minReplicas": args.min_replicas, "maxReplicas": args.max_replicas,
                    "warmPool": {"size": args.warm_pool},
                    "scaleDown": {"stabilizationWindow": args.stabilization}},
    })


def load_requests(args: argparse.Namespace):
    from sloserve_operator.simulate import trace_files, traces

    if args.trace in ("synthetic", "synthetic-bursty"):
        minutes = args.minutes or 60.0
        requests = traces.synthetic_bursty(minutes * 60.0, base_rate=2.0, burst_rate=8.0, seed=args.seed)
    elif args.trace == "synthetic-wave":
        minutes = args.minutes or 60.0
        requests = traces.synthetic_wave(minutes * 60.0, low_rate=2.0, high_rate=10.0, seed=args.seed)
    else:
        requests = trace_files.load_trace(args.trace, seed=args.seed)
        end = args.start_minute * 60.0 + (args.minutes * 60.0 if args.minutes else float("inf"))
        requests = traces.time_slice(requests, args.start_minute * 60.0, end)
    if args.token_scale != 1.0 or args.max_model_len:
        requests = traces.scale_tokens(requests, args.token_scale, args.max_model_len)
    if args.rate_scale != 1.0:
        requests = traces.scale_rate(requests, args.rate_scale, seed=args.seed)
    if not requests:
        raise ValueError(f"{args.trace}: no requests in the selected slice")
    return requests


def run(args: argparse.Namespace) -> int:
    from sloserve_operator.autoscaler.decide.capacity import load_profile
    from sloserve_operator.simulate.compare import compare
    from sloserve_operator.simulate.report import markdown_table, plot, to_json, verdict
    from sloserve_operator.simulate.scenarios import peak_to_mean

    try:
        profile = load_profile(args.profile)
        spec = make_spec(args)
        requests = load_requests(args)
    except (OSError, ValueError) as error:
        print(f"sloserve simulate: {error}", file=sys.stderr)
        return 2
    policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    unknown = set(policies) - {"sloserve", "oracle", "reactive", "static", "keda", "kpa", "llmd"}
    if unknown:
        print(f"sloserve simulate: unknown policies {sorted(unknown)}", file=sys.stderr)
        return 2
    options = {"cold_start": args.cold_start, "promotion": args.promotion, "window": args.window}
    print(f"{len(requests)} requests over {requests[-1].arrival / 60:.1f} min, profile {profile.model} "
          f"({profile.hardware}), budgets p95 TTFT {spec.slo.ttft.p95} / ITL {spec.slo.itl.p95}", file=sys.stderr)
    comparison = compare(requests, profile, spec, policies=policies, tune=not args.no_tune, run_options=options,
                         progress=lambda line: print("  " + line, file=sys.stderr))
    table = markdown_table(comparison)
    checks = verdict(comparison, peak_to_mean(requests))
    print(table)
    print()
    for line in checks:
        print(f"- {line}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(table + "\n\n" + "".join(f"- {line}\n" for line in checks))
        (out / "results.json").write_text(json.dumps(to_json(comparison), indent=2) + "\n")
        plot(comparison, out / "timeline.png", f"{Path(args.trace).name} x{args.rate_scale:g} on {profile.model}",
             spec.slo.ttft.p95_seconds, spec.slo.itl.p95_seconds)
        print(f"wrote {out}/results.md, results.json, timeline.png", file=sys.stderr)
    return 0
