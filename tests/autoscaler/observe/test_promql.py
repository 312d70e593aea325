"""The autoscaler's PromQL: every expression parses (promtool), per engine; budget buckets per engine."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from sloserve_operator.autoscaler.observe.promql import ServiceQueries, budget_bound, engine_metrics, le_regex


def queries(engine: str, ttft: float = 0.5, itl: float = 0.05) -> ServiceQueries:
    return ServiceQueries(namespace="prod", model_service='chat"x', metrics=engine_metrics(engine),
                          window_seconds=60, ttft_budget=budget_bound(engine, "ttft", ttft),
                          itl_budget=budget_bound(engine, "itl", itl))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not on PATH (apt-get install prometheus)")
@pytest.mark.parametrize("engine", ["bundled", "vllm", "sglang"])
def test_every_query_parses(engine, tmp_path):
    rules = [{"record": f"sloserve_test:{name}", "expr": expr} for name, expr in queries(engine).all().items()]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "autoscaler", "rules": rules}]}))
    check = subprocess.run([shutil.which("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_within_budget_reads_the_bucket_at_the_budget():
    bundled = queries("bundled", ttft=0.6).within_budget("ttft", 0.6)
    assert 'le=~"0\\\\.6"' in bundled
    # vLLM's buckets are fixed: 0.6 s is not one, so the boundary below it (0.5 s) is read.
    assert budget_bound("vllm", "ttft", 0.6) == 0.5


def test_le_regex_matches_every_spelling():
    import re

    for bound, spellings in ((1.0, ["1", "1.0"]), (0.05, ["0.05"]), (2.5, ["2.5"])):
        pattern = re.compile(f"^(?:{le_regex(bound)})$")
        assert all(pattern.match(text) for text in spellings)
        assert not pattern.match("10.0") and not pattern.match("0.5")


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        engine_metrics("tgi")
