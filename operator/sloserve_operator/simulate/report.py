"""The scorecard: a markdown table, the targets checked against it, and PNG plots over time."""

from __future__ import annotations

import math
from pathlib import Path

from sloserve_operator.simulate.compare import ORACLE, Comparison, Entry

ORACLE_TARGET = 1.25  # sloserve's replica-hours at most this multiple of the clairvoyant oracle's
BURSTY_STATIC_TARGET = 0.65  # on bursty traffic, at most this share of the static fleet tuned in hindsight
BURSTY_PEAK_TO_MEAN = 2.5  # "bursty": per-minute mean/peak <= 0.4


def dominates(a: Entry, b: Entry) -> bool:
    """a beats b on both axes: no fewer requests within budget and no more replica-hours, better on one."""
    ra, rb = a.result, b.result
    return (ra.within_both >= rb.within_both and ra.replica_hours <= rb.replica_hours
            and (ra.within_both > rb.within_both or ra.replica_hours < rb.replica_hours))


def _ratio(hours: float, reference: Entry | None) -> str:
    return f"{hours / reference.result.replica_hours:.2f}x" if reference and reference.result.replica_hours else "-"


def markdown_table(comparison: Comparison) -> str:
    """Replica-hours against the clairvoyant oracle (the floor) and the static fleet tuned in hindsight."""
    return markdown_rows(to_json(comparison))


def markdown_rows(rows: list[dict]) -> str:
    """The scorecard from results.json rows (grid rows left out)."""
    def hours(policy: str, setting: str) -> float | None:
        return next((r["replica_hours"] for r in rows if r["policy"] == policy and r["setting"] == setting), None)

    oracle, tuned = hours(ORACLE, "-"), hours("static peak", "tuned")
    lines = ["| policy | setting | config | requests within both budgets | minutes with p95s within budget "
             "| replica-hours | vs oracle | vs static (tuned in hindsight) | scale events |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["setting"] == "grid":
            continue
        ratios = [f"{r['replica_hours'] / ref:.2f}x" if ref else "-" for ref in (oracle, tuned)]
        lines.append(f"| {r['policy']} | {r['setting']} | {r['config']} | {r['within_both']:.2%} "
                     f"| {r['minutes_within']:.1%} | {r['replica_hours']:.2f} | {ratios[0]} | {ratios[1]} "
                     f"| {r['scale_events']} |")
    return "\n".join(lines)


def verdict(comparison: Comparison, peak_to_mean: float | None = None) -> list[str]:
    """One line per target, each saying met or MISSED with the numbers (the out-of-sample dominance target
    needs every scenario: bench/autoscale.py checks it in its summary)."""
    ours = comparison.find("sloserve", "-")
    if ours is None:
        return []
    lines = []
    r = ours.result
    met = r.within_both >= comparison.objective
    lines.append(f"{'met' if met else 'MISSED'}: sloserve serves {r.within_both:.2%} of requests within both "
                 f"budgets (target >= {comparison.objective:.0%})")
    oracle = comparison.find(ORACLE, "-")
    if oracle and oracle.result.replica_hours:
        share = r.replica_hours / oracle.result.replica_hours
        lines.append(f"{'met' if share <= ORACLE_TARGET else 'MISSED'}: {share:.2f}x the replica-hours of the "
                     f"clairvoyant oracle ({oracle.result.replica_hours:.2f}, {oracle.result.within_both:.2%} "
                     f"within) (target <= {ORACLE_TARGET}x)")
        for entry in comparison.entries:
            o = entry.result
            if entry.setting != "grid" and entry is not oracle and o.within_both >= comparison.objective and \
                    o.replica_hours < oracle.result.replica_hours:
                lines.append(f"ORACLE WRONG: {o.policy} [{o.config}] meets the objective with "
                             f"{o.replica_hours:.2f} replica-hours, below the oracle's")
    tuned = comparison.find("static peak", "tuned")
    if tuned:
        share = r.replica_hours / tuned.result.replica_hours
        if peak_to_mean is not None and peak_to_mean >= BURSTY_PEAK_TO_MEAN:
            lines.append(f"{'met' if share <= BURSTY_STATIC_TARGET else 'MISSED'}: {share:.2f}x the replica-hours "
                         f"of static tuned in hindsight ({tuned.result.config}) on bursty traffic (peak/mean "
                         f"{peak_to_mean:.1f}; target <= {BURSTY_STATIC_TARGET}x)")
        else:
            lines.append(f"info: {share:.2f}x the replica-hours of static tuned in hindsight ({tuned.result.config})")
    for entry in comparison.entries:
        if entry.setting != "tuned":
            continue
        b = entry.result
        ok = dominates(ours, entry)
        lines.append(f"info: vs {b.policy} tuned in hindsight [{b.config}]: {'dominates' if ok else 'does not dominate'}"
                     f" ({r.within_both:.2%} vs {b.within_both:.2%} within, "
                     f"{r.replica_hours:.2f} vs {b.replica_hours:.2f} replica-hours)")
    return lines


def plot(comparison: Comparison, path: str | Path, title: str, ttft_budget: float, itl_budget: float) -> None:
    plot_rows(to_json(comparison, timelines=True), path, title, ttft_budget, itl_budget)


def plot_rows(rows: list[dict], path: str | Path, title: str, ttft_budget: float, itl_budget: float) -> None:
    """Four panels over time: load, pods (all roles), p95 TTFT and ITL against the budgets; one line per
    policy without a grid setting or tuned in hindsight (rows carrying a timeline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["setting"] in ("-", "tuned") and (r.get("timeline") or {}).get("t")]
    if not shown:
        return
    figure, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    first = shown[0]["timeline"]
    axes[0].plot([t / 60 for t in first["t"]], first["rate"], color="black")
    axes[0].set_ylabel("arrivals/s (60 s)")
    for row in shown:
        line = row["timeline"]
        label = f"{row['policy']} ({row['setting']})" if row["setting"] != "-" else row["policy"]
        width = 2.2 if row["policy"] in ("sloserve", ORACLE) else 1.0
        minutes = [t / 60 for t in line["t"]]
        axes[1].plot(minutes, line["pods"], label=label, linewidth=width)
        axes[2].plot(minutes, [math.nan if v is None else v for v in line["ttft_p95"]], label=label, linewidth=width)
        axes[3].plot(minutes, [math.nan if v is None else v for v in line["itl_p95"]], label=label, linewidth=width)
    axes[1].set_ylabel("pods (all roles)")
    axes[1].legend(fontsize=7, loc="upper left")
    axes[2].axhline(ttft_budget, color="red", linestyle="--", label="budget")
    axes[2].set_ylabel("p95 TTFT (s, 60 s)")
    axes[2].set_yscale("log")
    axes[3].axhline(itl_budget, color="red", linestyle="--")
    axes[3].set_ylabel("p95 ITL (s, 60 s)")
    axes[3].set_yscale("log")
    axes[3].set_xlabel("minutes")
    axes[0].set_title(title)
    for axis in axes:
        axis.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _clean(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def to_json(comparison: Comparison, timelines: bool = False) -> list[dict]:
    """Every entry's row; grid entries give one row per setting, with its comparable `key`; with
    `timelines`, rows other than grid rows carry their timeline (for plot_rows)."""
    rows = []
    for entry in comparison.entries:
        results = list(zip(entry.keys, entry.grid, strict=True)) if entry.setting == "grid" else [(None, entry.result)]
        for key, result in results:
            row = result.row()
            row["setting"] = entry.setting
            if key is not None:
                row["key"] = key
            elif timelines:
                row["timeline"] = result.timeline
            rows.append(_clean(row))
    return rows
