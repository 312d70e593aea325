"""Generated ModelServices judged twice: by the CRD, as kube-apiserver would (apiserver_oracle: the generated
openAPIV3Schema through `jsonschema`, the CEL rules through `cel`), and by the pydantic models that
`sloserve validate`, local mode and the operator use. The two verdicts must agree, every refusal must name its
field, and a spec both accept must render (the operator must not fail on anything the API server stores).

The specs are the examples with fields varied (valid by construction), the same with one known mistake each
(wrong types, negative or huge numbers, min above max, unknown enum values and fields, bad units, empty
strings, objectives of 0% or 100%, zero budgets, bad names), and arbitrary edits for everything else.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from apiserver_oracle import apiserver_problems
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sloserve_operator.api.spec import validate_document
from sloserve_operator.kube.reconcile import desired_children, serving_targets, warm_targets
from spec_cases import EXAMPLES, MISTAKES, mistaken, set_at

# Fixed and derandomized: the same specs on every run, within a few seconds in CI.
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))

DURATIONS = ["500ms", "0.5s", "1s", "1.5s", "2m", "90s", "1m30s", "250ms", "2h", "0.5ms", "0.001s"]
PERCENTS = ["99%", "99.9%", "95%", "50%", "0.5%", "99.99%", "01%"]
REGION_NAMES = ["us-east-1", "eu-west-1", "ap-south-1", "europe-west4", "z1"]
NAMES = ["chat", "quickstart", "chat-vllm", "c" * 40, "a"]
CPUS = ["4", "500m", "0.5", "16", 2, 2.0, 32]
MEMORIES = ["32Gi", "512Mi", "1G", "1.5Gi", 1073741824, 2147483648.0, 1e17]


# ---------------------------------------------------------------- the two verdicts


def pydantic_problems(document: dict[str, Any]) -> list[str]:
    """What `sloserve validate` and the operator report."""
    service, problems = validate_document(document)
    assert (service is None) == bool(problems), problems
    return problems


def judge(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(pydantic's problems, the API server's); they must agree on whether the document is valid."""
    ours = pydantic_problems(document)
    errors, rules = apiserver_problems(document)
    assert bool(ours) == bool(errors or rules), {"pydantic": ours, "schema": errors, "cel": rules}
    for line in ours:
        field, _, message = line.partition(": ")
        assert field and message and "\n" not in line, line
    return ours, errors + rules


def renders(document: dict[str, Any]) -> None:
    """The operator's reconcile path for an accepted spec: objects, or a ValueError it reports as a condition."""
    service, _ = validate_document(document)
    assert service is not None
    body = {"metadata": {**document["metadata"], "uid": "u-1", "generation": 1}, "spec": document["spec"]}
    try:
        objects = desired_children(body, service.spec, serving_targets(service.spec, None),
                                   warm_targets(service.spec, {}), monitoring=True)
    except ValueError as error:  # reconcile turns this into an InvalidSpec condition naming the field
        assert str(error), "a refusal without a message"
        return
    assert objects and json.loads(json.dumps(objects)) == objects  # JSON-clean, as the API server needs


# ---------------------------------------------------------------- valid specs around the examples


def maybe(draw: st.DrawFn, key: str, values: st.SearchStrategy, into: dict[str, Any]) -> None:
    """Set `key` to a drawn value, or leave it out (the default applies)."""
    if draw(st.booleans()):
        into[key] = draw(values)


@st.composite
def regions(draw: st.DrawFn, max_replicas: int) -> list[dict[str, Any]]:
    """Distinct regions whose floors fit under scaling.maxReplicas, each floor under its own maximum."""
    chosen, room = [], max_replicas
    for name in draw(st.lists(st.sampled_from(REGION_NAMES), unique=True, max_size=3)):
        region: dict[str, Any] = {"name": name}
        maybe(draw, "weight", st.integers(1, 1000), region)
        floor = draw(st.integers(0, min(3, room)))
        room -= floor
        if floor or draw(st.booleans()):
            region["minReplicas"] = floor
        maybe(draw, "maxReplicas", st.integers(max(1, floor), 1000), region)
        chosen.append(region)
    return chosen


