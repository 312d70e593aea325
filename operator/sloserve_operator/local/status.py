"""`sloserve status`: a local ModelService at a glance, like `kubectl get msvc` (reads the state file)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from sloserve_operator.local.replicas import process_alive
from sloserve_operator.local.rundir import DEFAULT_BASE, RunDir, find_run_dirs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=None, help="ModelService name (default: the newest run)")
    parser.add_argument("--run-dir", default=str(DEFAULT_BASE), help="base of run directories (default .run)")
    parser.add_argument("--decisions", type=int, default=5, help="last decisions to show (default 5)")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    parser.add_argument("-w", "--watch", type=float, default=None, metavar="SECONDS",
                        help="print again every SECONDS until Ctrl-C")


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 10 else f"{value:.1f}s"


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def fleet_figures(state: dict[str, Any]) -> dict[str, Any]:
    """The fleet-wide p95s (worst region), request rate (sum) and within-budget fractions (worst)."""
    regions = (state.get("observed") or {}).get("regions") or {}

    def worst(key: str, pick=max) -> float | None:
        values = [r[key] for r in regions.values() if r.get(key) is not None]
        return pick(values) if values else None

    rates = [r["request_rate"] for r in regions.values() if r.get("request_rate") is not None]
    return {"ttft_p95": worst("ttft_p95"), "itl_p95": worst("itl_p95"), "rate": sum(rates) if rates else None,
            "ttft_within": worst("ttft_within_budget", min), "itl_within": worst("itl_within_budget", min)}


def liveness(state: dict[str, Any], now: float) -> str:
    if state.get("stopped"):
        return "stopped"
    if not process_alive(int(state.get("pid") or 0)):
        return "not running (sloserve up exited without cleaning up)"
    age = now - float(state.get("updated_at") or 0)
    if age > 3 * float(state.get("interval") or 10) + 5:
        return f"running, but the state file is {age:.0f}s old"
    return "running"


def format_status(state: dict[str, Any], *, decisions: int = 5, now: float | None = None) -> str:
    now = time.time() if now is None else now
    figures = fleet_figures(state)
    slo = state["slo"]
    current, desired = state["current"], state["desired"]
    serving, warm = sum(current["serving"].values()), sum(current["warm"].values())
    replicas = [r for r in state["replicas"] if not r.get("stopping")]
    within = [f for f in (figures["ttft_within"], figures["itl_within"]) if f is not None]
    slo_met = "-" if figures["ttft_p95"] is None and not within else (
        "True" if (min(within) >= 0.95 if within else
                   (figures["ttft_p95"] or 0) <= slo["ttft_p95"] and (figures["itl_p95"] or 0) <= slo["itl_p95"])
        else "False")
    rate = "-" if figures["rate"] is None else f"{figures['rate']:.2f}/s"
    header = ["NAME", "SERVING", "WARM", "DESIRED", "REPLICAS", "TTFT-P95", "ITL-P95", "RATE", "SLO-MET", "AGE"]
    row = [state["name"], str(serving), str(warm), str(sum(desired["serving"].values())), str(len(replicas)),
           f"{_ms(figures['ttft_p95'])}/{_ms(slo['ttft_p95'])}", f"{_ms(figures['itl_p95'])}/{_ms(slo['itl_p95'])}",
           rate, slo_met, _age(now - state["started_at"])]
    lines = [_table([header, row]), ""]
    lines.append(f"endpoint {state['endpoint']}   {state['metrics']}   ({liveness(state, now)})")
    problems = (state.get("observed") or {}).get("problems") or []
    if problems:
        lines.append("metrics problems: " + "; ".join(problems))
    lines.append("")
    replica_rows = [["REPLICA", "REGION", "ROLE", "READY", "PORT", "PID", "RESTARTS", "IN-FLIGHT", "SERVED", "AGE"]]
    backends = (state.get("router") or {}).get("backends") or {}
    for replica in replicas:
        backend = backends.get(replica["name"]) or {}
        replica_rows.append([
            replica["name"], replica["region"], replica["role"], "yes" if replica["ready"] else "no",
            str(replica["port"]), str(replica["pid"]), str(replica["restarts"]),
            str(backend.get("outstanding", "-")), str(backend.get("served", "-")),
            _age(now - replica["created_at"]),
        ])
    lines.append(_table(replica_rows))
    # The last changes of size, then the latest decision if it only held.
    latest = state.get("decisions", [])[-1:]
    shown = state.get("changes", [])[-decisions:] if decisions > 0 else []
    if latest and (not shown or latest[0]["time"] > shown[-1]["time"]) and decisions > 0:
        shown = (shown + latest)[-decisions:]
    if shown:
        lines += ["", "LAST DECISIONS"]
        for decision in shown:
            stamp = time.strftime("%H:%M:%S", time.localtime(decision["time"]))
            lines.append(f"  {stamp}  serving {decision['serving_from']} -> {decision['serving_to']}, "
                         f"warm {decision['warm_to']}: {decision['reason']}")
    return "\n".join(lines)


def load_state(run_dir: RunDir) -> dict[str, Any]:
    return json.loads(run_dir.state_file.read_text())


def _resolve(args: argparse.Namespace) -> RunDir | None:
    if args.name:
        run_dir = RunDir.for_service(args.name, args.run_dir)
        return run_dir if run_dir.state_file.is_file() else None
    found = find_run_dirs(args.run_dir)
    return found[0] if found else None


def run(args: argparse.Namespace) -> int:
    run_dir = _resolve(args)
    if run_dir is None:
        where = Path(args.run_dir) / (args.name or "*")
        print(f"sloserve status: no local ModelService state at {where}/state.json "
              "(start one with `sloserve up -f FILE`)", file=sys.stderr)
        return 1
    try:
        while True:
            try:
                state = load_state(run_dir)
            except (OSError, ValueError) as error:
                print(f"sloserve status: cannot read {run_dir.state_file}: {error}", file=sys.stderr)
                return 1
            if args.output == "json":
                print(json.dumps(state, indent=1))
            else:
                print(format_status(state, decisions=args.decisions))
            if not args.watch:
                return 0
            time.sleep(args.watch)
            print()
    except KeyboardInterrupt:
        return 0
