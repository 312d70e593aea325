"""bench/routing_live.py runs end to end on a tiny setting (real SmolLM2 replicas, local mode's router): every
request is served, the runtime's own prefix cache hits on the shared-prefix conversations and never on the
control. No timings are checked."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from bundled_model import requires_smollm2

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.slow, requires_smollm2, pytest.mark.timeout(600)]


def test_routing_live_bench_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("routing_live", None)
    import routing_live

    out = tmp_path / "rows.json"
    rows = asyncio.run(routing_live.main([
        "--replicas", "1", "--routers", "prefix-scorer", "--control-routers", "least-outstanding",
        "--conversations", "1", "--turns", "3", "--system-words", "60", "--user-words", "8",
        "--reply-words", "24", "--output-tokens", "2", "--spread", "0", "--turn-gap", "1", "--out", str(out),
    ]))
    by_workload = {row["workload"]: row for row in rows}
    assert set(by_workload) == {"shared", "control"}
    for row in rows:
        assert row["requests"] == 3 and row["failed"] == 0, row
    # Turn 2 and 3 extend turn 1's prompt: at least turn 1's full blocks come from the cache.
    assert by_workload["shared"]["hit_rate"] > 0.2
    assert by_workload["control"]["hit_rate"] == 0.0
    assert out.is_file()
