"""`make bench-admission-live`: the quickstart in local mode (`sloserve up`, max 3 replicas, autoscaler on)
driven past its capacity, with SLO admission on (the default) and off, in one run.

Each arm starts `sloserve up` on the quickstart spec (the admission arm as shipped; the other with
spec.admission.enabled: false), waits for its first serving replica, sends a constant open-loop rate through
local mode's load generator (local/loadgen.py) and samples every replica's waiting gauge
(sloserve:num_requests_waiting) once a second. Reported per arm: requests refused (429), the peak of the
summed waiting gauges, p95 TTFT and the share within both budgets of the admitted requests, when the
autoscaler's replicas became ready and when the last refusal was sent (seconds from the start of the load).
Also each replica's admission model (/debug/engine, sampled with the gauge): observed / expected TTFT over
its last ~10 admitted requests, 1 when the estimate tracks what happened.

    .venv/bin/python bench/admission_live.py                       # 12 req/s for 60 s per arm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sloserve_operator.api.units import parse_duration
from sloserve_operator.load_client import percentile
from sloserve_operator.local.harness import UpProcess, ready_counts
from sloserve_operator.local.loadgen import run_load
from sloserve_operator.local.workload import step_schedule

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=12.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--prompt-tokens", type=int, default=64, help="`sloserve load`'s default")
    parser.add_argument("--max-tokens", type=int, default=64, help="`sloserve load`'s default")
    parser.add_argument("--arms", default="on,off")
    parser.add_argument("--out", default=None)
    return parser.parse_args()


async def waiting_total(session: aiohttp.ClientSession, urls: list[str]) -> float:
    total = 0.0
    for url in urls:
        try:
            async with session.get(url + "/metrics") as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            continue
        for family in text_string_to_metric_families(text):
            if family.name == "sloserve:num_requests_waiting":
                total += sum(s.value for s in family.samples)
    return total


async def admission_states(session: aiohttp.ClientSession, urls: list[str], into: dict[str, dict]) -> None:
    """Each replica's admission model state (/debug/engine), the latest kept per replica."""
    for url in urls:
        try:
            async with session.get(url + "/debug/engine") as response:
                state = (await response.json()).get("admission")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            continue
        if state:
            into[url] = state


async def run_arm(arm: str, args: argparse.Namespace, base: Path) -> dict:
    document = yaml.safe_load(QUICKSTART.read_text())
    document["spec"]["admission"] = {"enabled": arm == "on"}
    spec_file = base / f"quickstart-admission-{arm}.yaml"
    spec_file.write_text(yaml.safe_dump(document))
    up = UpProcess(spec_file, base / f"run-{arm}", document["metadata"]["name"]).start()
    samples: list[tuple[float, float, int]] = []  # (seconds into the load, summed waiting, serving replicas)
    models: dict[str, dict] = {}  # replica URL -> its admission model state, last sampled
    try:
        await up.wait_for("a serving replica", lambda s: ready_counts(s)[0] >= 1, timeout=240)
        arrivals = step_schedule([(args.rate, args.duration)], prompt_tokens=args.prompt_tokens,
                                 max_tokens=args.max_tokens)
        start = time.time()
        stop = asyncio.Event()

        async def sample() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
                while not stop.is_set():
                    state = up.state() or {"replicas": []}
                    urls = [r["url"] for r in state["replicas"] if r["ready"]]
                    serving = ready_counts(state)[0] if state["replicas"] else 0
                    samples.append((time.time() - start, await waiting_total(session, urls), serving))
                    await admission_states(session, urls, models)
                    await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        report = await run_load(up.url, document["spec"]["model"]["name"], arrivals, request_timeout=600)
        stop.set()
        await sampler
    finally:
        up.stop()
    slo = document["spec"]["slo"]
    ttft_budget, itl_budget = parse_duration(slo["ttft"]["p95"]), parse_duration(slo["itl"]["p95"])
    refused = [r for r in report.results if r.status == 429]
    admitted = [r for r in report.results if r.status != 429]
    ttfts = [r.ttft for r in admitted if r.ok and r.ttft is not None]
    serving_from: dict[int, float] = {}  # serving replicas -> first second the load saw that many
    for at, _, serving in samples:
        serving_from.setdefault(serving, round(at, 1))
    return {
        "arm": arm, "requests": len(report.results), "refused": len(refused), "admitted": len(admitted),
        "admitted_failed": sum(not r.ok for r in admitted),
        "waiting_peak": max((w for _, w, _ in samples), default=0.0),
        "ttft_p95_admitted": percentile(ttfts, 95), "ttft_p50_admitted": percentile(ttfts, 50),
        "admitted_within_budget": (sum(r.within(ttft_budget, itl_budget) for r in admitted) / len(admitted)
                                   if admitted else None),
        "first_refusal_s": min((r.sent_at for r in refused), default=None),
        "last_refusal_s": max((r.sent_at for r in refused), default=None),
        "serving_replicas_from_s": serving_from,
        "duration_s": round(report.duration, 1), "waiting_samples": samples,
        # observed / expected TTFT of each replica's last ~10 admitted requests (decayed sums): 1 = on target
        "observed_over_expected": {url: round(m["observed_sum"] / m["expected_sum"], 2)
                                   for url, m in models.items() if m.get("expected_sum")},
        "admission_models": models,
    }


def line(row: dict) -> str:
    def s(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"
    within = row["admitted_within_budget"]
    return (f"admission {row['arm']:3s}: {row['requests']} sent, {row['refused']} refused, "
            f"{row['admitted_failed']} admitted failed, waiting peak {row['waiting_peak']:.0f}, admitted TTFT p50 "
            f"{s(row['ttft_p50_admitted'])} p95 {s(row['ttft_p95_admitted'])}, within budget "
            f"{'-' if within is None else f'{within:.1%}'}, refusals {s(row['first_refusal_s'])}.."
            f"{s(row['last_refusal_s'])}, serving replicas (count: from second) {row['serving_replicas_from_s']}, "
            f"done in {row['duration_s']} s, observed/expected TTFT per replica {row['observed_over_expected']}")


async def main() -> int:
    args = parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="admission-live-") as base:
        for arm in args.arms.split(","):
            rows.append(await run_arm(arm, args, Path(base)))
            print(line(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
