"""bench/routing.py's ceiling row: pods sharing one prefix cache, and a pre-roll that cannot hit its own mirror."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from autoscaler.helpers import make_spec
from sloserve_operator.autoscaler.decide.capacity import load_shipped
from sloserve_operator.simulate.autoscalers import StaticPeak
from sloserve_operator.simulate.run import simulate
from sloserve_operator.simulate.traces import Request

ROOT = Path(__file__).resolve().parents[2]
CPU = load_shipped("smollm2-135m-cpu")


def _routing():
    spec = importlib.util.spec_from_file_location("bench_routing", ROOT / "bench" / "routing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_routing", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(requests: list[Request], shared: bool, pods: int) -> float:
    routing = _routing()
    spec = make_spec(min_replicas=pods, max_replicas=pods, warm=0, ttft="4s", itl="400ms")
    with routing.patched_simulate(shared):
        result = simulate(requests, CPU, spec, StaticPeak(pods), kv_cache_tokens=float("inf"), warmup=30.0)
    return result.prefix_hit_rate


def test_no_reuse_no_hits_even_with_a_shared_unbounded_cache():
    # Every request has its own blocks: the pre-roll mirrors the first 30 s, and without salting the scored
    # requests would find their own blocks there.
    requests = [Request(i * 0.5, 160, 2, prefix=tuple(range(i * 10, i * 10 + 10))) for i in range(100)]
    assert _run(requests, shared=True, pods=2) == 0.0


def test_a_shared_cache_hits_what_another_pod_computed():
    # One shared prefix, long outputs keep requests outstanding so least-outstanding spreads them over the 4
    # pods: private caches miss once per pod, the shared cache only once.
    requests = [Request(40.0 + i * 1.0, 160, 200, prefix=tuple(range(10))) for i in range(40)]
    shared = _run(requests, shared=True, pods=4)
    private = _run(requests, shared=False, pods=4)
    assert shared > 0.85  # 39 of 40 hit, each 9 of 10 blocks (the last token is always computed): 0.8775
    assert shared > private
