"""`make bench-routing`: the routers (sloserve_operator.routing) compared in the simulator, each with the
sloserve policy sizing the fleet and a prefix cache in every simulated replica.

Per scenario and router: requests within both budgets, replica-hours (and their ratio to least outstanding
in the same run), prefix-cache hit rate (share of prompt tokens found cached), TTFT p50 / p95. Scenarios:

- mooncake-cpu: the Mooncake conversation trace with its real block hashes (512-token blocks, 1/32 of the
  tokens: 16-token blocks, the runtime's), on the measured SmolLM2 CPU profile (as bench-autoscale).
- azure-sessions-cpu: the Azure conversation trace, which has no hashes, given multi-turn sessions
  (traces.with_sessions: half the requests continue a recent session whose context fits their prompt).
- azure-cpu (control): the same Azure trace with no shared prefix at all: prefix routing must not lose there.
- mooncake-h100 (--all): the Mooncake trace at full length on the derived H100 profile.

Targets (issue 15): on mooncake-cpu, the best router >= 99% within both budgets with >= 20% fewer
replica-hours than least outstanding; on the control, no router worse than least outstanding.

    .venv/bin/python bench/routing.py [--only mooncake-cpu] [--minutes 30] [--all] [--kv-cache-tokens N]
                                      [--routers least-outstanding,...] [--ceiling [TOKENS]]
                                      [--ceiling-routers least-outstanding,prefix-scorer] [--out docs/routing]

--ceiling adds a row no router can beat on cache hits: least-outstanding with one cache shared by every replica
(any block any replica computed is a hit everywhere), unbounded, or bounded at TOKENS. Its saving is the most
that keeping prefixes together could save under least-outstanding's balancing. It does not bound what a router
gains by balancing better (prefix-scorer balances queued prefill tokens, which saves replica-hours even with no
reuse at all): --ceiling-routers prefix-scorer adds that router over the shared cache as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from sloserve_operator.autoscaler.decide.capacity import load_profile
from sloserve_operator.routing import Router
from sloserve_operator.simulate import cli as simulate_cli
from sloserve_operator.simulate import run as sim_run
from sloserve_operator.simulate import trace_files, traces
from sloserve_operator.simulate.autoscalers import SloservePolicy
from sloserve_operator.simulate.prefix_cache import PrefixCache
from sloserve_operator.simulate.run import simulate
from sloserve_operator.simulate.traces import Request

ROOT = Path(__file__).resolve().parent.parent
TRACES = Path("/work/shared/traces") if Path("/work/shared/traces").exists() else ROOT.parent / "shared" / "traces"
AZURE = TRACES / "AzureLLMInferenceTrace_conv.csv"
MOONCAKE = TRACES / "conversation_trace.jsonl"
ROUTERS = ("random", "least-outstanding", "prefix-affinity", "prefix-scorer")
BASELINE = "least-outstanding"


@dataclass(frozen=True)
class Scenario:
    trace: Path
    profile: str
    ttft: str
    itl: str
    rate_scale: float
    token_scale: float
    kv_cache_tokens: int  # per replica
    prefixes: str  # "trace" (hash_ids), "sessions" (modelled) or "none" (the control)
    max_model_len: int | None = 8192


# KV pools per replica, the runtime's defaults: on CPU the pool is capped at 1 GiB (engine/device.py:
# CPU_KV_CACHE_CAP_BYTES), 46,603 tokens of SmolLM2-135M at 23,040 bytes each (30 layers x 3 KV heads x 64 x 2
# x bf16); Llama-3.1-8B holds 128 KB per token, so an H100 80GB with 16 GB of weights at vLLM's 0.9 memory
# utilisation keeps ~400k tokens.
CPU_POOL = (1 << 30) // 23_040
SCENARIOS: dict[str, Scenario] = {
    "mooncake-cpu": Scenario(MOONCAKE, "smollm2-135m-cpu", "4s", "400ms", 16.0, 1 / 32, CPU_POOL, "trace"),
    "azure-sessions-cpu": Scenario(AZURE, "smollm2-135m-cpu", "1s", "250ms", 8.0, 0.25, CPU_POOL, "sessions"),
    "azure-cpu": Scenario(AZURE, "smollm2-135m-cpu", "1s", "250ms", 8.0, 0.25, CPU_POOL, "none"),
    "mooncake-h100": Scenario(MOONCAKE, "llama-8b-h100", "8s", "60ms", 4.0, 1.0, 400_000, "trace", None),
}
DEFAULT_SCENARIOS = ("mooncake-cpu", "azure-sessions-cpu", "azure-cpu")


def scenario_inputs(scenario: Scenario, minutes: float | None, seed: int = 0):
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    args = parser.parse_args(["--trace", str(scenario.trace), "--profile", scenario.profile, "--ttft", scenario.ttft,
                              "--itl", scenario.itl, "--max-replicas", "128", "--warm-pool", "1",
                              "--stabilization", "5m"])
    spec = simulate_cli.make_spec(args)
    requests = trace_files.load_trace(scenario.trace, seed=seed)
    if minutes:
        requests = traces.time_slice(requests, 0.0, minutes * 60.0)
    requests = traces.scale_tokens(requests, scenario.token_scale, scenario.max_model_len)
    if scenario.prefixes == "sessions":
        requests = traces.with_sessions(requests, seed=seed)
    elif scenario.prefixes == "none":
        requests = traces.without_prefixes(requests)
    requests = traces.scale_rate(requests, scenario.rate_scale, seed=seed)
    return load_profile(scenario.profile), spec, requests


def _salted_preroll(original: Callable[[list[Request], float], list[Request]], requests: list[Request],
                    warmup: float) -> list[Request]:
    """simulate()'s pre-roll (its first `warmup` seconds mirrored in time) with salted prefixes: otherwise the
    scored requests of those seconds find their own blocks cached by their mirror image, which a big enough
    cache (the ceiling's: 98% hits on a 5-minute slice) turns into hits the trace does not have."""
    out = original(requests, warmup)
    mirrored = sum(1 for r in requests if r.arrival < warmup) if warmup > 0 else 0
    salted = [replace(r, prefix=tuple(hash(("preroll", h)) for h in r.prefix)) for r in out[:mirrored]]
    return salted + out[mirrored:]


@contextmanager
def patched_simulate(shared: bool) -> Iterator[None]:
    """simulate() with the salted pre-roll and, for the ceiling row, fleets whose pods share one prefix cache."""
    fleet, preroll = sim_run.Fleet, sim_run.with_preroll
    sim_run.with_preroll = partial(_salted_preroll, preroll)  # type: ignore[assignment]
    if shared:
        sim_run.Fleet = partial(fleet, shared_cache=PrefixCache())  # type: ignore[misc]
    try:
        yield
    finally:
        sim_run.Fleet, sim_run.with_preroll = fleet, preroll  # type: ignore[misc]


def run_scenario(name: str, minutes: float | None, no_cache_row: bool,
                 kv_cache_tokens: int | None = None, routers: tuple[str, ...] = ROUTERS,
                 ceiling: float | None = None,
                 ceiling_routers: tuple[str, ...] = (BASELINE,)) -> list[dict[str, object]]:
    scenario = SCENARIOS[name]
    if kv_cache_tokens:
        scenario = replace(scenario, kv_cache_tokens=kv_cache_tokens)
    profile, spec, requests = scenario_inputs(scenario, minutes)
    print(f"\n## {name}: {len(requests)} requests over {requests[-1].arrival / 60:.0f} min, {scenario.prefixes} "
          f"prefixes, profile {profile.model}, budgets p95 TTFT {scenario.ttft} / ITL {scenario.itl}, "
          f"KV pool {scenario.kv_cache_tokens} tokens per replica\n", flush=True)
    rows = []
    runs: list[tuple[str, float | None, bool]] = [(router, scenario.kv_cache_tokens, False) for router in routers]
    if no_cache_row:
        runs.append((BASELINE, None, False))
    if ceiling is not None:
        runs.extend((router, ceiling, True) for router in ceiling_routers)
    for router, pool, shared in runs:
        started = time.monotonic()
        with patched_simulate(shared):
            result = simulate(requests, profile, spec, SloservePolicy(profile),
                              router=Router(router, min(pool or 0.0, 1e12)), kv_cache_tokens=pool)
        label = router if pool else f"{router} (no prefix cache)"
        if shared:
            label = f"ceiling: {router}, one shared cache of {'unbounded' if pool == float('inf') else int(pool)} tokens"
        rows.append({"router": label, "within_both": result.within_both,
                     "replica_hours": result.replica_hours, "hit_rate": result.prefix_hit_rate,
                     "ttft_p50": result.ttft_p50, "ttft_p95": result.ttft_p95,
                     "seconds": time.monotonic() - started})
        print(f"  {rows[-1]['router']}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    base = next(r for r in rows if r["router"] == BASELINE)
    lines = ["| router | within both budgets | replica-hours | vs least-outstanding | prefix hit rate | "
             "TTFT p50 | TTFT p95 |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        hit = "-" if row["hit_rate"] is None else f"{row['hit_rate']:.1%}"
        lines.append(f"| {row['router']} | {row['within_both']:.2%} | {row['replica_hours']:.2f} | "
                     f"{row['replica_hours'] / base['replica_hours']:.2f}x | {hit} | "
                     f"{row['ttft_p50']:.3f} s | {row['ttft_p95']:.3f} s |")
    return "\n".join(lines)


def verdict(name: str, rows: list[dict[str, object]]) -> list[str]:
    base = next(r for r in rows if r["router"] == BASELINE)
    cached = [r for r in rows if r["router"] in ROUTERS]
    best = max(cached, key=lambda r: (r["within_both"] >= 0.99, -r["replica_hours"]))
    saving = 1.0 - best["replica_hours"] / base["replica_hours"]
    out = [f"best router: {best['router']} ({best['within_both']:.2%} within both, {saving:+.1%} replica-hours "
           f"saved vs least-outstanding)"]
    for row in rows:
        if str(row["router"]).startswith("ceiling"):
            out.append(f"{row['router']}: {row['within_both']:.2%} within both, "
                       f"{1.0 - row['replica_hours'] / base['replica_hours']:+.1%} replica-hours saved (all pods "
                       f"sharing one cache), hit rate {row['hit_rate']:.1%}")
    if SCENARIOS[name].prefixes == "trace":
        met = best["within_both"] >= 0.99 and saving >= 0.20
        out.append(f"target (>= 99% within both, >= 20% fewer replica-hours): {'met' if met else 'MISSED'}")
    if SCENARIOS[name].prefixes == "none":
        worse = [r["router"] for r in cached if r["router"].startswith("prefix") and
                 (r["within_both"] < base["within_both"] - 0.001 or r["replica_hours"] > base["replica_hours"] * 1.02)]
        out.append("control (no reuse): prefix routers no worse than least-outstanding: "
                   + ("met" if not worse else f"MISSED by {', '.join(worse)}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run just these scenarios")
    parser.add_argument("--all", action="store_true", help="every scenario, mooncake-h100 included")
    parser.add_argument("--minutes", type=float, default=None, help="replay only the first minutes of each trace")
    parser.add_argument("--no-cache-row", action="store_true", help="also least-outstanding without prefix caches")
    parser.add_argument("--kv-cache-tokens", type=int, help="every replica's KV pool (default: the scenario's)")
    parser.add_argument("--routers", default=",".join(ROUTERS), help="comma-separated routers to run "
                        f"(always include {BASELINE}, the baseline)")
    parser.add_argument("--ceiling", type=float, nargs="?", const=float("inf"), default=None,
                        help="add the shared-cache ceiling row (unbounded, or bounded at this many tokens)")
    parser.add_argument("--ceiling-routers", default=BASELINE,
                        help="comma-separated routers for the ceiling rows (default: least-outstanding only; "
                        "prefix-scorer adds its balancing on prefill work to the shared cache)")
    parser.add_argument("--out", help="write results.md and results.json here")
    args = parser.parse_args()
    missing = [str(path) for path in (AZURE, MOONCAKE) if not path.exists()]
    if missing:
        print(f"bench-routing: traces not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    names = args.only or (list(SCENARIOS) if args.all else list(DEFAULT_SCENARIOS))
    results, report = {}, []
    for name in names:
        routers = tuple(args.routers.split(","))
        if BASELINE not in routers or not set(routers) <= set(ROUTERS):
            parser.error(f"--routers: a subset of {','.join(ROUTERS)} that includes {BASELINE}")
        ceiling_routers = tuple(args.ceiling_routers.split(","))
        if not set(ceiling_routers) <= set(ROUTERS):
            parser.error(f"--ceiling-routers: a subset of {','.join(ROUTERS)}")
        rows = run_scenario(name, args.minutes, args.no_cache_row, args.kv_cache_tokens, routers, args.ceiling,
                            ceiling_routers)
        text = table(rows)
        checks = verdict(name, rows)
        print(text + "\n\n" + "\n".join(f"- {line}" for line in checks), flush=True)
        results[name] = {"rows": rows, "verdict": checks}
        report.append(f"## {name}\n\n{text}\n\n" + "".join(f"- {line}\n" for line in checks))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text("\n".join(report))
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}/results.md, results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
