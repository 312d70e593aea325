"""Local mode's parts without model processes: runtime flags, discovery labels, schedules, status, CLI errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from sloserve_operator.api.spec import validate_document
from sloserve_operator.cli import main
from sloserve_operator.load_client import RequestResult, make_prompt, percentile
from sloserve_operator.local.prometheus import file_sd_entries, prometheus_config
from sloserve_operator.local.replicas import LocalModeError, Replica, runtime_args, set_flag
from sloserve_operator.local.rundir import RunDir, write_json_atomic
from sloserve_operator.local.status import format_status
from sloserve_operator.local.workload import parse_steps, ramp_steps, step_schedule

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def quickstart(**changes):
    document = yaml.safe_load(QUICKSTART.read_text())
    for path, value in changes.items():
        node = document
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    service, problems = validate_document(document)
    assert service is not None, problems
    return service


def test_set_flag_replaces_both_spellings_adds_and_removes() -> None:
    args = ["--port", "8000", "--host=0.0.0.0", "--prefix-caching", "--threads", "4"]
    assert set_flag(args, "--port", "9") == ["--host=0.0.0.0", "--prefix-caching", "--threads", "4", "--port", "9"]
    assert set_flag(args, "--host", "127.0.0.1")[-2:] == ["--host", "127.0.0.1"]
    assert "--host=0.0.0.0" not in set_flag(args, "--host", "127.0.0.1")
    assert set_flag(args, "--threads", None) == ["--port", "8000", "--host=0.0.0.0", "--prefix-caching"]
    assert set_flag(["--prefix-caching", "--x", "1"], "--prefix-caching", None) == ["--x", "1"]


def test_replica_flags_are_the_containers_bound_to_loopback() -> None:
    from sloserve_operator.kube.render import container_args

    service = quickstart()
    args = runtime_args(service, 41000, threads=2, model=None)
    value = {flag: args[i + 1] for i, flag in enumerate(args[:-1]) if flag.startswith("--")}
    assert value["--host"] == "127.0.0.1" and value["--port"] == "41000" and value["--threads"] == "2"
    assert value["--grpc-port"] == "0"
    assert value["--slo-ttft-ms"] == "1000" and value["--slo-itl-ms"] == "100"
    assert "--model" not in args  # empty uri: the runtime's bundled SmolLM2
    container = container_args(service, 41000)
    for flag in ("--max-batch-size", "--max-batched-tokens", "--max-model-len", "--served-model-name"):
        assert value[flag] == container[container.index(flag) + 1]


def test_replica_model_from_file_uri_or_override_and_clear_errors() -> None:
    args = runtime_args(quickstart(**{"spec.model.uri": "file:///models/smol"}), 1, threads=None, model=None)
    assert args[args.index("--model") + 1] == "/models/smol"
    args = runtime_args(quickstart(**{"spec.model.uri": "pvc://models/x"}), 1, threads=None, model="/tmp/tiny")
    assert args[args.index("--model") + 1] == "/tmp/tiny"
    with pytest.raises(LocalModeError, match="cannot be served locally.*--model"):
        runtime_args(quickstart(**{"spec.model.uri": "hf://org/model"}), 1, threads=None, model=None)
    with pytest.raises(LocalModeError, match="engine vllm"):
        runtime_args(quickstart(**{"spec.engine": "vllm", "spec.runtime.threads": None}), 1, threads=None,
                     model=None)


def _replica(name: str, role: str, port: int, region: str = "default", stopping: bool = False) -> Replica:
    return Replica(name=name, region=region, port=port, role=role, created_at=0.0, command=[],
                   log_path=Path("/dev/null"), stopping=stopping)


def test_file_sd_targets_carry_the_podmonitor_labels(tmp_path: Path) -> None:
    service = quickstart()
    entries = file_sd_entries(service, [_replica("quickstart-1", "warm", 2), _replica("quickstart-0", "serving", 1),
                                        _replica("quickstart-2", "warm", 3, stopping=True)])
    assert entries == [
        {"targets": ["127.0.0.1:1"], "labels": {"namespace": "local", "model_service": "quickstart",
                                                "region": "default", "role": "serving", "pod": "quickstart-0"}},
        {"targets": ["127.0.0.1:2"], "labels": {"namespace": "local", "model_service": "quickstart",
                                                "region": "default", "role": "warm", "pod": "quickstart-1"}},
    ]
    config = prometheus_config(RunDir(tmp_path), 1.0, [])
    job = config["scrape_configs"][0]
    assert config["global"]["scrape_interval"] == "1000ms"
    assert job["file_sd_configs"][0]["files"] == [str((tmp_path / "targets.json").resolve())]


def test_schedules() -> None:
    assert parse_steps("2:30,0:5,8:60") == [(2.0, 30.0), (0.0, 5.0), (8.0, 60.0)]
    for bad in ("2", "a:b", "2:0", "-1:5"):
        with pytest.raises(ValueError, match="RATE:SECONDS|rate must be"):
            parse_steps(bad)
    assert ramp_steps(2, 8, 120, 4) == [(2.0, 30.0), (4.0, 30.0), (6.0, 30.0), (8.0, 30.0)]
    arrivals = step_schedule([(2, 10), (0, 5), (4, 5)], prompt_tokens=16, max_tokens=8)
    assert len(arrivals) == 20 + 0 + 20
    assert all(0 <= a.at < 10 or 15 <= a.at < 20 for a in arrivals)
    poisson = step_schedule([(5, 100)], prompt_tokens=16, max_tokens=8, poisson=True, seed=1)
    assert 400 < len(poisson) < 600
    assert make_prompt(1, 20) != make_prompt(2, 20) and make_prompt(1, 20) == make_prompt(1, 20)


def test_within_budget_counts_like_the_simulator() -> None:
    ok = RequestResult(index=0, sent_at=0, prompt_tokens=1, ok=True, ttft=0.5, itls=[0.05] * 19 + [0.5])
    assert ok.within(1.0, 0.1)  # 1 of 20 gaps (5%) over budget is still within
    slow = RequestResult(index=1, sent_at=0, prompt_tokens=1, ok=True, ttft=0.5, itls=[0.05] * 18 + [0.5] * 2)
    assert not slow.within(1.0, 0.1)
    late = RequestResult(index=2, sent_at=0, prompt_tokens=1, ok=True, ttft=1.5, itls=[0.05])
    assert not late.within(1.0, 0.1)
    assert not RequestResult(index=3, sent_at=0, prompt_tokens=1, ok=False).within(1.0, 0.1)
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and percentile([], 95) is None


def _state(now: float) -> dict:
    return {
        "name": "quickstart", "namespace": "default", "pid": 0, "started_at": now - 300, "updated_at": now,
        "stopped": True, "endpoint": "http://127.0.0.1:8000", "interval": 5, "metrics": "metrics: direct scrape",
        "metrics_kind": "scrape", "slo": {"ttft_p95": 1.0, "itl_p95": 0.1},
        "scaling": {"min": 1, "max": 3, "warm_pool": 1, "stabilization_seconds": 60},
        "desired": {"serving": {"default": 2}, "warm": {"default": 1}},
        "current": {"serving": {"default": 2}, "warm": {"default": 1}},
        "replicas": [
            {"name": "quickstart-0", "region": "default", "role": "serving", "ready": True, "port": 1, "pid": 11,
             "restarts": 1, "created_at": now - 300, "stopping": False},
            {"name": "quickstart-1", "region": "default", "role": "serving", "ready": True, "port": 2, "pid": 12,
             "restarts": 0, "created_at": now - 290, "stopping": False},
            {"name": "quickstart-2", "region": "default", "role": "warm", "ready": True, "port": 3, "pid": 13,
             "restarts": 0, "created_at": now - 20, "stopping": False},
        ],
        "observed": {"metrics_available": True, "problems": [], "regions": {"default": {
            "ttft_p95": 0.42, "itl_p95": 0.061, "request_rate": 3.25, "ttft_within_budget": 0.99,
            "itl_within_budget": 0.97}}},
        "decisions": [{"time": now - 30, "reason": "1 -> 2: ttft p95 1.4s/1.0s; breach: scale up 1 -> 2",
                       "serving_from": 1, "serving_to": 2, "warm_to": 1, "metrics_available": True,
                       "degraded": None}],
        "changes": [{"time": now - 30, "reason": "1 -> 2: ttft p95 1.4s/1.0s; breach: scale up 1 -> 2",
                     "serving_from": 1, "serving_to": 2, "warm_to": 1, "metrics_available": True,
                     "degraded": None}],
        "events": [], "router": {"backends": {"quickstart-0": {"outstanding": 3, "served": 120}}},
        "pids": {"replicas": [], "prometheus": None, "started": [11, 12, 13]},
    }


def test_status_prints_like_kubectl_get_msvc() -> None:
    now = time.time()
    text = format_status(_state(now), now=now)
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "SERVING", "WARM", "DESIRED", "REPLICAS", "TTFT-P95", "ITL-P95", "RATE",
                                "SLO-MET", "AGE"]
    assert lines[1].split() == ["quickstart", "2", "1", "2", "3", "420ms/1000ms", "61ms/100ms", "3.25/s", "True",
                                "5m"]
    assert "(stopped)" in text
    assert any(line.split()[:3] == ["quickstart-0", "default", "serving"] and line.split()[6] == "1"
               for line in lines)
    assert "serving 1 -> 2, warm 1: 1 -> 2: ttft p95 1.4s/1.0s; breach: scale up 1 -> 2" in text


def test_status_command_reads_the_newest_state_file(tmp_path: Path, capsys) -> None:
    assert main(["status", "--run-dir", str(tmp_path)]) == 1
    assert "no local ModelService state" in capsys.readouterr().err
    write_json_atomic(RunDir.for_service("quickstart", tmp_path).state_file, _state(time.time()))
    assert main(["status", "--run-dir", str(tmp_path)]) == 0
    assert "quickstart" in capsys.readouterr().out
    assert main(["status", "quickstart", "--run-dir", str(tmp_path), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "quickstart"


def test_up_refuses_an_invalid_file_listing_every_problem_and_starts_nothing(tmp_path: Path, capsys) -> None:
    document = yaml.safe_load(QUICKSTART.read_text())
    document["spec"]["scaling"]["minReplicas"] = 5
    document["spec"]["scaling"]["warmPool"] = {"size": -1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    assert main(["up", "-f", str(bad), "--run-dir", str(tmp_path / "run"), "--port", "1"]) == 1
    err = capsys.readouterr().err
    assert "spec.scaling.minReplicas" in err and "maxReplicas" in err
    assert "warmPool" in err
    assert not (tmp_path / "run").exists()
    assert main(["up", "-f", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["up", "-f", str(QUICKSTART), "--model", str(tmp_path / "nope.gguf"), "--run-dir", str(tmp_path)]) == 1
    assert "nope.gguf: no such file" in capsys.readouterr().err


def test_load_refuses_an_empty_schedule(capsys) -> None:
    assert main(["load", "--rate", "0", "--duration", "5"]) == 2
    assert "no requests" in capsys.readouterr().err
    assert main(["load", "--schedule", "2:x"]) == 2
    assert "RATE:SECONDS" in capsys.readouterr().err


def test_up_refuses_a_run_directory_another_live_instance_owns(tmp_path: Path, capsys) -> None:
    import os

    state = _state(time.time())
    state.update(stopped=False, pid=os.getppid())  # a live process that is not this one
    write_json_atomic(RunDir.for_service("quickstart", tmp_path).state_file, state)
    assert main(["up", "-f", str(QUICKSTART), "--run-dir", str(tmp_path), "--port", "1"]) == 1
    assert "already running here" in capsys.readouterr().err
