"""bench/host_sharing.py's arithmetic: what the machine delivered to busy replicas (the shared-host model's
cores in bench/live.py) is what they did together, in replicas-alone, plus what the measuring client took."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HOST_SHARING = Path(__file__).resolve().parents[2] / "bench" / "host_sharing.py"


@pytest.fixture(scope="module")
def sharing():
    spec = importlib.util.spec_from_file_location("bench_host_sharing", HOST_SHARING)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def trial(sharing, alone: float, rates: list[float], client: float):
    return sharing.Trial(alone, rates, client, [0.03] * 200, [0.05] * 200)


def test_three_replicas_on_two_cores_below_processor_sharing_deliver_fewer_cores(sharing):
    measured = trial(sharing, 10.0, [6.0, 6.0, 6.0], 0.1)
    assert measured.total == pytest.approx(1.8)
    assert measured.effective_cores(2) == pytest.approx(1.9)  # processor sharing would give all 2
    assert trial(sharing, 10.0, [6.5, 6.5, 6.5], 0.05).effective_cores(2) == 2.0  # never more than there are


def test_the_report_states_the_prediction_beside_the_measurement(sharing):
    line = sharing.report(trial(sharing, 10.0, [6.0, 6.0, 6.0], 0.1), 1, 3, 2)
    assert "0.60x its throughput alone" in line and "predicts 0.67x" in line
    assert "delivered 1.90 of its 2 cores" in line and "p50 1.67x" in line
