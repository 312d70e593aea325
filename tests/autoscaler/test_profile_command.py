"""`sloserve profile` against a real runtime process serving a tiny random-weight model, and its fit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.autoscaler.decide.profile import StepPoint, fit_step_model
from sloserve_operator.cli import main

from .observe.prometheus_server import free_port


def prefill_point(tokens: int, seconds: float) -> StepPoint:
    return StepPoint(tokens, 0.0, tokens * (tokens + 1) / 2, seconds, True)


def test_fit_recovers_step_coefficients_and_overhead():
    base, per_token, per_seq, per_attended, overhead = 0.02, 0.0002, 0.001, 3e-7, 0.015
    points = [prefill_point(tokens, overhead + base + per_token * tokens + per_attended * tokens * (tokens + 1) / 2)
              for tokens in (32, 128, 512, 2048)]
    points += [StepPoint(0.0, batch, batch * 264, base + per_seq * batch + per_attended * batch * 264, False)
               for batch in (1, 4, 16)]
    fit = fit_step_model(points)
    assert fit.base_seconds == pytest.approx(base)
    assert fit.per_prefill_token_seconds == pytest.approx(per_token)
    assert fit.per_decode_seq_seconds == pytest.approx(per_seq)
    assert fit.per_attended_token_seconds == pytest.approx(per_attended)
    assert fit.request_overhead_seconds == pytest.approx(overhead)
    assert fit.rms_relative_error == pytest.approx(0.0, abs=1e-9)


def test_fit_without_a_context_effect_gives_no_attention_term():
    points = [prefill_point(tokens, 0.01 + 0.0002 * tokens) for tokens in (32, 128, 512)]
    points += [StepPoint(0.0, batch, batch * 264, 0.01 + 0.001 * batch, False) for batch in (1, 4, 16)]
    fit = fit_step_model(points)
    assert fit.per_attended_token_seconds == pytest.approx(0.0, abs=1e-12)
    assert fit.per_prefill_token_seconds == pytest.approx(0.0002)


def test_fit_never_returns_negative_coefficients():
    # Decode steps that get faster with the batch (noise): the per-sequence cost is clamped at 0.
    points = [StepPoint(0.0, batch, 0.0, 0.05 - 0.001 * batch, False) for batch in (1, 2, 4, 8)]
    points += [prefill_point(tokens, 0.06 + 0.0001 * tokens) for tokens in (64, 256)]
    fit = fit_step_model(points)
    assert fit.base_seconds > 0 and fit.per_decode_seq_seconds == 0.0 and fit.per_prefill_token_seconds > 0
    assert fit.per_attended_token_seconds >= 0


@pytest.fixture(scope="module")
def tiny_runtime(tmp_path_factory):
    """A real `python -m sloserve_runtime` serving the tiny random-weight model; stopped by PID."""
    from sloserve_runtime.testing import make_tiny_model

    directory = tmp_path_factory.mktemp("tiny-runtime")
    model = make_tiny_model(directory / "model")
    port = free_port()
    log = (directory / "runtime.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sloserve_runtime", "--model", str(model), "--served-model-name", "tiny",
         "--host", "127.0.0.1", "--port", str(port), "--grpc-port", "0", "--threads", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"runtime exited: {(directory / 'runtime.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/ready", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("runtime not ready within 90 s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


SHORT_SWEEP = ["--concurrency", "1,3", "--requests-per-level", "4", "--prompt-tokens", "48", "--output-tokens", "8",
               "--prefill-lengths", "16,96", "--prefill-repeats", "1", "--quiet"]


def test_profile_writes_a_loadable_profile(tiny_runtime, tmp_path):
    output = tmp_path / "profile.json"
    assert main(["profile", "--url", tiny_runtime, *SHORT_SWEEP, "--hardware", "test box", "-o", str(output)]) == 0
    profile = CapacityProfile.from_json(output.read_text())
    assert profile.model == "tiny" and profile.hardware == "test box"
    assert [point.concurrency for point in profile.points] == [1, 3]
    for point in profile.points:
        assert 0 < point.ttft_p50 <= point.ttft_p95
        assert 0 < point.itl_p50 <= point.itl_p95
        assert point.output_tokens_per_second > 0
    assert profile.step.base_seconds > 0
    assert profile.step.per_prefill_token_seconds >= 0 and profile.step.per_decode_seq_seconds >= 0
    assert profile.max_rate_within_budget(10.0, 10.0, 48, 8) > 0
    assert profile.fit_error is not None and profile.fit_error >= 0  # how far the fit is from its own points
    said = re.search(r"RMS relative error ([0-9.]+)%", profile.source)  # the source says it in words too
    assert said and profile.fit_error == pytest.approx(float(said.group(1)) / 100, abs=0.0006)


def test_profile_as_configmap(tiny_runtime, tmp_path):
    output = tmp_path / "profile.yaml"
    args = ["profile", "--url", tiny_runtime, *SHORT_SWEEP, "--configmap", "tiny-profile", "--namespace", "prod"]
    assert main([*args, "-o", str(output)]) == 0
    document = yaml.safe_load(output.read_text())
    assert document["kind"] == "ConfigMap" and document["metadata"] == {
        "name": "tiny-profile", "namespace": "prod", "labels": {"app.kubernetes.io/managed-by": "sloserve-profile"}}
    profile = CapacityProfile.from_json(json.loads(document["data"]["profile.json"]))
    assert profile.model == "tiny"


def test_profile_bad_input_is_a_clear_error(tmp_path, capsys):
    output = tmp_path / "never.json"
    dead = f"http://127.0.0.1:{free_port()}"
    assert main(["profile", "--url", dead, *SHORT_SWEEP, "-o", str(output)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("sloserve profile: ") and "connect" in error.lower(), error  # names the failure
    assert not output.exists()  # nothing half-written
    assert main(["profile", "--url", dead, "--requests-per-level", "0"]) == 2
    assert "--requests-per-level must be at least 1" in capsys.readouterr().err


def test_shipped_measured_smollm2_profile_loads():
    from sloserve_operator.autoscaler.decide.capacity import load_shipped

    profile = load_shipped("smollm2-135m-cpu")
    assert "measured by `sloserve profile`" in profile.source
    assert [point.concurrency for point in profile.points] == [1, 2, 4, 8, 16, 32]
    assert profile.step.per_attended_token_seconds > 0  # fitted from the long-prompt prefill points
    assert profile.step.per_prefill_token_seconds > 0 and profile.step.per_decode_seq_seconds > 0
    # One replica sustains some load within loose budgets at the sweep's own request shape.
    assert profile.max_rate_within_budget(4.0, 0.15, 200, 64) > 0
