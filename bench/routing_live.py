"""`make bench-routing-live`: the routers on real SmolLM2 runtime replicas, the same shared-prefix workload
replayed through each, in one run; ratios against least-outstanding of the same run.

For every (workload, router) pair: start N runtime replicas as local mode does (local/replicas.py: the
ModelService's container flags, 1 thread each), put local mode's router (local/router.py) with that pick in
front, replay the workload open loop (bench/conversations.py: conversations extending the previous turn
under a shared system prompt, and a control with the same times and lengths and no shared prefix), read
each replica's own prefix-cache counters from /metrics, stop everything. Fresh replicas per pair, so no
router inherits another's cache. SLO admission is off here: every request is served and TTFT shows the
routing, not refusals.

    .venv/bin/python bench/routing_live.py                  # about 8 minutes on 2 cores
    .venv/bin/python bench/routing_live.py --routers prefix-scorer,least-outstanding --workloads shared
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
import conversations
from prometheus_client.parser import text_string_to_metric_families
from sloserve_operator.api.labels import SERVING
from sloserve_operator.api.spec import ModelService, validate_document
from sloserve_operator.autoscaler.decide.placement import DEFAULT_REGION
from sloserve_operator.load_client import LoadClient, RequestResult, percentile, served_model
from sloserve_operator.local.replicas import ReplicaSet, free_port
from sloserve_operator.local.router import Router
from sloserve_operator.local.rundir import RunDir

BASELINE = "least-outstanding"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--routers", default="prefix-scorer,least-outstanding,random")
    parser.add_argument("--workloads", default="shared,control", help="shared, control or both")
    parser.add_argument("--control-routers", default="prefix-scorer,least-outstanding",
                        help="routers run on the control (no prefix reuse)")
    shape = conversations.Shape()
    for field, value in vars(shape).items():
        parser.add_argument("--" + field.replace("_", "-"), type=type(value), default=value)
    parser.add_argument("--ttft", type=float, default=1.0, help="TTFT budget, seconds (the quickstart's 1 s)")
    parser.add_argument("--itl", type=float, default=0.1, help="ITL budget, seconds (the quickstart's 100 ms)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the rows and per-request results (JSON) here")
    return parser.parse_args(argv)


def service(replicas: int, ttft: float, itl: float) -> ModelService:
    """The quickstart's runtime and budgets at a fixed size, admission off."""
    document = {
        "apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "routing-live"},
        "spec": {
            "model": {"name": "smollm2-135m-instruct"},
            "runtime": {"maxBatchSize": 16, "maxBatchedTokens": 512, "maxModelLen": 2048, "threads": 1,
                        "prefixCaching": True},
            "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
            "slo": {"ttft": {"p95": f"{ttft * 1000:.0f}ms"}, "itl": {"p95": f"{itl * 1000:.0f}ms"}},
            "admission": {"enabled": False},
            "scaling": {"minReplicas": replicas, "maxReplicas": replicas, "warmPool": {"size": 0}},
        },
    }
    parsed, problems = validate_document(document)
    if parsed is None:
        raise SystemExit(f"bench spec invalid: {problems}")
    return parsed


async def wait_ready(replica_set: ReplicaSet, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await replica_set.supervise_once()
        if all(r.ready for r in replica_set.replicas.values()):
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"replicas not ready within {timeout:.0f}s; logs in {replica_set.run_dir.logs}")


