"""`make bench-autoscale`: the sloserve policy vs the baselines on both shared traces x both profiles
(and a synthetic load cycle as a contrast).

Each scenario replays a whole one-hour trace through the simulator (sloserve_operator.simulate) with every
policy at its documented defaults and tuned by grid search on the same trace, prints the scorecard and the
targets (met / MISSED, with the numbers), and writes per-scenario results.md, results.json and
timeline.png under --out (default docs/autoscaling/). Budgets per scenario are chosen so that the
unavoidable misses (a request alone on an idle replica already over budget) stay below 0.5%; see
docs/autoscaling.md for the reasoning. Takes a few minutes per scenario on one core.

    .venv/bin/python bench/autoscale.py [--only azure-cpu] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sloserve_operator.simulate import cli as simulate_cli

ROOT = Path(__file__).resolve().parent.parent
TRACES = Path("/work/shared/traces") if Path("/work/shared/traces").exists() else ROOT.parent / "shared" / "traces"
AZURE = TRACES / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = TRACES / "conversation_trace.jsonl"

# name: (trace, profile, ttft, itl, rate scale, token scale, max model len)
SCENARIOS: dict[str, tuple[Path | str, str, str, str, float, float, int | None]] = {
    "azure-cpu": (AZURE, "smollm2-135m-cpu", "2s", "150ms", 4.0, 1.0, 8192),
    "mooncake-cpu": (MOONCAKE, "smollm2-135m-cpu", "4s", "150ms", 4.0, 0.125, 8192),
    "azure-h100": (AZURE, "llama-8b-h100", "1s", "50ms", 8.0, 1.0, None),
    "mooncake-h100": (MOONCAKE, "llama-8b-h100", "8s", "60ms", 4.0, 1.0, None),
    # Not a shared trace: a smooth 30-minute load cycle (the shape autoscaling exists for), as a contrast.
    "wave-cpu": ("synthetic-wave", "smollm2-135m-cpu", "2s", "150ms", 3.0, 1.0, 8192),
}


def scenario_args(name: str, out: Path, quick: bool) -> argparse.Namespace:
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
    return parser.parse_args(argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run just these scenarios")
    parser.add_argument("--out", default=str(ROOT / "docs" / "autoscaling"))
    parser.add_argument("--quick", action="store_true", help="15 minutes of each trace, defaults only")
    args = parser.parse_args()
    missing = [str(path) for path in (AZURE, MOONCAKE) if not path.exists()]
    if missing:
        print(f"bench-autoscale: traces not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    status = 0
    for name in args.only or list(SCENARIOS):
        print(f"\n## {name}\n", flush=True)
        started = time.monotonic()
        status |= simulate_cli.run(scenario_args(name, out, args.quick))
        print(f"\n({name}: {time.monotonic() - started:.0f} s)", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
