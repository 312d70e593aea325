"""The reactive frontier: what meeting the objective costs a policy that knows the past exactly.

For each named scenario (bench/autoscale.py's), the oracle's per-minute needs (simulate/oracle.py) are
replayed as a policy that learns each minute's need once the minute has ended and holds k times the largest
need of the last M minutes (simulate/reactive_reference.py: reactive_frontier; k = 1 is the reactive
reference of the summary table). Per memory M, the margins k rise until the objective is met; the cheapest
replay meeting it is the frontier's point. Where that point costs more than 1.25x the oracle (with the
spec's warm pod added: every policy obeying the spec pays for it), no setting of this family meets the
objective and the oracle target together, with exact knowledge of every past minute. It is a family, not
every policy: a policy that sees inside a minute reacts sooner, one that learned a trace's pattern can
anticipate it. Results go to <out>/<scenario>/frontier.json; the table is printed (and written to
<out>/frontier.md) from what is there.

    .venv/bin/python bench/reactive_frontier.py --only bursty-cpu          # one scenario (a minute or two)
    .venv/bin/python bench/reactive_frontier.py --set all --jobs 2         # every named scenario
    .venv/bin/python bench/reactive_frontier.py --table                    # the table from what is stored
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import autoscale
from autoscale import ROOT, SCENARIOS, WARM_POOL, scenario_spec
from sloserve_operator.simulate.report import ORACLE_TARGET


def measure(name: str, out: Path) -> str:
    """Run the oracle and the frontier on one scenario; write frontier.json; return a progress line."""
    from sloserve_operator.autoscaler.decide.capacity import load_profile
    from sloserve_operator.simulate.oracle import run_oracle
    from sloserve_operator.simulate.reactive_reference import reactive_frontier

    started = time.monotonic()
    scenario = SCENARIOS[name]
    profile, spec, requests = load_profile(scenario.profile), scenario_spec(scenario), scenario.build()
    oracle, minutes = run_oracle(requests, profile, spec)
    points = reactive_frontier(requests, profile, spec, minutes)
    record = {
        "scenario": name, "objective": spec.slo.objective_fraction,
        "span_hours": (requests[-1].arrival - requests[0].arrival) / 3600.0,
        "oracle": {"within_both": oracle.within_both, "replica_hours": oracle.replica_hours},
        "points": [{"memory": memory, "multiplier": multiplier, "within_both": result.within_both,
                    "replica_hours": result.replica_hours} for result, memory, multiplier in points],
    }
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "frontier.json").write_text(json.dumps(record, indent=1) + "\n")
    return f"{name}: {len(points)} replays, {time.monotonic() - started:.0f} s"


def _measure_one(job: tuple[str, str]) -> str:
    return measure(job[0], Path(job[1]))


def _stored_sloserve(path: Path) -> dict | None:
    """sloserve's row of a scenario's results.json (bench/autoscale.py), if it was run."""
    if not path.exists():
        return None
    return next((r for r in json.loads(path.read_text()).get("rows", []) if r["policy"] == "sloserve"), None)


def table(out: Path, names: list[str]) -> str:
    """One row per scenario with a stored frontier.json, beside sloserve's stored result (results.json)."""
    lines = ["| scenario | oracle: within, replica-hours | frontier: cheapest replay meeting the objective "
             "(margin x largest need of the last M min) | vs oracle | with the spec's warm pod, vs oracle "
             "| sloserve: within, replica-hours (vs frontier) |", "|---|---|---|---|---|---|"]
    tally = {"met": 0, "within_target": 0, "count": 0}
    for name in names:
        path = out / name / "frontier.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        objective, oracle = record["objective"], record["oracle"]
        meeting = [p for p in record["points"] if p["within_both"] >= objective]
        ours = _stored_sloserve(out / name / "results.json")
        ours_text = "-" if ours is None else f"{ours['within_both']:.2%}, {ours['replica_hours']:.2f}"
        tally["count"] += 1
        if not meeting:
            best = max(record["points"], key=lambda p: (p["within_both"], -p["replica_hours"]))
            point_text = (f"none meets it; best {best['multiplier']:g}x, {best['memory']} min: "
                          f"{best['within_both']:.2%}, {best['replica_hours']:.2f}")
            ratio_text = warm_text = "-"
        else:
            cheapest = min(meeting, key=lambda p: p["replica_hours"])
            tally["met"] += 1
            ratio = cheapest["replica_hours"] / oracle["replica_hours"]
            warm = (cheapest["replica_hours"] + WARM_POOL * record["span_hours"]) / oracle["replica_hours"]
            tally["within_target"] += warm <= ORACLE_TARGET
            point_text = (f"{cheapest['multiplier']:g}x, {cheapest['memory']} min: {cheapest['within_both']:.2%}, "
                          f"{cheapest['replica_hours']:.2f}")
            ratio_text, warm_text = f"{ratio:.2f}x", f"{warm:.2f}x"
            if ours is not None:
                ours_text += f" ({ours['replica_hours'] / cheapest['replica_hours']:.2f}x)"
        lines.append(f"| {name} | {oracle['within_both']:.2%}, {oracle['replica_hours']:.2f} | {point_text} "
                     f"| {ratio_text} | {warm_text} | {ours_text} |")
    lines += ["", f"- the frontier meets the objective in {tally['met']} of {tally['count']} scenarios; with the "
                  f"spec's warm pod, at <= {ORACLE_TARGET}x the oracle in {tally['within_target']} of "
                  f"{tally['count']}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="just these scenarios")
    parser.add_argument("--set", choices=("shared", "dev", "held-out", "new", "all"), default="all")
    parser.add_argument("--out", help="where results go (default docs/autoscaling/)")
    parser.add_argument("--jobs", type=int, default=1, help="scenarios measured at once (one core each)")
    parser.add_argument("--table", action="store_true", help="only print the table from what is stored")
    args = parser.parse_args()
    missing = [str(path) for path in (autoscale.AZURE, autoscale.MOONCAKE) if not path.exists()]
    if missing:
        print(f"reactive_frontier: traces not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    out = Path(args.out or ROOT / "docs" / "autoscaling")
    names = autoscale.scenario_names(args.set, args.only)
    if not args.table:
        jobs = [(name, str(out)) for name in names]
        if args.jobs > 1:
            with multiprocessing.Pool(args.jobs) as pool:
                for line in pool.imap_unordered(_measure_one, jobs):
                    print(line, file=sys.stderr, flush=True)
        else:
            for job in jobs:
                print(_measure_one(job), file=sys.stderr, flush=True)
    text = table(out, [n for n in SCENARIOS if n in names or args.table])
    print(text)
    (out / "frontier.md").parent.mkdir(parents=True, exist_ok=True)
    (out / "frontier.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
