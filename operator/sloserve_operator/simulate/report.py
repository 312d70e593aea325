"""The scorecard: a markdown table, the targets checked against it, and PNG plots over time."""

from __future__ import annotations

import math
from pathlib import Path

from sloserve_operator.simulate.compare import Comparison, Entry

# The target: sloserve's replica-hours at most this share of static peak provisioning, i.e. the fleet
# a platform team sizes for the peak minute from the measured profile (the "static peak, defaults" row).
# The ratio to the hindsight-tuned static fleet is reported next to it.
REPLICA_HOURS_TARGET = 0.65


def dominates(a: Entry, b: Entry) -> bool:
    """a beats b on both axes: no fewer requests within budget and no more replica-hours, better on one."""
    ra, rb = a.result, b.result
    return (ra.within_both >= rb.within_both and ra.replica_hours <= rb.replica_hours
            and (ra.within_both > rb.within_both or ra.replica_hours < rb.replica_hours))


def _ratio(hours: float, reference: Entry | None) -> str:
    return f"{hours / reference.result.replica_hours:.2f}x" if reference and reference.result.replica_hours else "-"


def markdown_table(comparison: Comparison) -> str:
    """Replica-hours are shown against both static fleets: sized for the peak by the profile (defaults) and
    tuned in hindsight on this trace."""
    peak = comparison.find("static peak", "defaults")
    tuned = comparison.find("static peak", "tuned")
    lines = ["| policy | setting | config | requests within both budgets | minutes with p95s within budget "
             "| replica-hours | vs static peak (profile) | vs static peak (tuned) | scale events |",
             "|---|---|---|---|---|---|---|---|---|"]
    for entry in comparison.entries:
        r = entry.result
        lines.append(f"| {r.policy} | {entry.setting} | {r.config} | {r.within_both:.2%} | {r.minutes_within:.1%} "
                     f"| {r.replica_hours:.2f} | {_ratio(r.replica_hours, peak)} | {_ratio(r.replica_hours, tuned)} "
                     f"| {r.scale_events} |")
    return "\n".join(lines)


def verdict(comparison: Comparison) -> list[str]:
    """One line per target, each saying met or MISSED with the numbers."""
    ours = comparison.find("sloserve", "-")
    if ours is None:
        return []
    lines = []
    r = ours.result
    met = r.within_both >= comparison.objective
    lines.append(f"{'met' if met else 'MISSED'}: sloserve serves {r.within_both:.2%} of requests within both "
                 f"budgets (target >= {comparison.objective:.0%})")
    peak = comparison.find("static peak", "defaults")
    if peak:
        share = r.replica_hours / peak.result.replica_hours
        under = (f"; that fleet itself serves only {peak.result.within_both:.2%} within budget"
                 if peak.result.within_both < comparison.objective else "")
        lines.append(f"{'met' if share <= REPLICA_HOURS_TARGET else 'MISSED'}: {share:.2f}x the replica-hours "
                     f"of static peak provisioning ({peak.result.config}, sized for the peak minute by the "
                     f"profile{under}) (target <= {REPLICA_HOURS_TARGET}x)")
    tuned = comparison.find("static peak", "tuned")
    if tuned:
        lines.append(f"info: {r.replica_hours / tuned.result.replica_hours:.2f}x the replica-hours of static peak "
                     f"tuned in hindsight ({tuned.result.config})")
    for entry in comparison.entries:
        if entry.setting != "tuned":
            continue
        b = entry.result
        ok = dominates(ours, entry)
        lines.append(f"{'met' if ok else 'MISSED'}: vs tuned {b.policy} [{b.config}]: "
                     f"{r.within_both:.2%} vs {b.within_both:.2%} within, "
                     f"{r.replica_hours:.2f} vs {b.replica_hours:.2f} replica-hours")
    return lines


def plot(comparison: Comparison, path: str | Path, title: str, ttft_budget: float, itl_budget: float) -> None:
    """Three panels over time: load, pods (all roles), p95 TTFT and ITL against the budgets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [e for e in comparison.entries if e.setting in ("-", "tuned")] or comparison.entries
    figure, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    first = shown[0].result.timeline
    minutes = [t / 60 for t in first["t"]]
    axes[0].plot(minutes, first["rate"], color="black")
    axes[0].set_ylabel("arrivals/s (60 s)")
    for entry in shown:
        line = entry.result.timeline
        label = f"{entry.result.policy} ({entry.setting})" if entry.setting != "-" else entry.result.policy
        width = 2.2 if entry.result.policy == "sloserve" else 1.0
        axes[1].plot([t / 60 for t in line["t"]], line["pods"], label=label, linewidth=width)
        axes[2].plot([t / 60 for t in line["t"]], line["ttft_p95"], label=label, linewidth=width)
        axes[3].plot([t / 60 for t in line["t"]], line["itl_p95"], label=label, linewidth=width)
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


def to_json(comparison: Comparison) -> list[dict]:
    rows = []
    for entry in comparison.entries:
        row = entry.result.row()
        row["setting"] = entry.setting
        row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        rows.append(row)
    return rows
