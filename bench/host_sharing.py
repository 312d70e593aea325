"""Do local replicas on one machine slow each other beyond sharing its cores? (the premise of the simulator's
SharedHost, which bench/live.py's shared-host rows use)

Starts N replicas of the bundled runtime as local mode does (1 thread each, admission off), then measures
replica A's closed-loop throughput alone and while all N are loaded the same way, twice. Processor sharing
predicts a slowdown of max(1, N / cores); more than that (memory bandwidth, caches) would mean the shared
host model is optimistic. Prints ratios measured in the same run, not absolute rates.

    .venv/bin/python bench/host_sharing.py --replicas 2     # about 1 minute on 2 cores
    .venv/bin/python bench/host_sharing.py --replicas 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time

import httpx

MODEL = "smollm2-135m-instruct"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per replica")
    parser.add_argument("--requests", type=int, default=96, help="per replica and measurement")
    parser.add_argument("--prompt-words", type=int, default=78, help="about one token each")
    parser.add_argument("--output-tokens", type=int, default=17)
    parser.add_argument("--trials", type=int, default=2)
    return parser.parse_args()


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


async def throughput(client: httpx.AsyncClient, port: int, args: argparse.Namespace, requests: int) -> float:
    """Requests per second one replica completes with `args.concurrency` in flight."""
    gate = asyncio.Semaphore(args.concurrency)
    body = {"model": MODEL, "prompt": "hello " * args.prompt_words, "max_tokens": args.output_tokens,
            "ignore_eos": True, "temperature": 0}

    async def one() -> None:
        async with gate:
            response = await client.post(f"http://127.0.0.1:{port}/v1/completions", json=body)
            response.raise_for_status()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(requests)))
    return requests / (time.monotonic() - started)


async def measure(ports: list[int], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    async with httpx.AsyncClient(timeout=300) as client:
        await wait_ready(client, ports)
        await asyncio.gather(*(throughput(client, port, args, 16) for port in ports))  # warm-up
        for trial in range(1, args.trials + 1):
            alone = await throughput(client, ports[0], args, args.requests)
            together = await asyncio.gather(*(throughput(client, port, args, args.requests) for port in ports))
            print(f"trial {trial}: {len(ports)} replicas busy on {cores} cores: replica A at "
                  f"{together[0] / alone:.2f}x its throughput alone (processor sharing predicts "
                  f"{1 / max(1.0, len(ports) / cores):.2f}x); all together {sum(together) / alone:.2f}x one alone",
                  flush=True)


async def run(args: argparse.Namespace) -> None:
    from sloserve_operator.local.replicas import terminate_process

    processes, ports = start_replicas(args.replicas)
    try:
        await measure(ports, args)
    finally:
        await asyncio.gather(*(terminate_process(p, grace=30, name="replica") for p in processes))


def main() -> int:
    asyncio.run(run(parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
