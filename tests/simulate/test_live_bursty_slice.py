"""bench/live.py's bursty slice: the traffic the live check replays must be bursty, idle between bursts and
reproducible, or "simulator vs live" on it says nothing about autoscaling."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import yaml
from sloserve_operator.autoscaler.decide.capacity import load_shipped
from sloserve_operator.simulate.fleet import SharedHost

LIVE = Path(__file__).resolve().parents[2] / "bench" / "live.py"


@pytest.fixture(scope="module")
def live():
    spec = importlib.util.spec_from_file_location("bench_live", LIVE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


POOL = [(40, 8), (81, 16), (128, 32), (8, 4)]


def test_bursty_slice_has_bursts_and_idle_gaps(live):
    args = live.parse_args(["--slice", "bursty", "--bursty-minutes", "16", "--bursty-speedup", "5"])
    requests = live.bursty_slice(args, POOL, 20.0)
    assert requests and requests[-1].arrival < 16 * 60 / 5
    assert live.compressed_peak_to_mean(requests, args.bursty_speedup) >= 4.0
    busy = {int(r.arrival // 10) for r in requests}
    bins = [sum(1 for r in requests if int(r.arrival // 10) == b) for b in range(max(busy) + 1)]
    assert max(bins) >= 100  # a burst: ~20/s for 10 s
    assert min(bins) <= 5  # an idle gap: ~1/6 req/s
    assert {(r.prompt_tokens, r.output_tokens) for r in requests} <= set(POOL)


def test_bursty_slice_is_fixed_by_its_seed(live):
    args = live.parse_args(["--slice", "bursty"])
    first, again = live.bursty_slice(args, POOL, 10.0), live.bursty_slice(args, POOL, 10.0)
    other = live.bursty_slice(live.parse_args(["--slice", "bursty", "--bursty-seed", "7"]), POOL, 10.0)
    assert first == again
    assert first != other


def test_relative_error_is_against_live(live):
    assert live.relative(0.9, 1.0) == pytest.approx(-10.0)
    assert live.relative(110.0, 100.0) == pytest.approx(10.0)


def test_the_cpu_share_counts_the_replicas_apart_from_everything_else(live):
    """The shared-host rows charge the rest of the machine's CPU per request: a process burning CPU counts as
    a replica only when its pid is sampled as one."""
    import os
    import subprocess
    import sys
    import time

    assert live.process_cpu_seconds(os.getpid()) > 0
    assert live.host_busy_seconds() > 0
    burn = "import time\nend = time.time() + 10\nwhile time.process_time() < 1.0 and time.time() < end: pass"
    burner = subprocess.Popen([sys.executable, "-c", burn])  # a second of CPU, however busy the machine
    try:
        share = live.CpuShare()
        share.sample([burner.pid], at_start=True)
        started = time.monotonic()
        while burner.poll() is None and time.monotonic() - started < 15:
            share.sample([burner.pid], at_start=False)
            time.sleep(0.1)
        summary = share.summary(requests=10)
    finally:
        burner.kill()
        burner.wait()
    assert summary["replica_cpu_seconds"] > 0.7  # the burner's second, sampled until its last 0.1 s or so
    assert summary["other_cpu_seconds"] >= 0.0  # whatever else ran: the test process, other jobs
    assert summary["other_cpu_per_request"] == summary["other_cpu_seconds"] / 10
    assert live.process_cpu_seconds(burner.pid) is None  # gone


def test_the_fit_error_band_brackets_the_simulation_and_says_where_live_falls(live, tmp_path):
    """The band is the shared-host simulation with steps (1 -+ the profile's fit error) as long: longer steps
    serve fewer requests within budget, so it brackets the nominal figure; a profile without a fit error has none."""
    args = live.parse_args(["--slice", "bursty", "--max-replicas", "2"])
    profile = dataclasses.replace(load_shipped("smollm2-135m-cpu-1thread"), fit_error=0.1)
    requests = live.bursty_slice(args, POOL, 2.5 * profile.max_rate_within_budget(1.0, 0.3, 60, 15))
    spec = tmp_path / "fixed.yaml"
    spec.write_text(yaml.safe_dump(live.spec_document(args, "band", fixed=True)))
    host = SharedHost(2.0)
    nominal = live.simulated(args, spec, requests, profile, 8.0, fixed=True, host=host)["within_both"]
    band = live.fit_error_band(args, spec, requests, profile, 8.0, fixed=True, host=host)
    low, high = band["within_both"]
    assert low < high and low <= nominal <= high
    assert "OUTSIDE" in live.band_line("fixed", {"within_both": low - 0.01}, band)
    assert "inside" in live.band_line("fixed", {"within_both": nominal}, band)
    unfitted = dataclasses.replace(profile, fit_error=None)
    assert live.fit_error_band(args, spec, requests, unfitted, 8.0, fixed=True, host=host) is None
