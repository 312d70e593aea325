"""`make bench-live`: a scaled-down slice of a shared trace through local mode, through the same fleet held
at a fixed size, and through the simulator, side by side.

Every row replays exactly the same requests (same arrival times, prompt and output lengths; the runtime is
asked to ignore EOS so outputs have the lengths the simulator assumes). Reported per row: the fraction of
requests within both budgets (TTFT, and at most 5% of a request's gaps over the ITL budget, the simulator's
rule) and replica-seconds over the slice (every replica process in any role, first to last arrival). The
simulator rows use a capacity profile of the same runtime measured at the start of the run with
`sloserve profile` (or --profile), so "simulator vs live" is how far the model is from reality. They come
twice: with a node per replica (what a cluster gives, and what bench/autoscale.py assumes), and on a shared
host (simulate/fleet.py: SharedHost), where the replicas share the machine's cores (as many as --max-replicas
busy replicas were measured to get at the start, bench/host_sharing.py) with each other, with the
starting ones (the share of a core the profiling replica was measured to use while it started) and with the
rest of the machine, charged per request (its CPU during that replay, measured from /proc as host CPU minus
the replica processes' own, over the requests). Neither pre-rolls: the simulated fleet starts when the
slice starts, as the live one does. Misses are also split by cause, live beside both simulations: refused
(429), a late first token, or a first token in time with more than 5% of gaps over the ITL budget, with the
share of all gaps over it. Each replay's per-request timeline (due, sent, status, TTFT, every gap) is
written to bench/results/live-<slice>-<fleet>-timeline.json.

Two slices (`--slice`): `trace`, a slice of a shared trace as it is (flat traffic; one replica carries it at
the default rate), and `bursty`, the on/off Markov-modulated Poisson traffic of bench/autoscale.py's dev
scenarios (simulate/scenarios.py: mmpp_bursty, fixed seed, the trace's lengths), compressed in time and with
its mean burst rate at --burst-load (1.6) times what the profile measured at the start says one SmolLM2
replica with one thread carries within the budgets, so on any host the bursts need a second replica and the
idle gaps let the fleet shrink. A fixed --burst-rate (req/s) keeps the slice the same from run to run on one
host instead; the profile moves with whatever else runs on the machine while it is measured, and the script
stops on a profile that says one replica carries nothing.

    .venv/bin/python bench/live.py                       # about 10 minutes on 2 cores
    .venv/bin/python bench/live.py --slice bursty        # about 10 minutes on 2 cores
    .venv/bin/python bench/live.py --start-minute 15 --minutes 30 --speedup 12 --rate 1.5 --max-replicas 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from sloserve_operator.simulate.fleet import SharedHost

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"
RESULTS = ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", default=str(DEFAULT_TRACE), help="Azure CSV or Mooncake JSONL")
    parser.add_argument("--start-minute", type=float, default=0.0, help="slice start in the trace (minutes)")
    parser.add_argument("--minutes", type=float, default=58.0, help="slice length in trace minutes")
    parser.add_argument("--speedup", type=float, default=20.0, help="replay the slice this many times faster")
    parser.add_argument("--rate", type=float, default=2.0,
                        help="mean replayed request rate per second (sets the rate scale)")
    parser.add_argument("--token-scale", type=float, default=0.1)
    parser.add_argument("--max-prompt-tokens", type=int, default=128)
    parser.add_argument("--max-output-tokens", type=int, default=32)
    parser.add_argument("--ttft", default="1s", help="p95 TTFT budget")
    parser.add_argument("--itl", default="300ms", help="p95 ITL budget")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=3, help="also the size of the fixed fleet")
    parser.add_argument("--warm-pool", type=int, default=1)
    parser.add_argument("--stabilization", default="30s")
    parser.add_argument("--interval", type=float, default=2.0, help="local mode's decision interval (s)")
    parser.add_argument("--window", type=float, default=10.0, help="metrics window (s)")
    parser.add_argument("--profile", default="measure",
                        help="capacity profile for the policy and the simulator: 'measure' (run `sloserve profile` "
                             "against one replica first), a shipped name, or a JSON path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--host-cores", type=float, default=None,
                        help="the cores the simulator's shared-host rows give the machine (default: measured at the "
                             "start, what --max-replicas busy replicas get of this machine's cores, "
                             "bench/host_sharing.py; its core count when they do not oversubscribe it); the other "
                             "simulated rows give each replica its own hardware")
    bursty = parser.add_argument_group("--slice bursty")
    parser.add_argument("--slice", choices=("trace", "bursty"), default="trace",
                        help="a slice of --trace as it is, or on/off bursty traffic with the trace's lengths")
    bursty.add_argument("--bursty-minutes", type=float, default=16.0, help="length before compression (minutes)")
    bursty.add_argument("--bursty-speedup", type=float, default=5.0,
                        help="compress the bursty slice this many times (idle 1-5 min, bursts 1-3 min before)")
    bursty.add_argument("--burst-rate", type=float, default=0.0,
                        help="mean burst rate in replayed requests/s (bursts spread log-normally around it); "
                             "0 (default): --burst-load times what the measured profile says one replica carries")
    bursty.add_argument("--burst-load", type=float, default=1.6,
                        help="mean burst rate as a multiple of one replica's profiled capacity (with --burst-rate 0)")
    bursty.add_argument("--bursty-seed", type=int, default=1, help="the MMPP's seed (bench/autoscale.py's bursty-cpu)")
    return parser.parse_args(argv)


def spec_document(args: argparse.Namespace, name: str, *, fixed: bool) -> dict:
    low, high = (args.max_replicas, args.max_replicas) if fixed else (args.min_replicas, args.max_replicas)
    return {
        "apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": name},
        "spec": {
            "model": {"name": "smollm2-135m-instruct"},
            "runtime": {"maxBatchSize": 16, "maxBatchedTokens": 512, "maxModelLen": 1024, "threads": 1},
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
            "slo": {"ttft": {"p95": args.ttft}, "itl": {"p95": args.itl}},
            "scaling": {"minReplicas": low, "maxReplicas": high,
                        "warmPool": {"size": 0 if fixed else args.warm_pool},
                        "scaleDown": {"stabilizationWindow": args.stabilization}},
        },
    }


def load_slice(args: argparse.Namespace):
    from sloserve_operator.local.workload import trace_requests
    from sloserve_operator.simulate.trace_files import load_trace
    from sloserve_operator.simulate.traces import time_slice

    start, seconds = args.start_minute * 60, args.minutes * 60
    raw = time_slice(load_trace(args.trace, seed=args.seed), start, start + seconds)
    if not raw:
        raise SystemExit(f"no requests in minutes {args.start_minute}..{args.start_minute + args.minutes}")
    rate_scale = args.rate / (len(raw) / seconds * args.speedup)
    return trace_requests(args.trace, start=start, duration=seconds, speedup=args.speedup, rate_scale=rate_scale,
                          token_scale=args.token_scale, max_prompt_tokens=args.max_prompt_tokens,
                          max_output_tokens=args.max_output_tokens, seed=args.seed), rate_scale


def length_pool(args: argparse.Namespace) -> list[tuple[int, int]]:
    """The whole trace's (prompt, output) pairs, scaled and clipped as the trace slice's are."""
    from sloserve_operator.simulate.trace_files import load_trace
    from sloserve_operator.simulate.traces import scale_tokens

    requests = scale_tokens(load_trace(args.trace, seed=args.seed), args.token_scale)
    return [(min(max(r.prompt_tokens, 8), args.max_prompt_tokens), min(r.output_tokens, args.max_output_tokens))
            for r in requests]


def bursty_slice(args: argparse.Namespace, pool, burst_rate: float):
    """On/off MMPP arrivals (bench/autoscale.py's bursty shape: idle 1-5 min at 1/120 of the burst rate, bursts
    of 1-3 min whose rates spread log-normally), drawn on the uncompressed clock, then compressed
    --bursty-speedup times so that `burst_rate` is the mean burst rate on the replay clock."""
    from dataclasses import replace

    from sloserve_operator.simulate.scenarios import mmpp_bursty

    speedup = args.bursty_speedup
    slow_rate = burst_rate / speedup
    requests = mmpp_bursty(args.bursty_minutes * 60.0, slow_rate, pool, idle_rate=slow_rate / 120.0,
                           burst_spread=0.7, seed=args.bursty_seed)
    return [replace(r, arrival=r.arrival / speedup) for r in requests]


def compressed_peak_to_mean(requests, speedup: float) -> float:
    """Per-minute peak/mean on the uncompressed clock (the figure the issue's bursty scenarios use)."""
    from dataclasses import replace

    from sloserve_operator.simulate.scenarios import peak_to_mean

    return peak_to_mean([replace(r, arrival=r.arrival * speedup) for r in requests])


async def measure_profile(args: argparse.Namespace, spec_file: Path, workdir: Path, prompt_mean: float,
                          output_mean: float) -> tuple[Path, float, float]:
    """Start one replica exactly as local mode would, sweep it with `sloserve profile`, stop it. Returns the
    profile, the cold start, and the cores the replica used while it started (CPU seconds / cold start)."""
    import aiohttp
    from sloserve_operator.api.spec import validate_document
    from sloserve_operator.local.replicas import (
        DEFAULT_RUNTIME_COMMAND,
        free_port,
        runtime_args,
        terminate_process,
    )

    document = yaml.safe_load(spec_file.read_text())
    document["spec"]["admission"] = {"enabled": False}  # the sweep measures capacity: nothing may be refused
    service, problems = validate_document(document)
    assert service is not None, problems
    port = free_port()
    command = [*DEFAULT_RUNTIME_COMMAND, *runtime_args(service, port, threads=1, model=None)]
    log = open(workdir / "profile-runtime.log", "wb")
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for _ in range(600):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/ready") as response:
                        if response.status == 200:
                            break
                except (aiohttp.ClientError, TimeoutError, OSError):
                    pass
                await asyncio.sleep(0.2)
            else:
                raise SystemExit("the profiling replica did not become ready in 120 s")
        cold_start = time.monotonic() - started
        starting_cores = (process_cpu_seconds(process.pid) or cold_start) / cold_start
        output = workdir / "profile.json"
        prompt, out_tokens = round(prompt_mean), max(round(output_mean), 8)
        subprocess.run([sys.executable, "-m", "sloserve_operator.cli", "profile", "--url", f"http://127.0.0.1:{port}",
                        "--concurrency", "1,2,4,8,16", "--requests-per-level", "32", "--prompt-tokens", str(prompt),
                        "--output-tokens", str(out_tokens), "--max-batch-size", "16", "--max-batched-tokens", "512",
                        "--cold-start-seconds", f"{cold_start:.0f}", "--hardware", "this machine, 1 thread",
                        "-o", str(output), "--quiet"], check=True)
        return output, cold_start, starting_cores
    finally:
        await terminate_process(process, grace=30, name="profiling replica")
        log.close()


def host_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (/proc/stat); None off Linux."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a live process has used; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """How much of the host the replicas got during a replay, and how much everything else took (the router,
    the load generator, Prometheus, the operator loop): the simulator's shared-host rows charge the rest's
    CPU per request, as it comes with the traffic (a burst's proxying and sending). Replica CPU is sampled
    per process (a process's last sample before it ends counts), host CPU from /proc/stat."""

    def __init__(self) -> None:
        self.host_start = host_busy_seconds()
        self.replica: dict[int, tuple[float, float]] = {}  # pid -> (first seen, last seen) CPU seconds

    def sample(self, pids: list[int], at_start: bool) -> None:
        for pid in pids:
            seconds = process_cpu_seconds(pid)
            if seconds is not None:
                first = self.replica.get(pid, (seconds if at_start else 0.0, seconds))[0]
                self.replica[pid] = (first, seconds)

    def summary(self, requests: int) -> dict:
        host_end = host_busy_seconds()
        if self.host_start is None or host_end is None:
            return {}
        replicas = sum(last - first for first, last in self.replica.values())
        others = max(host_end - self.host_start - replicas, 0.0)
        return {"replica_cpu_seconds": replicas, "other_cpu_seconds": others,
                "other_cpu_per_request": others / max(requests, 1)}


async def replay(args: argparse.Namespace, spec_file: Path, name: str, workdir: Path, requests,
                 profile_path: Path | None) -> dict:
    """Serve the spec in local mode, replay the slice, integrate replica-seconds; stop everything."""
    from sloserve_operator.local.harness import UpProcess, ready_counts
    from sloserve_operator.local.loadgen import run_load
    from sloserve_operator.local.workload import Arrival

    document = yaml.safe_load(spec_file.read_text())
    serving_min = document["spec"]["scaling"]["minReplicas"]
    warm = document["spec"]["scaling"]["warmPool"]["size"]
    extra = ["--interval", str(args.interval), "--window", str(args.window), "--scrape-interval", "1"]
    if profile_path is not None:
        extra += ["--profile", str(profile_path)]
    up = UpProcess(spec_file, workdir / "run", name, extra).start()
    try:
        await up.wait_for("the initial fleet", lambda s: ready_counts(s) == (serving_min, warm), timeout=180)
        arrivals = [Arrival(r.arrival, r.prompt_tokens, r.output_tokens) for r in requests]
        span = max(a.at for a in arrivals)
        samples: list[tuple[float, int, int]] = []  # (replay time, processes, serving)
        cpu = CpuShare()
        cpu.sample((up.state() or {"pids": {"replicas": []}})["pids"]["replicas"], at_start=True)

        async def sample(start: float) -> None:
            while True:
                state = up.state()
                if state:
                    samples.append((time.monotonic() - start, len(state["pids"]["replicas"]),
                                    ready_counts(state)[0]))
                    cpu.sample(state["pids"]["replicas"], at_start=False)
                await asyncio.sleep(0.5)

        started = time.monotonic()
        sampler = asyncio.create_task(sample(started))
        report = await run_load(up.url, "smollm2-135m-instruct", arrivals, seed=args.seed, progress_every=3600,
                                extra={"ignore_eos": True})
        sampler.cancel()
        shares = cpu.summary(len(arrivals))
        state = up.state() or {}
    finally:
        code = up.stop()
    ttft_budget, itl_budget = _seconds(args.ttft), _seconds(args.itl)
    due = sorted(a.at for a in arrivals)  # the load generator numbers requests in arrival order
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"live-{args.slice}-{name}-timeline.json").write_text(json.dumps({
        "fleet": samples,  # (seconds into the replay, replica processes, ready serving)
        "requests": [  # in arrival order: when it was due, when it was sent, what came back
            {"due": due[r.index], "sent": r.sent_at, "status": r.status, "ttft": r.ttft,
             "itl_p95": r.itl_p95, "gaps": [round(gap, 4) for gap in r.itls],
             "within": r.within(ttft_budget, itl_budget)}
            for r in sorted(report.results, key=lambda r: r.index)]}))
    in_span = [(t, n, s) for t, n, s in samples if t <= span]
    replica_seconds = sum(n for _, n, _ in in_span) * span / max(len(in_span), 1)
    summary = report.summary(ttft_budget, itl_budget)
    refused = sum(1 for r in report.failed if r.status == 429)  # SLO admission (on by default): a miss, not lost
    causes = live_miss_causes(report.ok, ttft_budget, itl_budget)
    return {"within_both": summary["within_budget"], "replica_seconds": replica_seconds, "requests": len(arrivals),
            "failed": summary["failed"] - refused, "refused": refused, "ttft_p95": summary["ttft_p95"], "itl_p95": summary["itl_p95"],
            "scale_events": state.get("scale_events"), "peak_serving": max((s for _, _, s in in_span), default=0),
            "exit_code": code, "metrics": state.get("metrics_kind"), "miss_causes": causes, **shares}


def live_miss_causes(answered, ttft_budget: float, itl_budget: float) -> dict[str, float]:
    """The live side of simulate/recorder.py's miss_causes: late first tokens, first tokens in time with more
    than 5% of gaps over the ITL budget, and the share of all gaps over it."""
    late = sum(1 for r in answered if r.ttft is not None and r.ttft > ttft_budget)
    slow = sum(1 for r in answered if r.ttft is not None and r.ttft <= ttft_budget
               and not r.within(ttft_budget, itl_budget))
    gaps = [gap for r in answered for gap in r.itls]
    return {"late": late, "slow_itl": slow,
            "slow_gap_share": sum(gap > itl_budget for gap in gaps) / len(gaps) if gaps else 0.0}


def _seconds(text: str) -> float:
    from sloserve_operator.api.units import parse_duration

    return parse_duration(text)


def simulated(args: argparse.Namespace, spec_file: Path, requests, profile, cold_start: float, *, fixed: bool,
              host: SharedHost | None = None) -> dict:
    """The simulator on the same requests: each replica on its own hardware (a cluster), or with `host`,
    every replica on one machine, sharing its cores with the others and with the rest of the machine, as
    local mode's do."""
    from sloserve_operator.api.spec import validate_document
    from sloserve_operator.simulate.autoscalers import SloservePolicy, StaticPeak
    from sloserve_operator.simulate.run import simulate

    service, _ = validate_document(yaml.safe_load(spec_file.read_text()))
    autoscaler = StaticPeak(args.max_replicas) if fixed else SloservePolicy(profile, interval=args.interval)
    # No pre-roll: the live replay starts its fleet at minReplicas + the warm pool when the slice starts, so the
    # simulated one does too (a pre-roll would meet the first burst with a fleet already sized for it).
    result = simulate(requests, profile, service.spec, autoscaler, cold_start=cold_start, promotion=0.1,
                      window=args.window, initial_serving=None if fixed else args.min_replicas, warmup=0.0,
                      host=host)
    return {"within_both": result.within_both, "replica_seconds": result.replica_hours * 3600.0,
            "scale_events": result.scale_events, "refused": result.refused, "miss_causes": result.miss_causes,
            "cpu_per_request": host.cpu_per_request if host else None}


async def measure_host_cores(args: argparse.Namespace) -> tuple[float, list[float]]:
    """The cores this machine delivers once --max-replicas replicas are busy at once: bench/host_sharing.py's
    measurement (the same replicas as local mode's, closed-loop load, its own client's CPU added back). Processor
    sharing says all of them; caches, memory bandwidth and scheduling make it fewer (1.78-1.89 of 2 measured
    on 2026-12-07), and the ITL budget sits where a few percent of step time matter."""
    import host_sharing  # bench/, beside this script

    cores = os.cpu_count() or 1
    if args.max_replicas <= cores:  # the live fleet never oversubscribes the machine: nothing to measure
        return float(cores), []
    sharing = host_sharing.parse_args(["--replicas", str(args.max_replicas), "--trials", "2",
                                       "--prompt-words", "78", "--output-tokens", "17"])
    trials = await host_sharing.measured_trials(sharing)
    for number, trial in enumerate(trials, start=1):
        print("  " + host_sharing.report(trial, number, args.max_replicas, cores), flush=True)
    measured = [trial.effective_cores(cores) for trial in trials]
    return statistics.fmean(measured), measured


def with_steps_scaled(profile, factor: float):
    """The profile with every step `factor` times as long: the model error its own fit admits."""
    from dataclasses import replace

    step = profile.step
    return replace(profile, step=replace(step, base_seconds=step.base_seconds * factor,
                                         per_prefill_token_seconds=step.per_prefill_token_seconds * factor,
                                         per_decode_seq_seconds=step.per_decode_seq_seconds * factor,
                                         per_attended_token_seconds=step.per_attended_token_seconds * factor))


def fit_error_band(args: argparse.Namespace, spec_file: Path, requests, profile, cold_start: float, *, fixed: bool,
                   host: SharedHost) -> dict | None:
    """The shared-host simulation with steps (1 - e) and (1 + e) times as long, e the profile's own fit error.
    Near the budgets attainment moves several points per percent of step time, so a live figure inside this
    band is one the simulator cannot be said to miss with the profile it was given; outside it, the model
    is wrong by more than its input's measured error."""
    if not profile.fit_error:
        return None
    ends = [simulated(args, spec_file, requests, with_steps_scaled(profile, factor), cold_start, fixed=fixed,
                      host=host) for factor in (1.0 - profile.fit_error, 1.0 + profile.fit_error)]
    return {"fit_error": profile.fit_error,
            "within_both": sorted(end["within_both"] for end in ends),
            "replica_seconds": sorted(end["replica_seconds"] for end in ends)}


def band_line(label: str, live: dict, band: dict | None) -> str:
    """Whether live falls where the profile's own error leaves the simulation, in one line."""
    if band is None:
        return f"{label}: the profile carries no fit error (fitError), no band"
    low, high = band["within_both"]
    inside = low - 1e-9 <= live["within_both"] <= high + 1e-9
    return (f"{label}, steps within the profile's fit error (+-{band['fit_error']:.1%}): within both "
            f"{low * 100:.1f}%-{high * 100:.1f}%, replica-seconds {band['replica_seconds'][0]:.0f}-"
            f"{band['replica_seconds'][1]:.0f}; live {live['within_both'] * 100:.1f}% is "
            f"{'inside' if inside else 'OUTSIDE'} the band")


def table(rows: list[tuple[str, dict, dict, dict]], budgets: str) -> str:
    shared = "simulated, shared host"
    lines = [f"| fleet | within both budgets ({budgets}): live | simulated | {shared} | replica-seconds: live "
             f"| simulated | {shared} | scale events: live | simulated | refused (429): live | simulated | failed "
             "| live p95 TTFT / ITL |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, live, sim, host in rows:
        lines.append(f"| {name} | {live['within_both'] * 100:.1f}% | {sim['within_both'] * 100:.1f}% | "
                     f"{host['within_both'] * 100:.1f}% | {live['replica_seconds']:.0f} | "
                     f"{sim['replica_seconds']:.0f} | {host['replica_seconds']:.0f} | {live['scale_events']} | "
                     f"{sim['scale_events']} | {live['refused']} | {sim['refused']} | {live['failed']} | "
                     f"{(live['ttft_p95'] or 0) * 1000:.0f} ms / {(live['itl_p95'] or 0) * 1000:.0f} ms |")
    return "\n".join(lines)


def causes_table(rows: list[tuple[str, dict, dict, dict]]) -> str:
    """Misses cause by cause, live beside both simulations: where the simulator is wrong, not only by how much."""
    lines = ["| fleet | run | refused (429) | late first token | first token in time, ITL rule failed "
             "| gaps over the ITL budget |", "|---|---|---|---|---|---|"]
    for name, *runs in rows:
        for label, run in zip(("live", "simulated, a node each", "simulated, shared host"), runs, strict=True):
            causes = run.get("miss_causes") or {}
            lines.append(f"| {name} | {label} | {run['refused']} | {causes.get('late', 0)} "
                         f"| {causes.get('slow_itl', 0)} | {causes.get('slow_gap_share', 0.0):.2%} |")
    return "\n".join(lines)


def error_line(label: str, live: dict, sim: dict) -> str:
    """How far one simulated row is from live (the live check's goal: both within 10%)."""
    return (f"simulator error (simulated - live), {label}: within both "
            f"{(sim['within_both'] - live['within_both']) * 100:+.1f} points, replica-seconds "
            f"{relative(sim['replica_seconds'], live['replica_seconds']):+.1f}% (relative: within both "
            f"{relative(sim['within_both'], live['within_both']):+.1f}%; goal: both within 10%)")


def relative(simulated_value: float, live_value: float) -> float:
    """How far the simulator is from live, in percent of live (the live check's 10% goal)."""
    return (simulated_value / live_value - 1.0) * 100.0 if live_value else 0.0


async def main() -> int:
    args = parse_args()
    from sloserve_operator.autoscaler.decide.capacity import CapacityProfile, load_profile
    from sloserve_operator.simulate.fleet import SharedHost

    if args.slice == "trace":
        requests, rate_scale = load_slice(args)
        lengths = [(r.prompt_tokens, r.output_tokens) for r in requests]
        describe = (f"slice: {Path(args.trace).name} minutes {args.start_minute:g}-"
                    f"{args.start_minute + args.minutes:g}, {{n}} requests replayed over {{span:.0f}}s "
                    f"({args.speedup:g}x faster, rate x{rate_scale:.3f})")
    else:
        requests, lengths = [], length_pool(args)
    prompt_mean = statistics.mean(p for p, _ in lengths)
    output_mean = statistics.mean(o for _, o in lengths)
    with tempfile.TemporaryDirectory(prefix="sloserve-bench-live-") as tmp:
        workdir = Path(tmp)
        auto_file, fixed_file = workdir / "auto.yaml", workdir / "fixed.yaml"
        auto_file.write_text(yaml.safe_dump(spec_document(args, "live-auto", fixed=False)))
        fixed_file.write_text(yaml.safe_dump(spec_document(args, "live-fixed", fixed=True)))
        if args.profile == "measure":
            print("measuring a capacity profile of one replica (sloserve profile)...", flush=True)
            profile_path, cold_start, starting_cores = await measure_profile(args, auto_file, workdir, prompt_mean,
                                                                             output_mean)
            profile = CapacityProfile.from_json(profile_path.read_text())
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / f"live-{args.slice}-profile.json").write_text(profile_path.read_text())
        else:
            profile = load_profile(args.profile)
            profile_path = workdir / "profile.json"
            profile_path.write_text(profile.to_json())
            cold_start = float(profile.cold_start_seconds)
            starting_cores = 1.0  # a replica loads its weights on one core (measured: 1.00 on 2026-12-07)
        measured_cores: list[float] = []
        if args.host_cores is None:
            print(f"measuring what {args.max_replicas} busy replicas get of this machine's cores "
                  "(bench/host_sharing.py)...", flush=True)
            args.host_cores, measured_cores = await measure_host_cores(args)
        print(f"the shared host: {args.host_cores:.2f} cores", flush=True)
        one_replica = profile.max_rate_within_budget(_seconds(args.ttft), _seconds(args.itl), prompt_mean,
                                                     output_mean)
        print(f"the profile: one replica carries {one_replica:.2f} req/s within the budgets at the slice's mean "
              f"lengths; cold start {cold_start:.1f}s", flush=True)
        if args.slice == "bursty":
            burst_rate = args.burst_rate or args.burst_load * one_replica
            if burst_rate <= 0:
                raise SystemExit("the profile says one replica carries nothing within the budgets: set --burst-rate")
            requests = bursty_slice(args, lengths, burst_rate)
            if not requests:
                raise SystemExit("the bursty slice is empty")
            describe = (f"slice: bursty (MMPP seed {args.bursty_seed}, {args.bursty_minutes:g} min compressed "
                        f"{args.bursty_speedup:g}x, mean burst rate {burst_rate:.2f} req/s = "
                        f"{burst_rate / one_replica if one_replica else float('inf'):.2f}x one replica, per-minute "
                        f"peak/mean "
                        f"{compressed_peak_to_mean(requests, args.bursty_speedup):.1f} before compression), "
                        f"{{n}} requests over {{span:.0f}}s")
        span = requests[-1].arrival
        print(describe.format(n=len(requests), span=span) + f", prompt "
              f"{statistics.mean(r.prompt_tokens for r in requests):.0f} / output "
              f"{statistics.mean(r.output_tokens for r in requests):.0f} tokens on average", flush=True)
        print("replaying through local mode (autoscaled)...", flush=True)
        live_auto = await replay(args, auto_file, "live-auto", workdir, requests, profile_path)
        print(f"  {json.dumps(live_auto)}", flush=True)
        print(f"replaying through a fixed fleet of {args.max_replicas}...", flush=True)
        live_fixed = await replay(args, fixed_file, "live-fixed", workdir, requests, profile_path)
        print(f"  {json.dumps(live_fixed)}", flush=True)
        sim_auto = simulated(args, auto_file, requests, profile, cold_start, fixed=False)
        sim_fixed = simulated(args, fixed_file, requests, profile, cold_start, fixed=True)
        shared: dict[bool, tuple[dict, dict | None]] = {}  # fixed? -> (shared-host row, its fit-error band)
        for spec, fixed, live in ((auto_file, False, live_auto), (fixed_file, True, live_fixed)):
            host = SharedHost(args.host_cores, starting_cores, live.get("other_cpu_per_request", 0.0))
            shared[fixed] = (simulated(args, spec, requests, profile, cold_start, fixed=fixed, host=host),
                             fit_error_band(args, spec, requests, profile, cold_start, fixed=fixed, host=host))
        (host_auto, band_auto), (host_fixed, band_fixed) = shared[False], shared[True]
    budgets = f"TTFT {args.ttft}, ITL {args.itl}"
    rows = [(f"local mode, autoscaled {args.min_replicas}..{args.max_replicas} + {args.warm_pool} warm",
             live_auto, sim_auto, host_auto),
            (f"fixed fleet of {args.max_replicas}", live_fixed, sim_fixed, host_fixed)]
    print()
    print(table(rows, budgets))
    print()
    print(causes_table(rows))
    print()
    print(f"replica-seconds, autoscaled / fixed: live {live_auto['replica_seconds'] / live_fixed['replica_seconds']:.2f}, "
          f"simulated {sim_auto['replica_seconds'] / sim_fixed['replica_seconds']:.2f}")
    print(error_line("autoscaled, a node per replica", live_auto, sim_auto))
    for label, live, host in (("autoscaled", live_auto, host_auto), ("fixed", live_fixed, host_fixed)):
        print(error_line(f"{label}, shared host ({args.host_cores:.2f} cores, the rest "
                         f"{host['cpu_per_request'] * 1000:.0f} ms of CPU per request)", live, host))
    for label, live, band in (("autoscaled", live_auto, band_auto), ("fixed", live_fixed, band_fixed)):
        print(band_line(f"{label}, shared host", live, band))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"live-{args.slice}.json").write_text(json.dumps({
        "args": vars(args), "requests": len(requests), "span_seconds": span, "profile": profile.to_dict(),
        "one_replica_rate": one_replica, "cold_start": cold_start, "starting_cores": starting_cores,
        "host_cores_measured": measured_cores,
        "live_auto": live_auto, "live_fixed": live_fixed, "sim_auto": sim_auto, "sim_fixed": sim_fixed,
        "sim_shared_host_auto": host_auto, "sim_shared_host_fixed": host_fixed,
        "fit_error_band_auto": band_auto, "fit_error_band_fixed": band_fixed}, indent=1))
    failed = live_auto["failed"] + live_fixed["failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
