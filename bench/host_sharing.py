"""Do local replicas on one machine slow each other beyond sharing its cores? (the premise of the simulator's
SharedHost, which bench/live.py's shared-host rows use)

Starts N replicas of the bundled runtime as local mode does (1 thread each, admission off), then measures
replica A's closed-loop throughput alone and while all N are loaded the same way, --trials times. Processor
sharing predicts a slowdown of max(1, N / cores); more than that (memory bandwidth, caches) would mean the
shared host model is optimistic, and the cores the machine did deliver (what the replicas did together, in
replicas-alone, plus what this client took) are what bench/live.py gives its shared host. Replica A's
inter-token gaps (streamed) are compared the same way, quantile by quantile: the shared host slows every
step by the same factor, so ratios that grow from the median to p90 mean sharing spreads the steps out
(some wait for a core longer than others), which a uniform factor does not. Prints ratios measured in the
same run, not absolute rates.

    .venv/bin/python bench/host_sharing.py --replicas 2     # about 1 minute on 2 cores
    .venv/bin/python bench/host_sharing.py --replicas 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
from dataclasses import dataclass

import httpx

MODEL = "smollm2-135m-instruct"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per replica")
    parser.add_argument("--requests", type=int, default=96, help="per replica and measurement")
    parser.add_argument("--prompt-words", type=int, default=78, help="about one token each")
    parser.add_argument("--output-tokens", type=int, default=17)
    parser.add_argument("--trials", type=int, default=2)
    return parser.parse_args(argv)


def start_replicas(count: int) -> tuple[list[subprocess.Popen], list[int]]:
    """Runtime processes exactly as local mode starts them, admission off (nothing may be refused)."""
    from sloserve_operator.api.spec import validate_document
    from sloserve_operator.local.replicas import DEFAULT_RUNTIME_COMMAND, free_port, runtime_args

    service, problems = validate_document({
        "apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "host-sharing"},
        "spec": {"model": {"name": MODEL},
                 "runtime": {"maxBatchSize": 16, "maxBatchedTokens": 512, "maxModelLen": 1024, "threads": 1},
                 "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
                 "slo": {"ttft": {"p95": "1s"}, "itl": {"p95": "300ms"}}, "admission": {"enabled": False}}})
    if service is None:
        raise SystemExit(f"invalid spec: {problems}")
    processes, ports = [], []
    for _ in range(count):
        port = free_port()
        ports.append(port)
        processes.append(subprocess.Popen([*DEFAULT_RUNTIME_COMMAND, *runtime_args(service, port, threads=1, model=None)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return processes, ports


async def wait_ready(client: httpx.AsyncClient, ports: list[int], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/ready", timeout=1)).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"a replica did not become ready in {timeout:.0f} s")
            await asyncio.sleep(0.2)


async def throughput(client: httpx.AsyncClient, port: int, args: argparse.Namespace,
                     requests: int) -> tuple[float, list[float]]:
    """Requests per second one replica completes with `args.concurrency` in flight, and every inter-token gap."""
    gate = asyncio.Semaphore(args.concurrency)
    body = {"model": MODEL, "prompt": "hello " * args.prompt_words, "max_tokens": args.output_tokens,
            "ignore_eos": True, "temperature": 0, "stream": True}
    gaps: list[float] = []

    async def one() -> None:
        async with gate, client.stream("POST", f"http://127.0.0.1:{port}/v1/completions", json=body) as response:
            response.raise_for_status()
            last = None
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                now = time.monotonic()
                if last is not None:
                    gaps.append(now - last)
                last = now

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(requests)))
    return requests / (time.monotonic() - started), gaps


def quantile_ratios(alone: list[float], together: list[float]) -> str:
    """Together / alone at the median, p90 and p99 of the gaps."""
    cuts = {50: 49, 90: 89, 99: 98}  # statistics.quantiles(n=100) index of each percentile
    ones, both = statistics.quantiles(alone, n=100), statistics.quantiles(together, n=100)
    return ", ".join(f"p{q} {both[i] / ones[i]:.2f}x ({ones[i] * 1000:.0f} -> {both[i] * 1000:.0f} ms)"
                     for q, i in cuts.items())


@dataclass
class Trial:
    alone: float  # replica A's requests per second alone
    rates: list[float]  # every replica's, all busy at once
    client_cores: float  # what this client took meanwhile (it streams every token of every replica)
    alone_gaps: list[float]
    together_gaps: list[float]  # replica A's, all busy

    @property
    def total(self) -> float:
        """What all replicas together did, in replicas-alone (one replica alone has a core)."""
        return sum(self.rates) / self.alone

    def effective_cores(self, cores: int) -> float:
        """The cores this machine delivered to the replicas and this client: processor sharing says
        `cores` once they want more; contention (caches, memory bandwidth, scheduling) makes it fewer.
        Meaningful only while oversubscribed (more busy replicas than the client leaves cores for)."""
        return min(float(cores), self.total + self.client_cores)


async def trials(ports: list[int], args: argparse.Namespace) -> list[Trial]:
    """Replica A alone, then every replica at once, `args.trials` times."""
    out = []
    async with httpx.AsyncClient(timeout=300) as client:
        await wait_ready(client, ports)
        await asyncio.gather(*(throughput(client, port, args, 16) for port in ports))  # warm-up
        for _ in range(args.trials):
            alone, alone_gaps = await throughput(client, ports[0], args, args.requests)
            cpu, wall = time.process_time(), time.monotonic()
            together = await asyncio.gather(*(throughput(client, port, args, args.requests) for port in ports))
            client_cores = (time.process_time() - cpu) / (time.monotonic() - wall)
            out.append(Trial(alone, [rate for rate, _ in together], client_cores, alone_gaps, together[0][1]))
    return out


async def measured_trials(args: argparse.Namespace) -> list[Trial]:
    """Start `args.replicas` replicas, measure, stop them (by PID, whatever happens)."""
    from sloserve_operator.local.replicas import terminate_process

    processes, ports = start_replicas(args.replicas)
    try:
        return await trials(ports, args)
    finally:
        await asyncio.gather(*(terminate_process(p, grace=30, name="replica") for p in processes))


def report(trial: Trial, number: int, replicas: int, cores: int) -> str:
    """One trial against what processor sharing predicts for it, in one line."""
    share = min(1.0, (cores - trial.client_cores) / replicas)
    return (f"trial {number}: {replicas} replicas busy on {cores} cores: replica A at "
            f"{trial.rates[0] / trial.alone:.2f}x its throughput alone (processor sharing predicts "
            f"{1 / max(1.0, replicas / cores):.2f}x, or {share:.2f}x beside this client's "
            f"{trial.client_cores:.2f} core); all together {trial.total:.2f}x one alone, so the machine "
            f"delivered {trial.effective_cores(cores):.2f} of its {cores} cores; replica A's gaps together / "
            f"alone: {quantile_ratios(trial.alone_gaps, trial.together_gaps)} (processor sharing: "
            f"{max(1.0, replicas / cores):.2f}x at every quantile)")


def main() -> int:
    args = parse_args()
    cores = os.cpu_count() or 1
    for number, trial in enumerate(asyncio.run(measured_trials(args)), start=1):
        print(report(trial, number, args.replicas, cores), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
