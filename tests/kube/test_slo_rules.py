"""SLI recording rules and burn-rate alerts, checked by the real promtool.

`promtool check rules` parses every expression and template; `promtool test rules` replays synthetic
histogram series (the labels the PodMonitor relabelling produces) through the rendered rules and checks which
alerts fire and which stay silent, and that the within-budget ratio is read exactly from the bucket at the
budget. Skipped with a clear reason where promtool is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sloserve_operator.api.spec import ModelService
from sloserve_operator.kube.slo_rules import (
    BURN_ALERTS,
    RECORD_WITHIN,
    WINDOWS,
    alert_name,
    budget_le,
    prometheus_rule,
    rule_groups,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")

NAMESPACE = "prod"
NAME = "chat"


def make_service(engine: str = "bundled", objective: str = "99%", ttft: str = "500ms", itl: str = "50ms",
                 regions: tuple[str, ...] = ("us-east-1", "eu-west-1")) -> ModelService:
    gpu = engine != "bundled"
    return ModelService.model_validate({
        "apiVersion": "sloserve.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "model": {"name": "llama-3.1-8b-instruct", "uri": "pvc://models/llama"},
            "engine": engine,
            "resources": {"gpus": 1 if gpu else 0, "cpu": "2", "memory": "8Gi"},
            "slo": {"ttft": {"p95": ttft}, "itl": {"p95": itl}, "objective": objective},
            "placement": {"regions": [{"name": region} for region in regions]},
        },
    })


# ---------------------------------------------------------------- structure (no promtool needed)


def test_rule_groups_have_every_window_and_alert() -> None:
    service = make_service()
    groups = rule_groups(service)
    records = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    alerts = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    for sli in ("ttft", "itl"):
        for window in WINDOWS:
            assert RECORD_WITHIN.format(sli=sli, window=window) in records
    assert {rule["alert"] for rule in alerts} == {alert_name(sli, a) for sli in ("ttft", "itl") for a in BURN_ALERTS}
    fast = next(rule for rule in alerts if rule["alert"] == "SloserveTTFTBudgetBurnFast")
    assert "> 0.144" in fast["expr"]  # 14.4 x (1 - 0.99)
    assert fast["labels"]["severity"] == "page"
    assert len({group["name"] for group in groups}) == len(groups)
    rule = prometheus_rule(service)
    assert rule["kind"] == "PrometheusRule" and rule["spec"]["groups"] == groups


def test_burn_threshold_follows_the_objective() -> None:
    service = make_service(objective="99.9%")
    alerts = {rule["alert"]: rule for group in rule_groups(service) for rule in group["rules"] if "alert" in rule}
    assert "> 0.0144" in alerts["SloserveTTFTBudgetBurnFast"]["expr"]
    assert "> 0.006" in alerts["SloserveITLBudgetBurnSlow"]["expr"]
    assert "> 0.001 " in alerts["SloserveITLBudgetBurnLong"]["expr"]


def test_budget_bucket_is_exact_for_bundled_and_sglang_and_conservative_for_vllm() -> None:
    assert budget_le(make_service("bundled", ttft="300ms"), "ttft") == "0.3"
    assert budget_le(make_service("sglang", ttft="300ms"), "ttft") == "0.3"
    assert budget_le(make_service("vllm", ttft="300ms"), "ttft") == "0.25"  # vLLM's fixed buckets
    assert budget_le(make_service("vllm", ttft="1s"), "ttft") == "1.0"
    assert budget_le(make_service("vllm", itl="60ms"), "itl") == "0.05"


# ---------------------------------------------------------------- promtool


def _write_rules(tmp_path: Path, service: ModelService, *, keep_annotations: bool = True) -> Path:
    groups = rule_groups(service)
    if not keep_annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = tmp_path / f"rules-{service.spec.engine.value}.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


@needs_promtool
@pytest.mark.parametrize("engine", ["bundled", "vllm", "sglang"])
def test_promtool_check_rules(tmp_path: Path, engine: str) -> None:
    path = _write_rules(tmp_path, make_service(engine))
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def cumulative(segments: list[tuple[int, int]]) -> str:
    """A counter in promtool's expanding notation: (minutes, increase per minute) segments, 1m apart."""
    parts, value = [], 0
    for minutes, per_minute in segments:
        parts.append(f"{value}+{per_minute}x{minutes - 1}")
        value += per_minute * minutes
    return " ".join(parts)


