"""`sloserve simulate` end to end on a short slice: every policy, the table, the files, bad input."""

from __future__ import annotations

import json

from autoscaler.helpers import FIXTURE_PROFILE_PATH
from sloserve_operator.cli import main

AZURE_ROWS = [
    # a two-minute Azure-format slice: a quiet minute, then a burst
    *(f"2023-11-16 18:15:{second:02d}.0000000,{300 + 7 * second},{20 + second % 7}" for second in range(0, 60, 2)),
    *(f"2023-11-16 18:16:{second:02d}.5000000,{500 + 3 * second},{30 + second % 5}" for second in range(60)),
    *(f"2023-11-16 18:16:{second:02d}.9000000,{200 + second},{25}" for second in range(60)),
]


def write_trace(tmp_path):
    path = tmp_path / "slice.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(AZURE_ROWS) + "\n")
    return path


def test_simulate_runs_every_policy_on_a_short_slice(tmp_path, capsys):
    trace = write_trace(tmp_path)
    out = tmp_path / "out"
    code = main(["simulate", "--trace", str(trace), "--profile", str(FIXTURE_PROFILE_PATH), "--ttft", "2s", "--itl", "150ms",
                 "--no-tune", "--cold-start", "30", "--max-replicas", "8", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for policy in ("sloserve", "static peak", "KEDA HPA", "Knative KPA", "llm-d SLO ratio"):
        assert policy in printed
    assert "requests within both budgets" in printed
    rows = json.loads((out / "results.json").read_text())
    assert {row["policy"] for row in rows} >= {"sloserve", "static peak"}
    assert all(0.0 <= row["within_both"] <= 1.0 and row["replica_hours"] > 0 for row in rows)
    assert (out / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert "|" in (out / "results.md").read_text()


def test_simulate_tunes_static_peak(tmp_path, capsys):
    trace = write_trace(tmp_path)
    code = main(["simulate", "--trace", str(trace), "--policies", "sloserve,static", "--cold-start", "30",
                 "--max-replicas", "6"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| static peak | tuned |" in printed
    assert "sloserve serves" in printed  # the target lines


def test_simulate_reports_bad_input_clearly(tmp_path, capsys):
    assert main(["simulate", "--trace", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    trace = write_trace(tmp_path)
    assert main(["simulate", "--trace", str(trace), "--profile", "no-such-profile"]) == 2
    assert "no shipped capacity profile" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(trace), "--policies", "sloserve,magic"]) == 2
    assert "magic" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(trace), "--start-minute", "30"]) == 2
    assert "no requests" in capsys.readouterr().err
