"""`make bench-autoscale`: the sloserve policy vs the baselines on both shared traces x both profiles
(and a synthetic load cycle as a contrast).

Each scenario replays a whole one-hour trace through the simulator (sloserve_operator.simulate) with every
policy at its documented defaults and tuned by grid search on the same trace, prints the scorecard and the
targets (met / MISSED, with the numbers), and writes per-scenario results.md, results.json and
timeline.png under --out (default docs/autoscaling/). Budgets per scenario are chosen so that the
unavoidable misses (a request alone on an idle replica already over budget) stay below 0.5%; see
docs/autoscaling.md for the reasoning. Takes a few minutes per scenario on one core.

    .venv/bin/python bench/autoscale.py [--only azure-cpu] [--quick]
    .venv/bin/python bench/autoscale.py --policies sloserve --out /tmp/try   # the policy alone, ~45 s for all
    .venv/bin/python bench/autoscale.py --check-model [--only NAME]

--check-model checks the capacity model instead: a fixed fleet under steady Poisson load with the
scenario's own prompt/output lengths, at rates around the model's capacity, against what the model says.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from sloserve_operator.simulate import cli as simulate_cli

ROOT = Path(__file__).resolve().parent.parent
TRACES = Path("/work/shared/traces") if Path("/work/shared/traces").exists() else ROOT.parent / "shared" / "traces"
AZURE = TRACES / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = TRACES / "conversation_trace.jsonl"

# name: (trace, profile, ttft, itl, rate scale, token scale, max model len)
# CPU scenarios: SmolLM2-135M on a replica of 2 cores (the measured profile). Their prompts are scaled down to
# what such a model is used for (Azure conv's mean 1155 / p95 4083 tokens would take ~1.5 s / ~4.4 s to
# prefill alone on 2 cores); see docs/autoscaling.md, "Scenarios and budgets".
SCENARIOS: dict[str, tuple[Path | str, str, str, str, float, float, int | None]] = {
    "azure-cpu": (AZURE, "smollm2-135m-cpu", "1s", "250ms", 8.0, 0.25, 8192),
    "mooncake-cpu": (MOONCAKE, "smollm2-135m-cpu", "4s", "400ms", 16.0, 1 / 32, 8192),
    "azure-h100": (AZURE, "llama-8b-h100", "1s", "50ms", 8.0, 1.0, None),
    "mooncake-h100": (MOONCAKE, "llama-8b-h100", "8s", "60ms", 4.0, 1.0, None),
    # Not a shared trace: a smooth 30-minute load cycle (the shape autoscaling exists for), as a contrast.
    "wave-cpu": ("synthetic-wave", "smollm2-135m-cpu", "1.5s", "250ms", 8.0, 0.5, 8192),
}


def scenario_args(name: str, out: Path, quick: bool, policies: str | None = None) -> argparse.Namespace:
    trace, profile, ttft, itl, rate_scale, token_scale, max_len = SCENARIOS[name]
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    argv = ["--trace", str(trace), "--profile", profile, "--ttft", ttft, "--itl", itl,
            "--rate-scale", str(rate_scale), "--token-scale", str(token_scale), "--out", str(out / name),
            "--max-replicas", "128", "--warm-pool", "1", "--stabilization", "5m"]
    if max_len:
        argv += ["--max-model-len", str(max_len)]
    if quick:
        argv += ["--minutes", "15", "--no-tune"]
    if policies:
        argv += ["--policies", policies]
    return parser.parse_args(argv)


# name: fleet size for --check-model; the per-replica rates replayed are CHECK_RATES x the model's capacity
CHECK_FLEETS: dict[str, int] = {"azure-cpu": 10, "mooncake-cpu": 10, "azure-h100": 8, "mooncake-h100": 16,
                                "wave-cpu": 10}
CHECK_RATES = (0.8, 0.9, 1.0, 1.1, 1.2)


def check_model(name: str, out: Path) -> None:
    """Steady load on a fixed fleet: share of requests within both budgets per rate, next to the model's
    capacity (at the budgets' p95, the quantile the policy sizes with)."""
    from sloserve_operator.autoscaler.decide.capacity import load_profile
    from sloserve_operator.simulate.autoscalers import StaticPeak
    from sloserve_operator.simulate.run import simulate
    from sloserve_operator.simulate.traces import Request

    args = scenario_args(name, out, quick=False)
    profile, spec, requests = (load_profile(args.profile), simulate_cli.make_spec(args),
                               simulate_cli.load_requests(args))
    prompt = statistics.fmean(r.prompt_tokens for r in requests)
    output = statistics.fmean(r.output_tokens for r in requests)
    size = CHECK_FLEETS[name]
    capacity = profile.max_rate_within_budget(spec.slo.ttft.p95_seconds, spec.slo.itl.p95_seconds, prompt, output,
                                              0.95, size)
    print(f"{name}: {size} replicas, mean prompt {prompt:.0f} / output {output:.0f} tokens; "
          f"model capacity {capacity:.2f} req/s per replica")
    rng = random.Random(1)
    for per_replica in (capacity * share for share in CHECK_RATES):
        arrivals, t = [], 0.0
        while t < 1200.0:  # 20 minutes of Poisson arrivals, lengths drawn from the scenario's requests
            t += rng.expovariate(per_replica * size)
            pick = rng.choice(requests)
            arrivals.append(Request(t, pick.prompt_tokens, pick.output_tokens))
        result = simulate(arrivals, profile, spec, StaticPeak(size), initial_serving=size, warmup=0)
        print(f"  {per_replica:.2f} req/s per replica: {result.within_both:.2%} of requests within both budgets",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run just these scenarios")
    parser.add_argument("--out", default=str(ROOT / "docs" / "autoscaling"))
    parser.add_argument("--quick", action="store_true", help="15 minutes of each trace, defaults only")
    parser.add_argument("--policies", help="comma list of policies to run (default: all; e.g. 'sloserve' to try "
                                           "a policy change quickly)")
    parser.add_argument("--check-model", action="store_true",
                        help="check the capacity model against steady simulated load instead")
    args = parser.parse_args()
    missing = [str(path) for path in (AZURE, MOONCAKE) if not path.exists()]
    if missing:
        print(f"bench-autoscale: traces not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.check_model:
        for name in args.only or list(SCENARIOS):
            check_model(name, out)
        return 0
    status = 0
    for name in args.only or list(SCENARIOS):
        print(f"\n## {name}\n", flush=True)
        started = time.monotonic()
        status |= simulate_cli.run(scenario_args(name, out, args.quick, args.policies))
        print(f"\n({name}: {time.monotonic() - started:.0f} s)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