def histogram_series(metric: str, le: str, region: str, segments: list[tuple[int, float]],
                     per_minute: int = 1000) -> list[dict[str, str]]:
    """Bucket-at-budget and _count series for one pod; segments are (minutes, share over budget)."""
    labels = (f'namespace="{NAMESPACE}",model_service="{NAME}",region="{region}",role="serving",'
              f'pod="{NAME}-{region}-0",model_name="llama"')
    good = [(minutes, round(per_minute * (1 - bad))) for minutes, bad in segments]
    total = [(minutes, per_minute) for minutes, _ in segments]
    return [
        {"series": f'{metric}_bucket{{{labels},le="{le}"}}', "values": cumulative(good)},
        {"series": f"{metric}_count{{{labels}}}", "values": cumulative(total)},
    ]


TTFT = "sloserve:time_to_first_token_seconds"
ITL = "sloserve:inter_token_latency_seconds"
DAY = 24 * 60
HISTORY = 8 * 60  # healthy minutes before a burn: fills the longest page window (6h)
PAGES = ("Fast", "Slow")


def expect(sli: str, speed: str, *regions: str) -> list[dict[str, Any]]:
    alert = next(a for a in BURN_ALERTS if a.speed == speed)
    return [{"exp_labels": {"severity": alert.severity, "slo": sli, "namespace": NAMESPACE,
                            "model_service": NAME, "region": region}} for region in regions]


def alert_cases(eval_time: str, firing: dict[tuple[str, str], tuple[str, ...]],
                speeds: tuple[str, ...] = ("Fast", "Slow", "Long")) -> list[dict[str, Any]]:
    """One alert_rule_test per alert of `speeds`: the given (sli, speed) fire in the given regions, the rest
    stay silent. Scenarios with hours of history leave the 3d alert out: its window is mostly empty."""
    cases = []
    for sli in ("ttft", "itl"):
        for alert in BURN_ALERTS:
            if alert.speed not in speeds:
                continue
            regions = firing.get((sli, alert.speed), ())
            cases.append({"eval_time": eval_time, "alertname": alert_name(sli, alert),
                          "exp_alerts": expect(sli, alert.speed, *regions)})
    return cases


def page_scenarios() -> list[dict[str, Any]]:
    healthy = 0.005  # half the 1% error budget: never alerts
    us, eu = "us-east-1", "eu-west-1"
    fast = [(HISTORY, healthy), (90, 0.20), (60, healthy)]  # a 90-minute 20% burn, then recovery
    slow = [(HISTORY, healthy), (7 * 60, 0.08)]  # 8%: above 6x, below 14.4x
    return [
        {   # us-east-1 TTFT burns fast; eu-west-1 ITL burns fast; each alert names only its region
            "interval": "1m",
            "input_series": [*histogram_series(TTFT, "0.5", us, fast), *histogram_series(ITL, "0.05", us, fast[:1] + [(150, healthy)]),
                             *histogram_series(TTFT, "0.5", eu, [(HISTORY + 150, healthy)]),
                             *histogram_series(ITL, "0.05", eu, fast)],
            "alert_rule_test": [
                *alert_cases(f"{HISTORY + 30}m", {}, PAGES),  # 30 minutes in: the 1h window is not yet convinced
                *alert_cases(f"{HISTORY + 60}m", {("ttft", "Fast"): (us,), ("itl", "Fast"): (eu,)}, PAGES),
                *alert_cases(f"{HISTORY + 100}m", {}, PAGES),  # 10 minutes after recovery the short window clears it
            ],
            "promql_expr_test": [{
                "expr": f'round(sloserve:ttft_within_budget:ratio_rate5m{{region="{us}"}}, 0.001)',
                "eval_time": f"{HISTORY + 60}m",
                "exp_samples": [{"labels": f'{{namespace="{NAMESPACE}",'
                                           f'model_service="{NAME}",region="{us}"}}', "value": 0.8}],
            }],
        },
        {   # a sustained 8% burn: the 6h/30m page fires, the fast one does not
            "interval": "1m",
            "input_series": [*histogram_series(TTFT, "0.5", us, slow),
                             *histogram_series(ITL, "0.05", us, [(HISTORY + 7 * 60, healthy)])],
            "alert_rule_test": [
                *alert_cases(f"{HISTORY + 3 * 60}m", {}, PAGES),
                *alert_cases(f"{HISTORY + 6 * 60}m", {("ttft", "Slow"): (us,)}, PAGES),
            ],
        },
        {   # no traffic at all: ratios are NaN, nothing fires
            "interval": "1m",
            "input_series": [*histogram_series(TTFT, "0.5", us, [(180, 0.0)], per_minute=0),
                             *histogram_series(ITL, "0.05", us, [(180, 0.0)], per_minute=0)],
            "alert_rule_test": alert_cases("170m", {}),
        },
    ]


