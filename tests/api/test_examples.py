"""The examples: valid for pydantic and for the generated CRD schema, and saying what their comments say.

(Their CEL rules are evaluated in tests/api/test_crd.py's agreement table, which includes every example.)
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml
from sloserve_operator.api.crd import build_crd, prune_nulls_and_default
from sloserve_operator.api.spec import (
    Engine,
    ModelService,
    Quantization,
    ScalingMode,
    SpeculativeMethod,
    validate_document,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = ["chat-gpu", "quickstart", "vllm"]


def load(name: str) -> ModelService:
    service, problems = validate_document(yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text()))
    assert service is not None, problems
    return service


def test_the_examples_are_the_documented_ones():
    assert sorted(path.stem for path in EXAMPLES.glob("*.yaml")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_example_is_valid_for_the_crd_schema(name):
    document = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    stored = prune_nulls_and_default(schema, document)
    jsonschema.Draft7Validator(schema).validate(stored)
    # Nothing in the example is a field the CRD does not know (the API server would prune it silently).
    known = prune_nulls_and_default(schema, {"spec": document["spec"]})["spec"]
    assert _paths(document["spec"]) <= _paths(known)
    assert load(name).metadata.name == document["metadata"]["name"]


def _paths(value, prefix=""):
    if isinstance(value, dict):
        return {prefix} | {p for key, child in value.items() for p in _paths(child, f"{prefix}.{key}")}
    return {prefix}


def test_quickstart_is_small_and_on_cpu():
    spec = load("quickstart").spec
    assert spec.engine is Engine.bundled and spec.model.uri == ""  # the bundled SmolLM2-135M-Instruct
    assert "smollm2-135m" in spec.model.name
    assert spec.resources.gpus == 0 and spec.runtime.quantization is Quantization.none
    assert (spec.scaling.min_replicas, spec.scaling.max_replicas, spec.scaling.warm_pool.size) == (1, 3, 1)
    assert spec.scaling.mode is ScalingMode.slo and spec.placement.regions == []


def test_chat_gpu_has_regions_warm_pool_int8_and_ngram():
    spec = load("chat-gpu").spec
    assert spec.resources.gpus >= 1 and spec.resources.gpu_type
    assert "8b" in spec.model.name
    assert spec.runtime.quantization is Quantization.int8
    assert spec.runtime.speculative.method is SpeculativeMethod.ngram
    assert spec.scaling.warm_pool.size >= 1
    weights = {region.name: region.weight for region in spec.placement.regions}
    assert len(weights) == 2 and len(set(weights.values())) == 2


def test_vllm_example_uses_the_vllm_engine():
    spec = load("vllm").spec
    assert spec.engine is Engine.vllm and spec.runtime.threads is None
    assert spec.runtime.speculative.method is SpeculativeMethod.draft and spec.runtime.speculative.draft_model
    assert spec.scaling.mode is ScalingMode.manual and spec.replicas >= 1
