"""render.py and engines.py: the objects a ModelService becomes, checked offline.

Every rendered built-in object passes `kubernetes-validate --strict` (unknown fields are errors) for
Kubernetes 1.30 and 1.37, for the committed examples and a matrix of runtime knobs. kubernetes-validate has
no schema for the Prometheus operator's PodMonitor and PrometheusRule: the test asserts it says so and checks
their shape against the subset of the monitoring.coreos.com/v1 schema render uses (written here).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from sloserve_operator.api.engines import ENGINE_METRICS, PROFILES, UnsupportedKnob
from sloserve_operator.api.spec import ModelService, validate_document
from sloserve_operator.autoscaler.decide.placement import region_weights, split_by_weight, split_plain
from sloserve_operator.commands import render as render_command
from sloserve_operator.kube.render import (
    child_name,
    children,
    container_args,
    render_objects,
)
from sloserve_operator.kube.slo_rules import rule_groups

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
KUBERNETES_VERSIONS = ("1.30", "1.37")
CRD_KINDS = {"PodMonitor", "PrometheusRule"}


def service_from(spec: dict[str, Any], name: str = "chat", namespace: str = "prod",
                 uid: str | None = None) -> ModelService:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        metadata["uid"] = uid
    return ModelService.model_validate({"apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService",
                                        "metadata": metadata, "spec": spec})


def base_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "llama-3.1-8b-instruct", "uri": "pvc://models/llama-3.1-8b"},
        "engine": "bundled",
        "runtime": {"maxBatchSize": 32, "maxBatchedTokens": 2048, "maxModelLen": 4096},
        "resources": {"gpus": 1, "gpuType": "nvidia-h100", "cpu": "4", "memory": "32Gi"},
        "slo": {"ttft": {"p95": "500ms"}, "itl": {"p95": "50ms"}, "objective": "99%"},
        "scaling": {"minReplicas": 1, "maxReplicas": 8, "warmPool": {"size": 1}},
    }
    spec.update(overrides)
    return spec


TWO_REGIONS = {"regions": [{"name": "us-east-1", "weight": 3, "minReplicas": 1},
                           {"name": "eu-west-1", "weight": 1}]}


def example_services() -> list[tuple[str, ModelService]]:
    services = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(document, dict) and document.get("kind") == "ModelService":
                service, problems = validate_document(document)
                assert service is not None, f"{path.name}: {problems}"
                services.append((f"{path.stem}[{index}]", service))
    return services


def knob_spec(engine: str, quantization: str, method: str, prefix: bool, uri: str, gpus: int) -> dict[str, Any]:
    speculative: dict[str, Any] = {"method": method, "numTokens": 3}
    if method == "draft":
        speculative["draftModel"] = "pvc://models/draft" if gpus != 1 else "hf://org/draft-0.5b"
    return base_spec(engine=engine, model={"name": "m", "uri": uri, "revision": "main"},
                     runtime={"quantization": quantization, "speculative": speculative, "prefixCaching": prefix},
                     resources={"gpus": gpus, "cpu": "2", "memory": "8Gi"},
                     placement=TWO_REGIONS if gpus == 4 else {})


KNOBS = (["bundled", "vllm", "sglang"], ["none", "int8", "int4", "fp8"], ["none", "ngram", "draft"], [True, False],
         ["", "pvc://models/llama/8b", "hf://meta-llama/Llama-3.1-8B-Instruct", "file:///opt/models/llama"],
         [0, 1, 4])


def knob_matrix() -> list[tuple[str, ModelService]]:
    """Engines x quantization x speculation x prefix caching x model source x GPUs: every pair of values that
    the API accepts together appears in at least one case (a greedy all-pairs cover of the valid product)."""
    valid = []
    for combo in itertools.product(*KNOBS):
        service, _ = validate_document({"apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService",
                                        "metadata": {"name": "m"}, "spec": knob_spec(*combo)})
        if service is not None:
            valid.append((combo, service))
    dimension_pairs = list(itertools.combinations(range(len(KNOBS)), 2))

    def pairs(combo: tuple) -> set[tuple]:
        return {(i, combo[i], j, combo[j]) for i, j in dimension_pairs}

    uncovered = set().union(*(pairs(combo) for combo, _ in valid))
    cases = []
    while uncovered:
        combo, service = max(valid, key=lambda item: len(pairs(item[0]) & uncovered))
        uncovered -= pairs(combo)
        cases.append(("-".join(str(value).split(":")[0] or "default" for value in combo), service))
    return cases


@functools.cache
def all_services() -> list[tuple[str, ModelService]]:
    return example_services() + knob_matrix()


def render_default(service: ModelService, **kwargs: Any) -> list[dict[str, Any]]:
    return render_objects(service, split_by_weight(service.spec, max(service.spec.scaling.min_replicas, 2)),
                          **kwargs)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def flags(args: list[str]) -> dict[str, str | list[str] | None]:
    """--flag value pairs (a flag followed by another flag is a switch; repeated values become a list)."""
    parsed: dict[str, Any] = {}
    current = None
    for arg in args:
        if arg.startswith("--"):
            current = arg
            parsed[current] = None
        elif current is not None:
            parsed[current] = arg if parsed[current] is None else [*([parsed[current]] if isinstance(
                parsed[current], str) else parsed[current]), arg]
    return parsed


def runtime_container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


# ---------------------------------------------------------------- schema checks


_RELABELING = {"type": "object", "additionalProperties": False, "properties": {
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "labelmap", "LabelMap"]},
    "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
    "targetLabel": {"type": "string"}, "regex": {"type": "string"}, "replacement": {"type": "string"},
    "separator": {"type": "string"}}}
_METADATA = {"type": "object", "required": ["name", "namespace"], "properties": {
    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
    "namespace": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}
_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                          "(([0-9]+)s)?(([0-9]+)ms)?)$"}
# The fields render uses, as the Prometheus operator's CRDs define them (monitoring.coreos.com/v1).
CRD_SHAPES: dict[str, dict[str, Any]] = {
    "PodMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "metadata": _METADATA,
            "spec": {"type": "object", "additionalProperties": False, "required": ["selector"], "properties": {
                "selector": {"type": "object", "additionalProperties": False, "properties": {
                    "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "port": {"type": "string"}, "path": {"type": "string"}, "interval": _DURATION,
                        "relabelings": {"type": "array", "items": _RELABELING}}}}}}}},
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "metadata": _METADATA,
            "spec": {"type": "object", "additionalProperties": False, "properties": {
                "groups": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["name", "rules"], "properties": {
                        "name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                        "rules": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False, "required": ["expr"],
                            "oneOf": [{"required": ["record"]}, {"required": ["alert"]}], "properties": {
                                "record": {"type": "string"}, "alert": {"type": "string"},
                                "expr": {"type": "string", "minLength": 1}, "for": _DURATION,
                                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                "annotations": {"type": "object",
                                                "additionalProperties": {"type": "string"}}}}}}}}}}}},
}


pytestmark = pytest.mark.usefixtures("cached_k8s_schemas")


def check_object(obj: dict[str, Any], version: str) -> None:
    if obj["kind"] in CRD_KINDS:
        with pytest.raises(SchemaNotFoundError):  # explicit: kubernetes-validate knows no CRDs
            kubernetes_validate.validate(obj, version, strict=True)
        jsonschema.validate(obj, CRD_SHAPES[obj["kind"]])
        return
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(part) for part in error.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {path}: {error.message}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates_strictly(version: str) -> None:
    assert len(all_services()) > 15, "the knob matrix lost its cases"
    engines = set()
    distinct: dict[str, dict[str, Any]] = {}  # Services and PDBs repeat across knob cases: check each once
    for case, service in all_services():
        engines.add(service.spec.engine.value)
        objects = render_default(service)
        assert {"Deployment", "Service", "PodDisruptionBudget", "PodMonitor", "PrometheusRule"} <= {
            obj["kind"] for obj in objects}, case
        distinct.update((json.dumps(obj, sort_keys=True), obj) for obj in objects)
    for obj in distinct.values():
        check_object(obj, version)
    assert engines == {"bundled", "vllm", "sglang"}


def test_the_validator_catches_a_typo() -> None:
    """Guard against a vacuous check: a misspelt field must fail strict validation."""
    deployment = by_kind(render_default(service_from(base_spec())), "Deployment")[0]
    runtime_container(deployment)["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30", strict=True)


def test_examples_are_rendered() -> None:
    names = {case.split("[")[0] for case, _ in example_services()}
    assert "quickstart" in names


# ---------------------------------------------------------------- objects and wiring


def test_objects_per_region_and_names() -> None:
    service = service_from(base_spec(placement=TWO_REGIONS), uid="1234-abcd")
    objects = render_objects(service, {"us-east-1": 3, "eu-west-1": 1})
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    assert names == {
        ("Deployment", "chat-us-east-1"), ("Deployment", "chat-eu-west-1"),
        ("Service", "chat"), ("Service", "chat-us-east-1"), ("Service", "chat-eu-west-1"),
        ("PodDisruptionBudget", "chat-us-east-1"), ("PodDisruptionBudget", "chat-eu-west-1"),
        ("PodMonitor", "chat"), ("PrometheusRule", "chat-slo"),
    }
    for obj in objects:
        meta = obj["metadata"]
        assert meta["namespace"] == "prod"
        assert meta["labels"]["sloserve.io/model-service"] == "chat"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "sloserve-operator"
        assert meta["ownerReferences"] == [{"apiVersion": "sloserve.io/v1alpha1", "kind": "ModelService",
                                            "name": "chat", "uid": "1234-abcd", "controller": True,
                                            "blockOwnerDeletion": True}]
    assert {(kind, name) for _, kind, name in children(service)} == names


def test_no_owner_reference_without_uid_and_default_region_naming() -> None:
    objects = render_default(service_from(base_spec()))
    assert all("ownerReferences" not in obj["metadata"] for obj in objects)
    assert [obj["metadata"]["name"] for obj in by_kind(objects, "Deployment")] == ["chat"]
    assert [obj["metadata"]["name"] for obj in by_kind(objects, "Service")] == ["chat"]
    assert "nodeSelector" not in by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"] or (
        "topology.kubernetes.io/region" not in by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"][
            "nodeSelector"])


def test_replicas_are_serving_plus_warm_spread_by_weight() -> None:
    service = service_from(base_spec(placement=TWO_REGIONS, scaling={"minReplicas": 1, "maxReplicas": 8,
                                                                      "warmPool": {"size": 3}}))
    assert split_plain(3, region_weights(service.spec)) == {"us-east-1": 2, "eu-west-1": 1}
    deployments = {d["metadata"]["name"]: d for d in by_kind(render_objects(service, {"us-east-1": 4}), "Deployment")}
    assert deployments["chat-us-east-1"]["spec"]["replicas"] == 6
    assert deployments["chat-eu-west-1"]["spec"]["replicas"] == 1  # missing from the counts: 0 serving
    explicit = render_objects(service, {"us-east-1": 1, "eu-west-1": 2}, warm_by_region={"eu-west-1": 1})
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in by_kind(explicit, "Deployment")}
    assert replicas == {"chat-us-east-1": 1, "chat-eu-west-1": 3}


def test_bad_counts_are_refused_with_the_argument_named() -> None:
    service = service_from(base_spec(placement=TWO_REGIONS))
    with pytest.raises(ValueError, match="serving_by_region.*ap-south-1"):
        render_objects(service, {"ap-south-1": 1})
    with pytest.raises(ValueError, match="warm_by_region.*negative.*us-east-1"):
        render_objects(service, {}, warm_by_region={"us-east-1": -1})


def test_role_label_selection() -> None:
    service = service_from(base_spec(placement=TWO_REGIONS))
    objects = render_objects(service, {"us-east-1": 1, "eu-west-1": 1})
    for deployment in by_kind(objects, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert "sloserve.io/role" not in selector  # the operator flips roles on live pods
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert template_labels["sloserve.io/role"] == "serving"
        assert selector.items() <= template_labels.items()
        assert template_labels["app.kubernetes.io/name"] == "sloserve-runtime"
        assert template_labels["app.kubernetes.io/component"] == "model-server"
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in by_kind(objects, "Service")}
    assert services["chat"] == {"sloserve.io/model-service": "chat", "sloserve.io/role": "serving"}
    assert services["chat-eu-west-1"] == {"sloserve.io/model-service": "chat", "sloserve.io/region": "eu-west-1",
                                          "sloserve.io/role": "serving"}
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        assert "sloserve.io/role" not in pdb["spec"]["selector"]["matchLabels"]


def test_zone_topology_selects_zones_and_prefers_close_endpoints() -> None:
    zones = {"topology": "zone", "regions": [{"name": "us-east-1a"}, {"name": "us-east-1b"}]}
    objects = render_objects(service_from(base_spec(placement=zones)), {"us-east-1a": 1, "us-east-1b": 1})
    for deployment in by_kind(objects, "Deployment"):
        selector = deployment["spec"]["template"]["spec"]["nodeSelector"]
        assert selector["topology.kubernetes.io/zone"] == deployment["metadata"]["labels"]["sloserve.io/region"]
        assert "topology.kubernetes.io/region" not in selector
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind(objects, "Service")}
    assert services["chat"]["trafficDistribution"] == "PreferClose"
    assert "trafficDistribution" not in services["chat-us-east-1a"]
    regions = render_objects(service_from(base_spec(placement=TWO_REGIONS)), {"us-east-1": 1, "eu-west-1": 1})
    assert all("trafficDistribution" not in s["spec"] for s in by_kind(regions, "Service"))  # the default
    assert "topology.kubernetes.io/region" in by_kind(regions, "Deployment")[0]["spec"]["template"]["spec"]["nodeSelector"]


def test_pdb_never_evicts_a_regions_only_pod() -> None:
    service = service_from(base_spec(placement=TWO_REGIONS))
    objects = render_objects(service, {"us-east-1": 1, "eu-west-1": 2}, warm_by_region={"us-east-1": 0, "eu-west-1": 1})
    budgets = {pdb["metadata"]["name"]: pdb["spec"] for pdb in by_kind(objects, "PodDisruptionBudget")}
    assert budgets["chat-us-east-1"]["maxUnavailable"] == 0  # one pod: a drain must wait, not empty the region
    assert budgets["chat-eu-west-1"]["maxUnavailable"] == 1  # three pods: one at a time
    assert all("minAvailable" not in spec for spec in budgets.values())  # one form: merge patches stay valid
    one_plus_warm = render_objects(service, {"us-east-1": 1, "eu-west-1": 1},
                                   warm_by_region={"us-east-1": 1, "eu-west-1": 0})
    assert {pdb["metadata"]["name"]: pdb["spec"]["maxUnavailable"]
            for pdb in by_kind(one_plus_warm, "PodDisruptionBudget")} == {"chat-us-east-1": 1, "chat-eu-west-1": 0}


def test_monitoring_labels_go_on_pod_monitor_and_rule_only() -> None:
    service = service_from(base_spec())
    objects = render_objects(service, {"default": 1}, monitoring_labels={"release": "kube-prometheus-stack",
                                                                         "sloserve.io/model-service": "other"})
    for kind in ("PodMonitor", "PrometheusRule"):
        (obj,) = by_kind(objects, kind)
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert obj["metadata"]["labels"]["sloserve.io/model-service"] == "chat"  # never overridden
    assert all("release" not in obj["metadata"]["labels"] for obj in objects
               if obj["kind"] not in ("PodMonitor", "PrometheusRule"))


def test_prestop_sleep_needs_the_charts_kubernetes_version() -> None:
    """The sleep action is on by default from 1.30; the chart must not claim less (it did: >= 1.27)."""
    chart = yaml.safe_load((Path(__file__).resolve().parents[2] / "charts" / "sloserve" / "Chart.yaml").read_text())
    minimum = re.match(r">=\s*(\d+)\.(\d+)", chart["kubeVersion"])
    assert minimum and (int(minimum[1]), int(minimum[2])) >= (1, 30), chart["kubeVersion"]
    container = by_kind(render_default(service_from(base_spec())), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "sleep" in container["lifecycle"]["preStop"]


def test_pod_security_is_restricted() -> None:
    for _, service in all_services():
        pod = by_kind(render_default(service), "Deployment")[0]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert {"/tmp", "/cache"} <= mounted  # writable scratch despite the read-only root
        assert all("hostPath" not in volume for volume in pod["volumes"])


def test_probes_drain_and_resources() -> None:
    service = service_from(base_spec(resources={"gpus": 2, "gpuType": "nvidia-h100", "cpu": "8", "memory": "64Gi"},
                                     placement=TWO_REGIONS))
    deployment = by_kind(render_default(service), "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = runtime_container(deployment)
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 600
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    drain = int(flags(container["args"])["--drain-timeout"])
    assert pod["terminationGracePeriodSeconds"] > drain + container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert container["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert pod["nodeSelector"] == {"topology.kubernetes.io/region": "us-east-1", "nvidia.com/gpu.product": "nvidia-h100"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    zones = [c for c in pod["topologySpreadConstraints"] if c["topologyKey"] == "topology.kubernetes.io/zone"]
    assert zones and zones[0]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_cpu_service_has_no_gpu_resources_or_tolerations() -> None:
    service = service_from(base_spec(resources={"gpus": 0, "cpu": "2", "memory": "4Gi"}))
    pod = by_kind(render_default(service), "Deployment")[0]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert flags(pod["containers"][0]["args"])["--device"] == "cpu"
    assert flags(pod["containers"][0]["args"])["--threads"] == "2"


def test_pod_monitor_relabels_to_the_shared_target_labels() -> None:
    service = service_from(base_spec(placement=TWO_REGIONS))
    monitor = by_kind(render_default(service), "PodMonitor")[0]
    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    targets = {relabel["targetLabel"]: relabel["sourceLabels"][0] for relabel in endpoint["relabelings"]}
    assert targets == {
        "namespace": "__meta_kubernetes_namespace",
        "model_service": "__meta_kubernetes_pod_label_sloserve_io_model_service",
        "region": "__meta_kubernetes_pod_label_sloserve_io_region",
        "role": "__meta_kubernetes_pod_label_sloserve_io_role",
        "pod": "__meta_kubernetes_pod_name",
    }
    assert monitor["spec"]["selector"]["matchLabels"] == {"sloserve.io/model-service": "chat"}
    rule = by_kind(render_default(service), "PrometheusRule")[0]
    assert rule["spec"]["groups"] == rule_groups(service)


def test_monitoring_can_be_left_out() -> None:
    kinds = {obj["kind"] for obj in render_default(service_from(base_spec()), monitoring=False)}
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget"}


# ---------------------------------------------------------------- engine flags


def test_bundled_args_carry_every_knob_and_the_budgets() -> None:
    spec = base_spec(runtime={"quantization": "int8", "prefixCaching": False, "maxBatchSize": 48,
                              "maxBatchedTokens": 1024, "maxModelLen": 2048,
                              "speculative": {"method": "draft", "numTokens": 5, "draftModel": "pvc://models/small"}},
                     slo={"ttft": {"p95": "1.5s"}, "itl": {"p95": "40ms"}})
    service = service_from(spec)
    args = flags(container_args(service))
    assert args["--served-model-name"] == "llama-3.1-8b-instruct"
    assert args["--model"] == "/models/model/llama-3.1-8b"
    assert args["--port"] == "8000"
    assert args["--max-batch-size"] == "48" and args["--max-batched-tokens"] == "1024"
    assert args["--max-model-len"] == "2048"
    assert "--no-prefix-caching" in args and "--prefix-caching" not in args
    assert args["--quantization"] == "int8"
    assert args["--speculative-method"] == "draft" and args["--num-speculative-tokens"] == "5"
    assert args["--draft-model"] == "/models/draft/small"
    assert args["--slo-ttft-ms"] == "1500" and args["--slo-itl-ms"] == "40"
    assert args["--device"] == "cuda"
    assert "--host" not in args
    deployment = by_kind(render_default(service), "Deployment")[0]
    container = runtime_container(deployment)
    assert container["command"] == ["sloserve-runtime"]
    assert flags(container["args"])["--host"] == "0.0.0.0"
    assert flags(container["args"])["--grpc-port"] == "8001"
    assert {port["name"] for port in container["ports"]} == {"http", "grpc"}


def test_bundled_default_model_means_no_model_flag() -> None:
    service = service_from(base_spec(model={"name": "smollm2", "uri": ""}))
    assert "--model" not in flags(container_args(service))


def test_vllm_args() -> None:
    ngram = service_from(base_spec(engine="vllm", runtime={
        "quantization": "fp8", "prefixCaching": False, "maxBatchSize": 128, "maxBatchedTokens": 8192,
        "maxModelLen": 16384, "speculative": {"method": "ngram", "numTokens": 4}},
        resources={"gpus": 2, "cpu": "8", "memory": "64Gi"}))
    container = runtime_container(by_kind(render_default(ngram), "Deployment")[0])
    assert container["command"][-1] == "vllm.entrypoints.openai.api_server"
    args = flags(container["args"])
    assert args["--model"] == "/models/model/llama-3.1-8b"
    assert args["--served-model-name"] == "llama-3.1-8b-instruct"
    assert args["--max-num-seqs"] == "128" and args["--max-num-batched-tokens"] == "8192"
    assert args["--max-model-len"] == "16384"
    assert "--no-enable-prefix-caching" in args
    assert args["--quantization"] == "fp8" and args["--tensor-parallel-size"] == "2"
    config = json.loads(args["--speculative-config"])
    assert config["method"] == "ngram" and config["num_speculative_tokens"] == 4
    assert config["prompt_lookup_max"] >= config["prompt_lookup_min"] >= 1
    assert "--slo-ttft-ms" not in args
    assert {port["name"] for port in container["ports"]} == {"http"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"

    draft = service_from(base_spec(engine="vllm", runtime={
        "speculative": {"method": "draft", "numTokens": 3, "draftModel": "hf://Qwen/Qwen2.5-0.5B-Instruct"}}))
    pod = by_kind(render_default(draft), "Deployment")[0]["spec"]["template"]["spec"]
    config = json.loads(flags(pod["containers"][0]["args"])["--speculative-config"])
    assert config == {"model": "/models/draft", "num_speculative_tokens": 3}
    assert [init["name"] for init in pod["initContainers"]] == ["fetch-draft"]
    assert "--enable-prefix-caching" in flags(pod["containers"][0]["args"])


def test_sglang_args() -> None:
    service = service_from(base_spec(engine="sglang", runtime={
        "prefixCaching": False, "maxBatchSize": 96, "maxBatchedTokens": 4096, "maxModelLen": 8192,
        "speculative": {"method": "draft", "numTokens": 4, "draftModel": "pvc://models/draft-1b"}},
        resources={"gpus": 2, "cpu": "8", "memory": "64Gi"}, slo={"ttft": {"p95": "300ms"}, "itl": {"p95": "45ms"}}))
    container = runtime_container(by_kind(render_default(service), "Deployment")[0])
    assert container["command"][-1] == "sglang.launch_server"
    args = flags(container["args"])
    assert args["--model-path"] == "/models/model/llama-3.1-8b"
    assert args["--max-running-requests"] == "96" and args["--chunked-prefill-size"] == "4096"
    assert args["--context-length"] == "8192"
    assert "--disable-radix-cache" in args and "--enable-metrics" in args
    assert args["--tp-size"] == "2"
    assert args["--speculative-algorithm"] == "STANDALONE"
    assert args["--speculative-draft-model-path"] == "/models/draft/draft-1b"
    assert args["--speculative-num-steps"] == "4" and args["--speculative-num-draft-tokens"] == "5"
    assert "0.3" in args["--bucket-time-to-first-token"]  # the budget is an exact boundary
    assert "0.045" in args["--bucket-inter-token-latency"]
    assert sorted(map(float, args["--bucket-inter-token-latency"])) == list(map(float, args["--bucket-inter-token-latency"]))


def test_engine_metric_names_cover_every_logical_name() -> None:
    logical = {"ttft", "itl", "e2e", "queue_time", "running", "waiting", "kv_usage", "prompt_tokens",
               "generation_tokens", "request_success"}
    assert set(ENGINE_METRICS) == set(PROFILES) == {"bundled", "vllm", "sglang"}
    for engine, names in ENGINE_METRICS.items():
        assert logical <= set(names) <= logical | {"refused", "prefix_cache_queries", "prefix_cache_hits", "prompt_length"}, engine
        prefix = {"bundled": "sloserve:", "vllm": "vllm:", "sglang": "sglang:"}[engine]
        assert all(name.startswith(prefix) for name in names.values())


# ---------------------------------------------------------------- model sources and images


def test_model_sources() -> None:
    pvc = by_kind(render_default(service_from(base_spec())), "Deployment")[0]["spec"]["template"]["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pvc["volumes"]
    assert {"name": "model", "mountPath": "/models/model", "readOnly": True} in pvc["containers"][0]["volumeMounts"]

    hf_spec = base_spec(model={"name": "llama", "uri": "hf://meta-llama/Llama-3.1-8B-Instruct", "revision": "abc123"})
    hf = by_kind(render_default(service_from(hf_spec)), "Deployment")[0]["spec"]["template"]["spec"]
    init = hf["initContainers"][0]
    env = {item["name"]: item.get("value") for item in init["env"]}
    assert env["HF_REPO"] == "meta-llama/Llama-3.1-8B-Instruct" and env["HF_REVISION"] == "abc123"
    assert {"name": "model", "emptyDir": {"sizeLimit": "100Gi"}} in hf["volumes"]  # spec.model.storage's default
    assert hf["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "100Gi"
    assert "ephemeral-storage" not in pvc["containers"][0]["resources"]["requests"]
    sized = base_spec(model={"name": "llama", "uri": "hf://org/big", "storage": "300Gi"})
    sized_pod = by_kind(render_default(service_from(sized)), "Deployment")[0]["spec"]["template"]["spec"]
    assert {"name": "model", "emptyDir": {"sizeLimit": "300Gi"}} in sized_pod["volumes"]
    assert init["image"] == hf["containers"][0]["image"]
    assert flags(hf["containers"][0]["args"])["--model"] == "/models/model"

    file_spec = base_spec(model={"name": "llama", "uri": "file:///opt/models/llama"})
    baked = by_kind(render_default(service_from(file_spec)), "Deployment")[0]["spec"]["template"]["spec"]
    assert flags(baked["containers"][0]["args"])["--model"] == "/opt/models/llama"
    assert not any(volume["name"] == "model" for volume in baked["volumes"])

    with pytest.raises(UnsupportedKnob, match=r"spec\.model\.uri.*s3://"):
        render_default(service_from(base_spec(model={"name": "llama", "uri": "s3://bucket/llama"})))


def test_image_precedence() -> None:
    plain = service_from(base_spec(engine="vllm"))
    assert runtime_container(by_kind(render_default(plain), "Deployment")[0])["image"].startswith("vllm/vllm-openai:")
    operator_image = render_default(plain, images={"vllm": "registry.local/vllm:1"})
    assert runtime_container(by_kind(operator_image, "Deployment")[0])["image"] == "registry.local/vllm:1"
    pinned = service_from(base_spec(engine="vllm", runtime={"image": "registry.local/vllm:pinned"}))
    chosen = render_default(pinned, images={"vllm": "registry.local/vllm:1"})
    assert runtime_container(by_kind(chosen, "Deployment")[0])["image"] == "registry.local/vllm:pinned"


def test_long_names_stay_within_63_characters() -> None:
    region = "region-with-a-long-name"
    name = child_name("a" * 60, region)
    assert len(name) <= 63 and name != child_name("a" * 59, region)
    assert child_name("a" * 60, region) == name  # stable across calls
    assert child_name("chat", "us-east-1") == "chat-us-east-1" and child_name("chat", "default") == "chat"


def test_render_is_pure() -> None:
    service = service_from(base_spec(placement=TWO_REGIONS), uid="u-1")
    before = service.model_dump()
    first = render_objects(service, {"us-east-1": 2, "eu-west-1": 1})
    second = render_objects(service, {"us-east-1": 2, "eu-west-1": 1})
    assert first == second and service.model_dump() == before


def test_render_command_prints_valid_objects(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    render_command.add_arguments(parser)
    assert render_command.run(parser.parse_args(["-f", str(EXAMPLES / "quickstart.yaml"), "--replicas", "2"])) == 0
    objects = [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]
    deployment = by_kind(objects, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 3  # 2 serving + the warm pool of 1
    for obj in objects:
        check_object(obj, "1.30")


def test_bundled_container_args_are_accepted_by_the_runtime_cli() -> None:
    """The Deployment's command line, parsed by sloserve-runtime's own parser, means what the spec says."""
    from sloserve_runtime.cli import build_parser, configs_from_args

    spec = base_spec(runtime={"quantization": "int4", "prefixCaching": False, "maxBatchSize": 24,
                              "speculative": {"method": "ngram", "numTokens": 6}},
                     resources={"gpus": 0, "cpu": "3", "memory": "8Gi"},
                     slo={"ttft": {"p95": "750ms"}, "itl": {"p95": "80ms"}})
    container = runtime_container(by_kind(render_default(service_from(spec)), "Deployment")[0])
    config, options = configs_from_args(build_parser().parse_args(container["args"]))
    assert (config.model, config.served_model_name, config.device, config.threads) == (
        "/models/model/llama-3.1-8b", "llama-3.1-8b-instruct", "cpu", 3)
    assert (config.max_batch_size, config.prefix_caching, config.quantization) == (24, False, "int4")
    assert (config.speculative_method, config.num_speculative_tokens) == ("ngram", 6)
    assert (options.host, options.port, options.grpc_port) == ("0.0.0.0", 8000, 8001)
    assert (options.slo_ttft_ms, options.slo_itl_ms) == (750.0, 80.0)
    assert options.drain_timeout > 0


def test_children_do_not_carry_the_label_argocd_tracks_apps_by() -> None:
    """ArgoCD's default tracking label is app.kubernetes.io/instance: a child carrying it would be taken for
    an object of an Argo application named after the ModelService."""
    spec = yaml.safe_load((EXAMPLES / "chat-gpu.yaml").read_text())
    service = ModelService.model_validate(spec)
    for obj in render_objects(service, {"us-east-1": 2, "eu-west-1": 1}):
        labels = obj["metadata"].get("labels") or {}
        template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
        assert "app.kubernetes.io/instance" not in labels, obj["metadata"]["name"]
        assert "app.kubernetes.io/instance" not in (template.get("labels") or {}), obj["metadata"]["name"]