@st.composite
def engine_runtime_resources(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An engine with knobs it supports: int8/int4 on bundled only, fp8 with GPUs, no ngram on sglang."""
    engine = draw(st.sampled_from(["bundled", "vllm", "sglang"]))
    resources: dict[str, Any] = {"gpus": draw(st.integers(0, 16))}
    if resources["gpus"]:
        maybe(draw, "gpuType", st.sampled_from(["nvidia-h100", "nvidia-l40s", "NVIDIA-A100-SXM4-80GB"]), resources)
    maybe(draw, "cpu", st.sampled_from(CPUS), resources)
    maybe(draw, "memory", st.sampled_from(MEMORIES), resources)
    quantizations = ["none"] + (["int8", "int4"] if engine == "bundled" else []) + (["fp8"] if resources["gpus"] else [])
    runtime: dict[str, Any] = {}
    maybe(draw, "quantization", st.sampled_from(quantizations), runtime)
    method = draw(st.sampled_from(["none", "draft"] + ([] if engine == "sglang" else ["ngram"])))
    speculative: dict[str, Any] = {"method": method}
    maybe(draw, "numTokens", st.integers(1, 16), speculative)
    if method == "draft":
        speculative["draftModel"] = draw(st.sampled_from(["hf://org/draft", "pvc://models/draft", "file:///d"]))
    runtime["speculative"] = speculative
    maybe(draw, "maxBatchSize", st.integers(1, 4096), runtime)
    maybe(draw, "maxBatchedTokens", st.integers(16, 1048576), runtime)
    maybe(draw, "maxModelLen", st.integers(16, 1048576), runtime)
    maybe(draw, "prefixCaching", st.booleans(), runtime)
    if engine == "bundled":
        maybe(draw, "threads", st.integers(1, 256), runtime)
    return engine, runtime, resources


def routing() -> st.SearchStrategy[dict[str, Any]]:
    """spec.routing: an endpoint picker, sometimes an HTTPRoute to one or two Gateways."""
    picker = st.fixed_dictionaries({"name": st.sampled_from(["chat-epp", "epp"])}, optional={
        "port": st.integers(1, 65535), "failureMode": st.sampled_from(["FailOpen", "FailClose"])})
    gateway = st.fixed_dictionaries({"name": st.sampled_from(["inference-gateway", "gw.v1"])}, optional={
        "namespace": st.just("gateways"), "sectionName": st.just("https")})
    route = st.fixed_dictionaries({"gateways": st.lists(gateway, min_size=1, max_size=2)}, optional={
        "hostnames": st.lists(st.sampled_from(["chat.example.com", "*.example.com"]), max_size=2),
        "path": st.sampled_from(["/", "/v1", "/chat/"])})
    return st.fixed_dictionaries({"endpointPicker": picker}, optional={"httpRoute": route})


@st.composite
def valid_documents(draw: st.DrawFn) -> dict[str, Any]:
    """An example with sections replaced by generated ones or left out (defaults), each valid by construction."""
    document = copy.deepcopy(EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))])
    spec = document["spec"]
    document["metadata"]["name"] = draw(st.sampled_from(NAMES))
    if draw(st.booleans()):
        spec["engine"], spec["runtime"], spec["resources"] = draw(engine_runtime_resources())
    slo: dict[str, Any] = {"ttft": {"p95": draw(st.sampled_from(DURATIONS))},
                           "itl": {"p95": draw(st.sampled_from(DURATIONS))}}
    maybe(draw, "objective", st.sampled_from(PERCENTS), slo)
    spec["slo"] = slo
    low = draw(st.integers(0, 20))
    scaling: dict[str, Any] = {"maxReplicas": draw(st.integers(max(1, low), 1000))}
    maybe(draw, "minReplicas", st.just(low), scaling)  # absent: 1, which the maximum (>= 1) allows
    maybe(draw, "mode", st.sampled_from(["slo", "manual"]), scaling)
    maybe(draw, "warmPool", st.builds(lambda size: {"size": size}, st.integers(0, 64)), scaling)
    maybe(draw, "scaleDown", st.fixed_dictionaries({}, optional={
        "stabilizationWindow": st.sampled_from(DURATIONS), "maxStep": st.integers(1, 64)}), scaling)
    spec["scaling"] = scaling
    placement: dict[str, Any] = {"regions": draw(regions(scaling["maxReplicas"]))}
    maybe(draw, "pendingTimeout", st.sampled_from(DURATIONS), placement)
    maybe(draw, "topology", st.sampled_from(["region", "zone"]), placement)
    spec["placement"] = placement
    maybe(draw, "admission", st.fixed_dictionaries({}, optional={
        "enabled": st.booleans(), "ttftMultiple": st.sampled_from([0.1, 0.5, 1, 1.0, 2.5, 100])}), spec)
    maybe(draw, "replicas", st.integers(0, 1000), spec)
    maybe(draw, "routing", routing(), spec)
    if draw(st.booleans()):
        scaling["profile"] = draw(st.fixed_dictionaries({"configMap": st.sampled_from(["chat-profile", "p.v1"])},
                                                        optional={"key": st.sampled_from(["profile.json", "h100_8b"])}))
    for optional in draw(st.sets(st.sampled_from(["engine", "runtime", "resources", "scaling", "placement",
                                                  "admission", "replicas"]))):
        spec.pop(optional, None)
    return document


def numbers_as_whole_floats(value: Any) -> Any:
    """Integers written as 3.0: what a JSON number may look like after other tools; Kubernetes keeps 3."""
    if isinstance(value, dict):
        return {key: numbers_as_whole_floats(child) for key, child in value.items()}
    if isinstance(value, list):
        return [numbers_as_whole_floats(child) for child in value]
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def test_valid_specs_are_accepted_by_both_and_render():
    @SETTINGS
    @given(valid_documents())
    def check(document):
        ours, theirs = judge(document)
        assert ours == [] and theirs == []
        renders(document)
        # The same spec through YAML and JSON (kubectl sends JSON), and with whole numbers as floats.
        for copy_of in (yaml.safe_load(yaml.safe_dump(document, allow_unicode=True)),
                        json.loads(json.dumps(document)), numbers_as_whole_floats(document)):
            assert judge(copy_of) == ([], [])

    check()


# ---------------------------------------------------------------- one known mistake each


def fields_of(lines: list[str]) -> set[str]:
    return {line.split(": ", 1)[0] for line in lines}


def within(field: str, named: str) -> bool:
    """`named` is `field` or an object holding it (jsonschema reports unknown and missing keys there)."""
    return named in ("", field) or field.startswith((named + ".", named + "["))


@pytest.mark.parametrize(("path", "value"), MISTAKES, ids=[f"{p}={v!r}"[:60] for p, v in MISTAKES])
def test_each_mistake_is_refused_by_both_naming_the_field(path, value):
    for name, example in EXAMPLES.items():
        ours, theirs = judge(mistaken(example, path, value))
        assert path in fields_of(ours), (name, ours)
        assert any(within(path, named) for named in fields_of(theirs)), (name, theirs)


NULLS = ["spec.engine", "spec.runtime", "spec.runtime.speculative", "spec.runtime.threads", "spec.resources.cpu",
         "spec.scaling.minReplicas", "spec.scaling.warmPool", "spec.placement", "spec.admission.ttftMultiple",
         "spec.replicas", "spec.slo.objective", "spec.model.uri"]


@pytest.mark.parametrize("path", NULLS)
def test_null_means_the_default_for_both(path):
    """`field: null` (or a bare `field:`) is pruned by the API server, which then applies the default."""
    for example in EXAMPLES.values():
        document = copy.deepcopy(example)
        set_at(document, path, None)
        assert judge(document) == ([], [])
        renders(document)


# ---------------------------------------------------------------- anything else


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a document (dict keys and list indexes)."""
    found = [prefix]
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found += paths_of(child, (*prefix, key))
    return found


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2000), st.sampled_from([0.5, 2.0, -1.0, 1e6, 2**53, 2**64]),
    st.sampled_from(["", "0", "3", "1.5", "true", "0%", "100%", "99.9%", "0s", "90s", "5m", "32Gi", "500m",
                     "fp8", "int4", "draft", "ngram", "manual", "zone", "sglang", "vllm", "us-east-1", "hf://o/m",
                     "Ünïcödé", "名前", "a" * 70]),
)
EDIT_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=2),
    st.dictionaries(st.sampled_from(["name", "minReplicas", "maxReplicas", "size", "p95", "typo"]), inner,
                    max_size=2)), max_leaves=4)


@st.composite
def edited_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with up to three values replaced (or removed) anywhere in its spec (the API server
    always has the apiVersion, kind and name; MISTAKES tries bad names)."""
    document = draw(valid_documents())
    for _ in range(draw(st.integers(1, 3))):
        paths = [path for path in paths_of(document) if path[:1] == ("spec",) and path[1:]]
        if not paths:  # everything in the spec was removed
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.integers(0, 4)) == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(EDIT_VALUES)
    return document


def test_arbitrary_edits_get_one_verdict_and_accepted_ones_render():
    @SETTINGS
    @given(edited_documents())
    def check(document):
        ours, _ = judge(document)
        if not ours:
            renders(document)

    check()