def ticket_scenarios() -> list[dict[str, Any]]:
    healthy = 0.005
    us, eu = "us-east-1", "eu-west-1"
    return [
        {   # 1.5% for three days (5-minute samples): only the 3d/6h ticket; 0.5% in the other region: nothing
            "interval": "5m",
            "input_series": [*histogram_series(TTFT, "0.5", us, [(3 * DAY // 5 + 12, 0.015)]),
                             *histogram_series(TTFT, "0.5", eu, [(3 * DAY // 5 + 12, healthy)])],
            "alert_rule_test": alert_cases(f"{3 * DAY + 60}m", {("ttft", "Long"): (us,)}),
        },
    ]


def _promtool_test(tmp_path: Path, rules: Path, tests: list[dict[str, Any]],
                   evaluation_interval: str = "1m") -> subprocess.CompletedProcess:
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": evaluation_interval,
                                         "tests": tests}, sort_keys=False))
    return subprocess.run([PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)


@needs_promtool
def test_promtool_page_alerts_fire_and_stay_silent(tmp_path: Path) -> None:
    # Annotations quote the live $value; they are checked by `promtool check rules`, not compared here.
    rules = _write_rules(tmp_path, make_service(), keep_annotations=False)
    result = _promtool_test(tmp_path, rules, page_scenarios())
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_ticket_alert_fires_on_a_slow_three_day_burn(tmp_path: Path) -> None:
    rules = _write_rules(tmp_path, make_service(), keep_annotations=False)
    result = _promtool_test(tmp_path, rules, ticket_scenarios(), evaluation_interval="5m")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize(("engine", "ttft", "metric", "le"), [
    ("vllm", "300ms", "vllm:time_to_first_token_seconds", "0.25"),  # vLLM's fixed bucket below the budget
    ("sglang", "300ms", "sglang:time_to_first_token_seconds", "0.3"),
    ("bundled", "1s", TTFT, "1"),  # a Go-style spelling of 1.0 still matches
    # Colon names as Python exporters write them under OpenMetrics negotiation (Prometheus 2.x stores these).
    ("vllm", "300ms", "vllm_time_to_first_token_seconds", "0.25"),
    ("bundled", "1s", "sloserve_time_to_first_token_seconds", "1.0"),
])
def test_promtool_reads_each_engines_bucket_at_the_budget(tmp_path: Path, engine: str, ttft: str, metric: str,
                                                          le: str) -> None:
    rules = _write_rules(tmp_path, make_service(engine, ttft=ttft), keep_annotations=False)
    series = histogram_series(metric, le, "us-east-1", [(120, 0.25)])
    expected = f'{{namespace="{NAMESPACE}",model_service="{NAME}",region="us-east-1"}}'
    tests = [{
        "interval": "1m",
        "input_series": series,
        "promql_expr_test": [{"expr": "round(sloserve:ttft_within_budget:ratio_rate30m, 0.001)", "eval_time": "90m",
                              "exp_samples": [{"labels": expected, "value": 0.75}]}],
        "alert_rule_test": [{"eval_time": "90m", "alertname": "SloserveTTFTBudgetBurnFast",
                             "exp_alerts": expect("ttft", "Fast", "us-east-1")}],
    }]
    result = _promtool_test(tmp_path, rules, tests)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_detects_a_wrong_expectation(tmp_path: Path) -> None:
    """Guard against a vacuous harness: a scenario that must fire, asserted silent, fails promtool."""
    rules = _write_rules(tmp_path, make_service(), keep_annotations=False)
    scenario = page_scenarios()[0]
    scenario["alert_rule_test"] = alert_cases(f"{HISTORY + 60}m", {}, PAGES)
    scenario.pop("promql_expr_test")
    result = _promtool_test(tmp_path, rules, [scenario])
    assert result.returncode != 0
    assert "SloserveTTFTBudgetBurnFast" in result.stdout + result.stderr