async def prefix_counters(url: str) -> tuple[float, float]:
    """(prompt tokens looked up, tokens found) in one replica's prefix cache, from its own /metrics."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(url + "/metrics") as response:
            text = await response.text()
    found = {"sloserve:prefix_cache_queries": 0.0, "sloserve:prefix_cache_hits": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name in found:
            found[family.name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return found["sloserve:prefix_cache_queries"], found["sloserve:prefix_cache_hits"]


async def replay(url: str, turns: list[conversations.Turn]) -> list[RequestResult]:
    """Send every turn at its time (open loop) through one client; wait for all."""
    model = await served_model(url)
    results: list[RequestResult] = []
    async with LoadClient(url, model, timeout=600.0) as client:
        start = time.perf_counter()
        tasks = []
        for index, turn in enumerate(turns):
            delay = turn.at - (time.perf_counter() - start)
            if delay > 0:
                await asyncio.sleep(delay)
            result = RequestResult(index=index, sent_at=time.perf_counter() - start)
            results.append(result)
            tasks.append(asyncio.create_task(
                client.complete(turn.prompt, turn.max_tokens, result, {"ignore_eos": True})))
        await asyncio.gather(*tasks)
    return results


async def run_pair(args: argparse.Namespace, workload: str, router_name: str, turns: list[conversations.Turn],
                   base: Path) -> dict:
    """One router on fresh replicas: replay, read the caches, stop every process started here."""
    run_dir = RunDir(base / f"{workload}-{router_name}")
    replica_set = ReplicaSet(service(args.replicas, args.ttft, args.itl), run_dir, threads=1)
    router = Router(policy=router_name)
    try:
        for _ in range(args.replicas):
            replica_set.launch(DEFAULT_REGION, SERVING)
        await wait_ready(replica_set)
        port = free_port()
        await router.start("127.0.0.1", port)
        for replica in replica_set.replicas.values():
            router.add(replica.name, replica.url)
        urls = [r.url for r in replica_set.replicas.values()]
        before = [await prefix_counters(u) for u in urls]  # the start-up calibration prefill's lookups
        started = time.perf_counter()
        results = await replay(f"http://127.0.0.1:{port}", turns)
        duration = time.perf_counter() - started
        after = [await prefix_counters(u) for u in urls]
        served = {name: b["served"] for name, b in router.snapshot()["backends"].items()}
    finally:
        await router.stop()
        await replica_set.stop_all(grace=30.0)
    queries = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
    hits = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
    return row(workload, router_name, results, queries, hits, duration, served, args.ttft, args.itl)


def row(workload: str, router_name: str, results: list[RequestResult], queries: float, hits: float,
        duration: float, served: dict[str, int], ttft_budget: float, itl_budget: float) -> dict:
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    itls = [gap for r in ok for gap in r.itls]
    prompts = [r.usage_prompt_tokens for r in ok if r.usage_prompt_tokens]
    return {
        "workload": workload, "router": router_name, "requests": len(results), "failed": len(results) - len(ok),
        "duration_s": round(duration, 1), "mean_prompt_tokens": round(sum(prompts) / len(prompts)) if prompts else None,
        "hit_rate": hits / queries if queries else 0.0, "prompt_tokens_looked_up": queries,
        "ttft_p50": percentile(ttfts, 50), "ttft_p95": percentile(ttfts, 95), "itl_p95": percentile(itls, 95),
        "within_budget": sum(r.within(ttft_budget, itl_budget) for r in results) / len(results) if results else None,
        "served_per_replica": served,
        "results": [{"sent_at": r.sent_at, "ok": r.ok, "ttft": r.ttft, "itl_p95": r.itl_p95,
                     "prompt_tokens": r.usage_prompt_tokens, "error": r.error} for r in results],
    }


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or not baseline:
        return "-"
    return f"{value / baseline:.2f}x"


def table(rows: list[dict]) -> str:
    """Markdown rows with ratios to least-outstanding on the same workload (measured in this run)."""
    lines = ["| workload | router | hit rate | TTFT p50 | TTFT p95 (vs LO) | ITL p95 (vs LO) | within budget (vs LO) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next((b for b in rows if b["workload"] == r["workload"] and b["router"] == BASELINE), None) or {}
        itl = "-" if r["itl_p95"] is None else f"{r['itl_p95'] * 1000:.0f} ms"
        lines.append(
            f"| {r['workload']} | {r['router']} | {r['hit_rate']:.1%} | {seconds(r['ttft_p50'])} "
            f"({ratio(r['ttft_p50'], base.get('ttft_p50'))}) | {seconds(r['ttft_p95'])} "
            f"({ratio(r['ttft_p95'], base.get('ttft_p95'))}) | "
            f"{itl} "
            f"({ratio(r['itl_p95'], base.get('itl_p95'))}) | {r['within_budget']:.1%} "
            f"({ratio(r['within_budget'], base.get('within_budget'))}) |")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    shape = conversations.Shape(**{f: getattr(args, f) for f in vars(conversations.Shape())})
    shared = conversations.shared_prefix(shape, args.seed)
    plan = []
    workloads = args.workloads.split(",")
    if "shared" in workloads:
        plan += [("shared", name, shared) for name in args.routers.split(",")]
    if "control" in workloads:
        control = conversations.no_reuse_control(shared, args.seed)
        plan += [("control", name, control) for name in args.control_routers.split(",")]
    print(f"{len(shared)} requests per workload over {shared[-1].at:.0f} s, {args.replicas} replicas, "
          f"{len(plan)} runs", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="routing-live-") as base:
        for workload, router_name, turns in plan:
            rows.append(await run_pair(args, workload, router_name, turns, Path(base)))
            r = rows[-1]
            print(f"{workload:8s} {router_name:18s} hit {r['hit_rate']:.1%}  TTFT p50 {r['ttft_p50']}  "
                  f"p95 {r['ttft_p95']}  within {r['within_budget']:.1%}  failed {r['failed']}  "
                  f"served {r['served_per_replica']}", flush=True)
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
