"""The generated CRD: in sync with api.py, structural, and refusing exactly what pydantic refuses.

The agreement table runs each spec through both validators the way the API server would see it: nulls pruned
and schema defaults applied (crd.prune_nulls_and_default), then the openAPIV3Schema (jsonschema, with unknown
fields refused as kubectl's strict field validation does) and every x-kubernetes-validations rule (CEL,
evaluated by the `cel` package): tests/api/apiserver_oracle.py. Generated specs: test_spec_agreement.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import cel
import kubernetes_validate
import pytest
import yaml
from apiserver_oracle import cel_problems, schema_errors
from sloserve_operator.api import spec as api
from sloserve_operator.api.crd import build_crd, prune_nulls_and_default, render_crd_yaml, rules_by_class
from sloserve_operator.api.reference import render_reference
from sloserve_operator.cli import main as sloserve_main

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "modelservices.sloserve.io.yaml"
REFERENCE_FILE = ROOT / "docs" / "reference.md"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


RULE_MESSAGES = {rule.message for rules in rules_by_class(api.ModelService, {}).values() for rule in rules}


def is_rule_problem(line: str) -> bool:
    return line.split(": ", 1)[-1] in RULE_MESSAGES


BASE = {
    "apiVersion": "sloserve.io/v1alpha1",
    "kind": "ModelService",
    "metadata": {"name": "chat", "namespace": "default"},
    "spec": {"model": {"name": "m"}, "slo": {"ttft": {"p95": "500ms"}, "itl": {"p95": "50ms"}}},
}


def with_spec(**changes: Any) -> dict[str, Any]:
    """BASE with spec sections merged in (one level deep: runtime={...} merges into spec.runtime)."""
    document = copy.deepcopy(BASE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(document["spec"].get(key), dict):
            document["spec"][key] = {**document["spec"][key], **value}
        else:
            document["spec"][key] = value
    return document


def regions(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"regions": list(specs)}


def long_name() -> dict[str, Any]:
    document = with_spec(placement=regions({"name": "europe-west-1"}))
    document["metadata"]["name"] = "c" * 50  # 50 + 1 + 13 = 64 > 63
    return document


# (case id, document, the problems pydantic must report; [] = valid)
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("minimal", with_spec(), []),
    ("min-above-max", with_spec(scaling={"minReplicas": 5, "maxReplicas": 2}),
     ["spec.scaling.minReplicas: must not exceed maxReplicas"]),
    ("min-equals-max", with_spec(scaling={"minReplicas": 2, "maxReplicas": 2}), []),
    # replicas is defaulted (1), so GET /scale never meets an unset specReplicasPath
    ("manual-without-replicas", with_spec(scaling={"mode": "manual"}), []),
    ("negative-replicas", with_spec(replicas=-1), ["spec.replicas: Input should be greater than or equal to 0 (got -1)"]),
    ("manual-with-replicas", with_spec(scaling={"mode": "manual"}, replicas=0), []),
    ("draft-without-model", with_spec(runtime={"speculative": {"method": "draft"}}),
     ["spec.runtime.speculative.draftModel: is required when method is draft"]),
    ("draft-with-null-model", with_spec(runtime={"speculative": {"method": "draft", "draftModel": None}}),
     ["spec.runtime.speculative.draftModel: is required when method is draft"]),
    ("draft-with-model", with_spec(runtime={"speculative": {"method": "draft", "draftModel": "hf://o/m"}}), []),
    ("fp8-on-cpu", with_spec(runtime={"quantization": "fp8"}, resources={"gpus": 0}),
     ["spec.runtime.quantization: fp8 needs a GPU: set resources.gpus > 0, or use int8/int4 on CPU"]),
    ("fp8-on-default-gpu", with_spec(runtime={"quantization": "fp8"}), []),
    ("int8-on-cpu", with_spec(runtime={"quantization": "int8"}, resources={"gpus": 0, "cpu": 4}), []),
    ("vllm-int4", with_spec(engine="vllm", runtime={"quantization": "int4"}),
     ["spec.runtime.quantization: " + api.ModelServiceSpec.rules[1].message]),
    ("vllm-fp8-ngram", with_spec(engine="vllm", runtime={"quantization": "fp8", "speculative": {"method": "ngram"}}),
     []),
    ("sglang-ngram", with_spec(engine="sglang", runtime={"speculative": {"method": "ngram"}}),
     ["spec.runtime.speculative.method: ngram is not supported by engine sglang: use draft, or engine bundled "
      "or vllm"]),
    ("sglang-threads", with_spec(engine="sglang", runtime={"threads": 4}),
     ["spec.runtime.threads: applies to engine bundled only: vllm and sglang size their own thread pools"]),
    ("gpu-type-on-cpu", with_spec(resources={"gpus": 0, "gpuType": "nvidia-h100"}),
     ["spec.resources.gpuType: needs gpus > 0: a GPU type only selects nodes for replicas that request GPUs"]),
    ("zero-ttft", with_spec(slo={"ttft": {"p95": "0.0s"}}), ["spec.slo.ttft.p95: must be above zero"]),
    ("zero-objective", with_spec(slo={"objective": "0.0%"}),
     ["spec.slo.objective: must be above 0% (and below 100%), e.g. '99%' or '99.9%'"]),
    ("tiny-objective", with_spec(slo={"objective": "0.01%"}), []),
    ("null-means-default", with_spec(engine=None, runtime=None, scaling={"minReplicas": None}), []),
    ("sub-ms-itl", with_spec(slo={"itl": {"p95": "0.5ms"}}), []),
    ("two-regions", with_spec(placement=regions({"name": "us-east-1", "weight": 3, "minReplicas": 1},
                                                 {"name": "eu-west-1"})), []),
    ("duplicate-regions", with_spec(placement=regions({"name": "us-east-1"}, {"name": "us-east-1"})),
     ["spec.placement.regions: region names must be unique"]),
    ("region-min-above-max", with_spec(placement=regions({"name": "a", "minReplicas": 3, "maxReplicas": 2})),
     ["spec.placement.regions[0].minReplicas: must not exceed this region's maxReplicas"]),
    ("region-floors-above-max", with_spec(scaling={"maxReplicas": 3},
                                          placement=regions({"name": "a", "minReplicas": 2},
                                                            {"name": "b", "minReplicas": 2})),
     ["spec.placement.regions: the regions' minReplicas add up to more than scaling.maxReplicas"]),
    ("name-too-long-for-region", long_name(), [api.ModelService.rules[0].problem("")]),
    ("several-rules-at-once", with_spec(engine="sglang", scaling={"minReplicas": 9},
                                        runtime={"quantization": "fp8", "speculative": {"method": "ngram"}},
                                        resources={"gpus": 0}),
     ["spec.scaling.minReplicas: must not exceed maxReplicas",
      "spec.runtime.quantization: fp8 needs a GPU: set resources.gpus > 0, or use int8/int4 on CPU",
      "spec.runtime.speculative.method: ngram is not supported by engine sglang: use draft, or engine bundled "
      "or vllm"]),
    # Field constraints: the schema refuses these, pydantic names the same field.
    ("num-tokens-17", with_spec(runtime={"speculative": {"method": "ngram", "numTokens": 17}}),
     ["spec.runtime.speculative.numTokens: Input should be less than or equal to 16 (got 17)"]),
    ("negative-warm-pool", with_spec(scaling={"warmPool": {"size": -1}}),
     ["spec.scaling.warmPool.size: Input should be greater than or equal to 0 (got -1)"]),
    ("zero-weight", with_spec(placement=regions({"name": "a", "weight": 0})),
     ["spec.placement.regions[0].weight: Input should be greater than or equal to 1 (got 0)"]),
    ("bad-duration", with_spec(scaling={"scaleDown": {"stabilizationWindow": "5 minutes"}}),
     ["spec.scaling.scaleDown.stabilizationWindow: invalid duration '5 minutes': use a number with ms, s, m or h, "
      "e.g. '500ms' or '5m'"]),
    ("unknown-field", with_spec(runtime={"maxBatchsize": 8}),
     ["spec.runtime.maxBatchsize: unknown field (check its spelling and indentation)"]),
    ("integer-quantities", with_spec(resources={"gpus": 0, "cpu": 2, "memory": 4294967296}), []),
    # A field error and a broken rule elsewhere: both reported (the rule's own inputs are valid).
    ("field-error-and-rule", with_spec(scaling={"minReplicas": 4, "maxReplicas": 2},
                                       resources={"cpu": "lots"}),
     ["spec.resources.cpu: invalid CPU quantity 'lots': use cores ('2', '0.5') or millicores ('500m')",
      "spec.scaling.minReplicas: must not exceed maxReplicas"]),
] + [(f"example-{path.stem}", yaml.safe_load(path.read_text()), []) for path in EXAMPLES]


@pytest.mark.parametrize(("document", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_cel_and_schema_agree_with_pydantic(schema, document, expected):
    _, problems = api.validate_document(document)
    assert sorted(problems) == sorted(expected)

    stored = prune_nulls_and_default(schema, document)
    refused_by_schema = schema_errors(schema, stored)
    refused_by_cel = cel_problems(schema, stored)
    assert bool(problems) == bool(refused_by_schema or refused_by_cel), (refused_by_schema, refused_by_cel)
    # The API server's rule messages are pydantic's, word for word...
    assert sorted(refused_by_cel) == sorted(line for line in problems if is_rule_problem(line))
    # ...and a field the schema refuses is one pydantic names.
    for error in refused_by_schema:
        field = error.split(": ", 1)[0]
        assert any(line.startswith(field) for line in problems), (error, problems)


def test_the_table_breaks_every_rule():
    broken = {line.split(": ", 1)[1] for _, _, expected in CASES for line in expected if is_rule_problem(line)}
    assert broken == RULE_MESSAGES
    assert sum(1 for case in CASES if case[2]) >= 8 and sum(1 for case in CASES if not case[2]) >= 7


def test_committed_crd_is_the_generators_output(capsys):
    assert CRD_FILE.read_text() == render_crd_yaml(), "stale CRD: run `make crds`"
    assert sloserve_main(["crd"]) == 0
    assert capsys.readouterr().out == CRD_FILE.read_text()


def test_crd_command_writes_a_file(tmp_path):
    target = tmp_path / "crd.yaml"
    assert sloserve_main(["crd", "-o", str(target)]) == 0
    assert yaml.safe_load(target.read_text()) == build_crd()


def test_committed_reference_is_in_sync():
    assert REFERENCE_FILE.read_text() == render_reference(), "stale docs/reference.md: run `make crds`"


def test_reference_lists_every_spec_field():
    text = REFERENCE_FILE.read_text()
    for path in ("spec.runtime.speculative.numTokens", "spec.scaling.warmPool.size", "spec.placement.regions[].weight",
                 "spec.resources.gpuType", "status.lastDecision.from", "spec.replicas"):
        assert f"| `{path}` |" in text


def test_names_subresources_and_columns():
    crd = build_crd()
    assert crd["metadata"]["name"] == "modelservices.sloserve.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == ("ModelService", ["msvc"], ["sloserve"])
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert version["subresources"] == {"status": {}, "scale": {
        "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.serving",
        "labelSelectorPath": ".status.selector"}}
    # The selector reaches HPA/KEDA/VPA through /scale: never defaulted to "" (which selects every pod).
    selector = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["selector"]
    assert "default" not in selector and selector["minLength"] == 1
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Serving", "Warm", "TTFT-p95", "ITL-p95", "Age"]
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    for column in ("Serving", "Warm", "TTFT-p95", "ITL-p95"):
        node = status
        for part in columns[column].removeprefix(".status.").split("."):
            node = node["properties"][part]  # the column reads a field the status really has
    for path in ("replicas", "selector"):
        assert path in status["properties"]


def _walk(node: dict[str, Any], path: str):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural_and_cel_cost_bounded(schema):
    for path, node in _walk(schema, ""):
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "nullable", "const"} & node.keys(), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if path.startswith(".spec") and node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, f"{path}: unbounded string makes CEL cost unbounded"
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("x-kubernetes-list-type") == "map":
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in node["items"]["required"], path
        if "default" in node:
            assert not schema_errors(node, node["default"]), path


def test_every_rule_compiles_and_points_at_its_field(schema):
    rules_seen = 0
    for _, node in _walk(schema, ""):
        for rule in node.get("x-kubernetes-validations", []):
            rules_seen += 1
            cel.compile(rule["rule"])
            field = rule["message"].split(": ", 1)[0]
            if "fieldPath" in rule:
                assert rule["fieldPath"] == "." + field
                target = node
                for part in field.split("."):
                    target = target["properties"][part]
    assert rules_seen == sum(len(rules) for rules in rules_by_class(api.ModelService, {}).values()) + 1  # ttft+itl


def test_defaults_match_pydantic(schema):
    stored = prune_nulls_and_default(schema, copy.deepcopy(BASE))
    parsed = api.ModelService.model_validate(BASE).model_dump(by_alias=True, exclude_none=True, mode="json")
    parsed["spec"]["placement"].pop("regions")  # pydantic's [] default; the CRD leaves the list absent
    assert stored["spec"] == parsed["spec"]


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_crd_passes_kubernetes_validate(version):
    kubernetes_validate.validate(build_crd(), version, strict=True)


def _random_spec_strategy():
    """Specs whose fields are each valid, in every combination the rules care about."""
    from hypothesis import strategies as st

    def optional(key, values):
        return st.one_of(st.just({}), st.sampled_from(values).map(lambda value: {key: value}))

    region = st.fixed_dictionaries(
        {"name": st.sampled_from(["us-east-1", "eu-west-1", "ap-south-1"]), "minReplicas": st.integers(0, 3)},
    ).flatmap(lambda r: optional("maxReplicas", [1, 2, 3]).map(lambda extra: {**r, **extra}))
    speculative = st.fixed_dictionaries({"method": st.sampled_from(["none", "ngram", "draft"])}).flatmap(
        lambda s: optional("draftModel", [None, "hf://org/draft"]).map(lambda extra: {**s, **extra}))
    return st.fixed_dictionaries({
        "name": st.sampled_from(["chat", "c" * 52, "c" * 53]),  # 52 + 1 + len("ap-south-1") = 63
        "engine": st.sampled_from(["bundled", "vllm", "sglang"]),
        "runtime": st.tuples(st.sampled_from(["none", "int8", "int4", "fp8"]), speculative,
                             optional("threads", [1, 4])).map(
            lambda t: {"quantization": t[0], "speculative": t[1], **t[2]}),
        "resources": st.tuples(st.integers(0, 2), optional("gpuType", ["nvidia-h100"])).map(
            lambda t: {"gpus": t[0], **t[1]}),
        "ttft": st.sampled_from(["0ms", "0.0s", "250ms", "1s"]),
        "scaling": st.tuples(st.sampled_from(["slo", "manual"]), st.integers(0, 5), st.integers(1, 5)).map(
            lambda t: {"mode": t[0], "minReplicas": t[1], "maxReplicas": t[2]}),
        "replicas": optional("replicas", [0, 3]),
        "regions": st.lists(region, max_size=3),
    })


def test_cel_agrees_with_pydantic_on_generated_specs(schema):
    from hypothesis import HealthCheck, given, settings

    # Derandomized and without health checks: the same 100 specs on every run, however loaded the machine.
    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_random_spec_strategy())
    def check(drawn):
        document = with_spec(engine=drawn["engine"], runtime=drawn["runtime"], resources=drawn["resources"],
                             scaling=drawn["scaling"], placement={"regions": drawn["regions"]}, **drawn["replicas"])
        document["metadata"]["name"] = drawn["name"]
        document["spec"]["slo"]["ttft"] = {"p95": drawn["ttft"]}
        _, problems = api.validate_document(document)
        stored = prune_nulls_and_default(schema, document)
        assert schema_errors(schema, stored) == []
        assert sorted(cel_problems(schema, stored)) == sorted(problems)

    check()
