"""api.py and units.py: parsing, defaults, and problems that name their field (every one of them)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sloserve_operator.api import spec as api
from sloserve_operator.api import units

SPEC = {"model": {"name": "m"}, "slo": {"ttft": {"p95": "500ms"}, "itl": {"p95": "50ms"}}}
DOCUMENT = {"apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "chat"}, "spec": SPEC}


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("5m", 300), ("1m30s", 90), ("2h", 7200), ("1.5s", 1.5), ("0.5ms", 0.0005), ("0s", 0),
])
def test_parse_duration(text, seconds):
    assert units.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 m", "-1s", "1d", "ms", "1.s", "5M"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="invalid duration"):
        units.parse_duration(text)


def test_quantities_and_percent():
    assert units.parse_cpu("500m") == 0.5 and units.parse_cpu("2") == 2 and units.parse_cpu("0.25") == 0.25
    assert units.parse_memory("32Gi") == 32 * 2**30 and units.parse_memory("1G") == 10**9
    assert units.parse_memory("1.5Ki") == 1536 and units.parse_memory("100") == 100
    assert units.parse_percent("99.9%") == pytest.approx(0.999)
    for bad, parser in [("1.5m", units.parse_cpu), ("2 cores", units.parse_cpu), ("32GB", units.parse_memory),
                        ("100%", units.parse_percent), ("0%", units.parse_percent), ("99", units.parse_percent)]:
        with pytest.raises(ValueError):
            parser(bad)


def test_defaults_and_helpers():
    spec = api.parse_spec(SPEC)
    assert spec.engine is api.Engine.bundled
    assert spec.runtime.quantization is api.Quantization.none
    assert spec.runtime.speculative.method is api.SpeculativeMethod.none and spec.runtime.speculative.num_tokens == 4
    assert spec.scaling.mode is api.ScalingMode.slo and (spec.scaling.min_replicas, spec.scaling.max_replicas) == (1, 8)
    assert spec.scaling.warm_pool.size == 0 and spec.placement.regions == [] and spec.replicas == 1
    assert spec.resources.gpus == 1 and spec.resources.cpu == "4" and spec.resources.memory == "32Gi"
    assert spec.slo.ttft.p95_seconds == 0.5 and spec.slo.itl.p95_seconds == 0.05
    assert spec.slo.objective_fraction == pytest.approx(0.99)
    assert spec.scaling.scale_down.stabilization_seconds == 300
    assert spec.model_dump(by_alias=True)["runtime"]["maxBatchedTokens"] == 4096  # camelCase on the wire


def test_integer_quantities_become_strings():
    spec = api.parse_spec({**SPEC, "resources": {"cpu": 2, "memory": 1073741824}})
    assert (spec.resources.cpu, spec.resources.memory) == ("2", "1073741824")
    _, problems = api.validate_spec({**SPEC, "resources": {"cpu": True}})
    assert problems and problems[0].startswith("spec.resources.cpu:")


def test_a_bare_number_for_a_duration_or_a_percentage_says_how_to_write_it():
    _, problems = api.validate_spec({**SPEC, "slo": {"ttft": {"p95": 0.5}, "itl": {"p95": "50ms"},
                                                     "objective": 0.99}})
    assert problems == [
        "spec.slo.ttft.p95: write it as a quoted string with its unit, e.g. '500ms', '1.5s' or '5m' "
        "(got the number 0.5)",
        "spec.slo.objective: write it as a quoted string with its unit, e.g. '99%' or '99.9%' (got the number 0.99)",
    ]


def test_status_round_trips_with_aliases():
    status = api.ModelServiceStatus.model_validate({
        "observedGeneration": 3, "replicas": 4, "serving": 3, "warm": 1, "selector": "a=b",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Serving"}],
        "regions": [{"name": "us-east-1", "serving": 3}],
        "observed": {"ttftP95": "420ms", "requestRate": 2.5},
        "lastDecision": {"reason": "ttft over budget", "from": 2, "to": 3},
    })
    assert status.last_decision.from_ == 2 and status.observed.ttft_p95 == "420ms"
    dumped = status.model_dump(by_alias=True, exclude_none=True)
    assert dumped["lastDecision"]["from"] == 2 and dumped["conditions"][0]["type"] == "Ready"


def test_every_problem_is_reported_each_naming_its_field():
    spec = copy.deepcopy(SPEC)
    spec.update(
        engine="tgi",
        runtime={"quantization": "fp8", "speculative": {"method": "draft", "numTokens": 0}, "typo": 1},
        resources={"gpus": 0, "memory": "lots"},
        scaling={"minReplicas": 5, "maxReplicas": 2, "warmPool": {"size": -1}},
        placement={"regions": [{"name": "a", "minReplicas": 3, "maxReplicas": 1}, {"name": "a", "weight": 0}]},
    )
    spec["slo"] = {"ttft": {"p95": "0ms"}}
    service, problems = api.validate_document({**DOCUMENT, "spec": spec})
    assert service is None
    fields = [line.split(": ", 1)[0] for line in problems]
    assert sorted(fields) == sorted([
        "spec.engine",
        "spec.runtime.typo",
        "spec.runtime.speculative.numTokens",
        "spec.runtime.speculative.draftModel",
        "spec.resources.memory",
        "spec.slo.ttft.p95",  # above zero: a rule, judged although spec.slo.itl is missing
        "spec.slo.itl",
        "spec.scaling.warmPool.size",
        "spec.scaling.minReplicas",  # judged although scaling.warmPool is invalid
        "spec.placement.regions",  # names unique
        "spec.placement.regions",  # floors 3 > maxReplicas 2
        "spec.placement.regions[0].minReplicas",
        "spec.placement.regions[1].weight",
        "spec.runtime.quantization",  # fp8 on CPU: judged although engine and runtime have field errors
    ])
    assert "spec.slo.itl: required field is missing" in problems
    assert "spec.engine: Input should be 'bundled', 'vllm' or 'sglang' (got 'tgi')" in problems
    assert len(problems) == len(set(problems))


def test_rules_are_not_judged_on_invalid_inputs():
    # maxReplicas is not a number: the min <= max rule cannot be judged and must not be guessed at.
    _, problems = api.validate_spec({**SPEC, "scaling": {"minReplicas": 5, "maxReplicas": "many"}})
    assert [line.split(": ", 1)[0] for line in problems] == ["spec.scaling.maxReplicas"]


def test_problems_of_names_list_items_and_accepts_a_root():
    with pytest.raises(api.ValidationError) as error:
        api.parse_spec({**SPEC, "placement": {"regions": [{"name": "Bad_Name"}]}})
    (line,) = api.problems_of(error.value, root="spec")
    assert line == ("spec.placement.regions[0].name: must be a DNS label: lowercase letters, digits and '-', "
                    "starting and ending with a letter or digit (got 'Bad_Name')")


def test_cross_field_problems_of_a_parsed_spec():
    spec = api.parse_spec(SPEC)
    assert api.cross_field_problems(spec) == []
    spec.scaling.min_replicas = 9  # no validate_assignment: how a programmatic change could slip through
    spec.engine = api.Engine.vllm
    spec.runtime.threads = 2
    assert api.cross_field_problems(spec) == [
        "spec.runtime.threads: applies to engine bundled only: vllm and sglang size their own thread pools",
        "spec.scaling.minReplicas: must not exceed maxReplicas",
    ]


def test_metadata_name_must_suit_service_names():
    for name in ("1chat", "Chat", "chat.v1", "c" * 64):
        _, problems = api.validate_document({**DOCUMENT, "metadata": {"name": name}})
        assert problems and problems[0].startswith("metadata.name:"), name


def test_non_mapping_documents():
    assert api.validate_document(["a"]) == (None, ["document: expected a mapping (a ModelService object)"])
    assert api.validate_spec(None) == (None, ["spec: expected a mapping"])
    _, problems = api.validate_document({"kind": "Deployment", "metadata": {"name": "x"}, "spec": SPEC})
    assert problems == ["kind: Input should be 'ModelService' (got 'Deployment')"]


def test_any_edit_of_a_valid_document_gives_a_service_or_named_problems_never_an_exception():
    base = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "chat-gpu.yaml").read_text())

    def paths(value, prefix=()):
        yield prefix
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in children:
            yield from paths(child, (*prefix, key))

    leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.text(max_size=4),
                     st.sampled_from(["fp8", "draft", "manual", "sglang", "0ms", "1s", "us-east-1"]))
    value = st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["name", "minReplicas", "maxReplicas", "typo"]), inner, max_size=3)),
        max_leaves=6)

    def set_path(document, path, new):
        """Replace the value at `path` (an earlier edit may have removed it: then do nothing)."""
        parent = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = new
        except (KeyError, IndexError, TypeError):
            pass

    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.tuples(st.sampled_from([p for p in paths(base) if p]), value), max_size=4))
    def check(edits):
        document = copy.deepcopy(base)
        for path, new in edits:
            set_path(document, path, new)
        service, problems = api.validate_document(document)
        assert (service is None) == bool(problems)
        assert all(isinstance(line, str) and ": " in line for line in problems), problems

    check()
