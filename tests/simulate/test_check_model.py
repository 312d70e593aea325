"""bench/autoscale.py --check-model: it runs on a small fleet and prints, per rate, the simulated p95 TTFT beside
the model's (their ratio is the factor calibration learns there); bad --check-rates are refused up front."""

from __future__ import annotations

import argparse
import re

import pytest
from sloserve_operator.autoscaler.decide.capacity import load_shipped
from sloserve_operator.simulate.traces import Request

from .bench_modules import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("autoscale.py", "bench_autoscale_check")


def test_check_rates_parse_and_refuse(bench):
    assert bench._shares("0.2,1,1.25") == (0.2, 1.0, 1.25)
    for bad in ("0,1", "-1", "a,b", "nan", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._shares(bad)


def test_check_fleet_prints_simulated_and_modelled_p95(bench, capsys):
    scenario = bench.Scenario("tiny", "dev", "smollm2-135m-cpu", "1.5s", "250ms", list, "two lengths")
    requests = [Request(float(i), 120 + 80 * (i % 3), 8) for i in range(30)]
    bench.check_fleet("tiny", load_shipped("smollm2-135m-cpu"), bench.scenario_spec(scenario), requests, 1, (0.3,))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny: 1 replicas") and len(lines) == 2
    found = re.search(r"p95 TTFT ([0-9.]+) s simulated, ([0-9.]+) s modelled", lines[1])
    assert found, lines[1]
    simulated, modelled = float(found[1]), float(found[2])
    assert 0 < simulated < 1.5 and 0 < modelled < 1.5  # at 0.3x capacity both are well inside the budget
