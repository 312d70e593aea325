"""`sloserve up -f FILE`: run a ModelService on this machine: replicas, router, metrics, autoscaler.

Validates the file with the same api.py models as the CRD, starts the router (the Service), the metrics
backend (embedded Prometheus or direct scrape, and says which), the replica processes (min serving + the
warm pool), then the control loop. Ctrl-C or SIGTERM: stop taking requests, let in-flight ones finish,
stop every process it started (by PID), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import signal
import sys

from sloserve_operator.local.rundir import DEFAULT_BASE

log = logging.getLogger("sloserve.local")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True, help="ModelService YAML file")
    parser.add_argument("--name", default=None, help="which ModelService of a multi-document file")
    parser.add_argument("--host", default="127.0.0.1", help="router address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="router port (default 8000)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per replica (default: spec.runtime.threads, else 1)")
    parser.add_argument("--model", default=None,
                        help="model file or directory for every replica (default: from spec.model.uri)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between decisions (default 5)")
    parser.add_argument("--window", type=float, default=30.0,
                        help="metrics window in seconds for p95s and rates (default 30)")
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="Prometheus scrape interval (s)")
    parser.add_argument("--metrics", choices=["auto", "prometheus", "scrape"], default="auto",
                        help="auto: embedded Prometheus when the binary is installed, else direct scrape")
    parser.add_argument("--profile", default=None,
                        help="capacity profile (shipped name or JSON path) for the policy; default: learn online")
    parser.add_argument("--run-dir", default=str(DEFAULT_BASE), help="base of run directories (default .run)")
    parser.add_argument("--drain-timeout", type=float, default=30.0,
                        help="seconds in-flight requests get to finish on shutdown (default 30)")
    parser.add_argument("--runtime-command", default=None,
                        help="command that starts one replica, before its flags (default: this Python's "
                             "`-m sloserve_runtime`)")
    parser.add_argument("--runtime-arg", action="append", default=[],
                        help="extra flag for every replica (repeatable), e.g. --runtime-arg=--kv-cache-blocks=256")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])


def _load_service(args: argparse.Namespace):
    from sloserve_operator.api.manifest_io import load_documents
    from sloserve_operator.api.spec import validate_document

    documents = load_documents(args.filename)
    if not documents:
        raise ValueError(f"{args.filename}: no documents")
    chosen = [d for d in documents if not args.name or (d.get("metadata") or {}).get("name") == args.name]
    if not chosen:
        raise ValueError(f"{args.filename}: no ModelService named {args.name}")
    if len(chosen) > 1:
        raise ValueError(f"{args.filename}: {len(chosen)} documents; pick one with --name")
    service, problems = validate_document(chosen[0])
    if service is None:
        raise ValueError("\n".join(f"{args.filename}: {problem}" for problem in problems))
    return service


def _example_request(endpoint: str, model: str) -> str:
    import json

    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello in five words."}],
                       "max_tokens": 32})
    return f"curl -s {endpoint}/v1/chat/completions -H 'content-type: application/json' -d '{body}'"


def _already_running(run_dir) -> int | None:
    """The pid of a live `sloserve up` that owns this run directory, if any."""
    import json
    import os

    from sloserve_operator.local.replicas import process_alive

    try:
        state = json.loads(run_dir.state_file.read_text())
    except (OSError, ValueError):
        return None
    pid = int(state.get("pid") or 0)
    if state.get("stopped") or pid == os.getpid() or not process_alive(pid):
        return None
    return pid


async def serve(args: argparse.Namespace, service) -> int:
    from sloserve_operator.autoscaler.decide.capacity import load_profile
    from sloserve_operator.local.controller import Controller
    from sloserve_operator.local.prometheus import MetricsBackend
    from sloserve_operator.local.replicas import DEFAULT_RUNTIME_COMMAND, ReplicaSet
    from sloserve_operator.local.router import Router
    from sloserve_operator.local.rundir import RunDir

    run_dir = RunDir.for_service(service.metadata.name, args.run_dir)
    running = _already_running(run_dir)
    if running:
        print(f"sloserve up: {service.metadata.name} is already running here (pid {running}); stop it first "
              "or use another --run-dir", file=sys.stderr)
        return 1
    run_dir.ensure()
    threads = args.threads or service.spec.runtime.threads or 1
    profile = load_profile(args.profile) if args.profile else None
    endpoint = f"http://{args.host}:{args.port}"

    router = Router()
    try:
        await router.start(args.host, args.port)
    except OSError as error:
        print(f"sloserve up: cannot listen on {args.host}:{args.port}: {error} (use --port)", file=sys.stderr)
        return 1
    metrics = MetricsBackend(service, run_dir, mode=args.metrics, window_seconds=args.window,
                             scrape_interval=args.scrape_interval)
    command = shlex.split(args.runtime_command) if args.runtime_command else DEFAULT_RUNTIME_COMMAND
    replicas = ReplicaSet(service, run_dir, threads=threads, model=args.model, runtime_command=command,
                          extra_args=args.runtime_arg)
    controller = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks: list[asyncio.Task] = []
    try:
        try:
            await metrics.start()
        except RuntimeError as error:
            print(f"sloserve up: {error}", file=sys.stderr)
            return 1
        controller = Controller(service, replicas, router, metrics, run_dir, interval=args.interval,
                                endpoint=endpoint, profile=profile)
        controller.start()
        controller.write_state()
        spec = service.spec
        print(f"sloserve up: ModelService {service.metadata.name} ({spec.model.name})", flush=True)
        print(f"  endpoint  {endpoint}  (OpenAI-compatible; ready once the first replica has loaded)")
        print(f"  budgets   p95 TTFT {spec.slo.ttft.p95}, p95 ITL {spec.slo.itl.p95}; replicas "
              f"{spec.scaling.min_replicas}..{spec.scaling.max_replicas} + {spec.scaling.warm_pool.size} warm, "
              f"{threads} thread(s) each")
        print(f"  {metrics.describe()}")
        print(f"  run dir   {run_dir.root} (state, logs)")
        print(f"  try       {_example_request(endpoint, spec.model.name)}")
        print(f"  load      sloserve load --url {endpoint} --rate 1 --step-to 6 --duration 120")
        print("  watch     sloserve status -w 2        (Ctrl-C here stops everything)", flush=True)
        tasks = [asyncio.create_task(replicas.supervise()), asyncio.create_task(controller.run(stop))]
        await stop.wait()
        print("sloserve up: shutting down: draining in-flight requests, stopping replicas", flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if controller is not None:
            await controller.shutdown(args.drain_timeout)
        else:
            await replicas.stop_all(grace=args.drain_timeout)
        await metrics.stop()
        await router.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    left = replicas.live_pids()
    if left:
        print(f"sloserve up: processes still alive: {left}", file=sys.stderr)
        return 1
    print("sloserve up: stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    from sloserve_operator.local.replicas import LocalModeError

    try:
        service = _load_service(args)
    except (OSError, ValueError) as error:
        print(f"sloserve up: {error}", file=sys.stderr)
        return 1
    from pathlib import Path

    if args.model and not Path(args.model).exists():
        print(f"sloserve up: --model {args.model}: no such file or directory", file=sys.stderr)
        return 1
    try:
        return asyncio.run(serve(args, service))
    except (LocalModeError, RuntimeError) as error:  # ours: each says what to change
        print(f"sloserve up: {error}", file=sys.stderr)
        return 1
