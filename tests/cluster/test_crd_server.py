"""The generated CRD on a real kube-apiserver: examples accepted, invalid specs refused by the server itself
(OpenAPI schema and CEL rules), naming the same field that `sloserve validate` names."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_harness import PLURAL, ROOT_DIR, Cluster, load_yaml
from kubernetes.client.rest import ApiException
from quickstart_spec import GROUP, VERSION

SLOSERVE = Path(sys.executable).parent / "sloserve"
BASE_SPEC: dict[str, Any] = {"model": {"name": "m"}, "slo": {"ttft": {"p95": "500ms"}, "itl": {"p95": "50ms"}}}


def spec_with(**changes: Any) -> dict[str, Any]:
    """BASE_SPEC with sections merged one level deep (runtime={...} merges into spec.runtime)."""
    spec = copy.deepcopy(BASE_SPEC)
    for key, value in changes.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return spec


# (case id, spec, the field the API server and `sloserve validate` must both name, name override)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("min-above-max", spec_with(scaling={"minReplicas": 5, "maxReplicas": 2}), "spec.scaling.minReplicas"),
    ("negative-replicas", spec_with(replicas=-1), "spec.replicas"),
    ("draft-without-model", spec_with(runtime={"speculative": {"method": "draft"}}),
     "spec.runtime.speculative.draftModel"),
    ("fp8-on-cpu", spec_with(runtime={"quantization": "fp8"}, resources={"gpus": 0}), "spec.runtime.quantization"),
    ("vllm-int4", spec_with(engine="vllm", runtime={"quantization": "int4"}), "spec.runtime.quantization"),
    ("sglang-ngram", spec_with(engine="sglang", runtime={"speculative": {"method": "ngram"}}),
     "spec.runtime.speculative.method"),
    ("sglang-threads", spec_with(engine="sglang", runtime={"threads": 4}), "spec.runtime.threads"),
    ("gpu-type-on-cpu", spec_with(resources={"gpus": 0, "gpuType": "nvidia-h100"}), "spec.resources.gpuType"),
    ("zero-ttft", spec_with(slo={"ttft": {"p95": "0.0s"}}), "spec.slo.ttft.p95"),
    ("duplicate-regions", spec_with(placement={"regions": [{"name": "us-east-1"}, {"name": "us-east-1"}]}),
     "spec.placement.regions"),
    ("region-min-above-max", spec_with(placement={"regions": [{"name": "a", "minReplicas": 3, "maxReplicas": 2}]}),
     "spec.placement.regions[0].minReplicas"),
    ("region-floors-above-max", spec_with(scaling={"maxReplicas": 3}, placement={"regions": [
        {"name": "a", "minReplicas": 2}, {"name": "b", "minReplicas": 2}]}), "spec.placement.regions"),
    ("num-tokens-17", spec_with(runtime={"speculative": {"method": "ngram", "numTokens": 17}}),
     "spec.runtime.speculative.numTokens"),
    ("negative-warm-pool", spec_with(scaling={"warmPool": {"size": -1}}), "spec.scaling.warmPool.size"),
    ("zero-weight", spec_with(placement={"regions": [{"name": "a", "weight": 0}]}),
     "spec.placement.regions[0].weight"),
    ("bad-duration", spec_with(scaling={"scaleDown": {"stabilizationWindow": "5 minutes"}}),
     "spec.scaling.scaleDown.stabilizationWindow"),
    ("bad-engine", spec_with(engine="tgi"), "spec.engine"),
    ("unknown-field", spec_with(runtime={"maxBatchsize": 8}), "spec.runtime.maxBatchsize"),
]


def document(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def server_create(cluster: Cluster, body: dict[str, Any], dry_run: bool = True) -> dict[str, Any]:
    """Create as `kubectl apply` does by default: strict field validation (unknown fields are errors)."""
    return cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body, field_validation="Strict",
        dry_run="All" if dry_run else None)


def validate_cli(tmp_path: Path, body: dict[str, Any]) -> subprocess.CompletedProcess:
    path = tmp_path / "msvc.yaml"
    path.write_text(yaml.safe_dump(body))
    return subprocess.run([str(SLOSERVE), "validate", "-f", str(path)], capture_output=True, text=True, timeout=60)


EXAMPLES = sorted((ROOT_DIR / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_accepted(cluster, path):
    for body in load_yaml(path):
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = "default"
        stored = server_create(cluster, body)
        assert stored["spec"]["model"]["name"] == body["spec"]["model"]["name"]


def test_defaults_come_from_the_schema(cluster):
    stored = server_create(cluster, document("defaults", copy.deepcopy(BASE_SPEC)))
    assert stored["spec"]["engine"] == "bundled"
    assert stored["spec"]["scaling"]["mode"] == "slo"


@pytest.mark.parametrize(("spec", "field"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_spec_refused_by_the_server_and_by_validate(cluster, tmp_path, spec, field):
    body = document("chat", spec)
    with pytest.raises(ApiException) as refused:
        server_create(cluster, body)
    assert refused.value.status in (400, 422), refused.value.body
    assert field in refused.value.body, refused.value.body

    checked = validate_cli(tmp_path, body)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert field in checked.stdout + checked.stderr


def test_name_too_long_for_its_regions_is_refused(cluster, tmp_path):
    body = document("c" * 50, spec_with(placement={"regions": [{"name": "europe-west-1"}]}))
    with pytest.raises(ApiException) as refused:
        server_create(cluster, body)
    assert "metadata.name" in refused.value.body
    assert validate_cli(tmp_path, body).returncode == 1


def test_printer_columns_and_subresources_are_served(cluster, namespace):
    """`kubectl get msvc` reads the Table form the server builds from additionalPrinterColumns."""
    manual = spec_with(scaling={"mode": "manual"}, replicas=2)
    server_create(cluster, document("cols", manual, namespace), dry_run=False)
    table = cluster.table(namespace)
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[0] == "Name" and len(columns) >= 4, columns
    assert table["rows"][0]["cells"][0] == "cols"
    scale = cluster.custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "cols")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
