"""ModelService documents shared by the agreement and CLI tests: the examples, and known mistakes to put in them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

EXAMPLES: dict[str, dict[str, Any]] = {
    path.stem: yaml.safe_load(path.read_text())
    for path in sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
}


def set_at(document: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (spec.scaling.warmPool.size), creating the objects on the way."""
    *parents, last = path.split(".")
    node = document
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


# (dotted path, the wrong value put there): refused by kube-apiserver with this CRD (checked by hand against
# tests/cluster's control plane) and by pydantic, both naming the path.
MISTAKES: list[tuple[str, Any]] = [
    # wrong types: the API server refuses a quoted number or a boolean where a number belongs, and so on
    ("spec.scaling.maxReplicas", "8"), ("spec.scaling.minReplicas", True),
    ("spec.runtime.maxBatchSize", "64"), ("spec.replicas", [1]),
    ("spec.resources.gpus", 1.5), ("spec.runtime.prefixCaching", "true"),
    ("spec.runtime.prefixCaching", 1), ("spec.admission.ttftMultiple", "1.5"),
    ("spec.admission.enabled", "yes"), ("spec.admission.ttftMultiple", True),
    ("spec.model.name", 5), ("spec.engine", 1), ("spec.slo.ttft.p95", 0.5),
    ("spec.slo.objective", 0.99), ("spec.resources.cpu", 1.5), ("spec.resources.cpu", True),
    ("spec.resources.memory", [1]), ("spec.placement.regions", {"name": "a"}),
    ("spec.runtime", "fast"), ("spec.scaling.warmPool", 1), ("spec.model", "llama"),
    # negative and huge numbers
    ("spec.replicas", -1), ("spec.scaling.warmPool.size", -1), ("spec.resources.gpus", -1),
    ("spec.resources.cpu", -1), ("spec.resources.memory", -1), ("spec.model.storage", -5),
    ("spec.admission.ttftMultiple", -0.5), ("spec.scaling.scaleDown.maxStep", 0),
    ("spec.runtime.maxModelLen", 2**40), ("spec.replicas", 10**6), ("spec.scaling.maxReplicas", 2**64),
    ("spec.resources.cpu", 2**70), ("spec.resources.memory", 1e19), ("spec.scaling.maxReplicas", 3.5),
    ("spec.admission.ttftMultiple", 1e308),
    # min above max
    ("spec.scaling.minReplicas", 1001),
    # unknown enum values
    ("spec.engine", "tgi"), ("spec.runtime.quantization", "int2"),
    ("spec.runtime.speculative.method", "medusa"), ("spec.scaling.mode", "auto"),
    ("spec.placement.topology", "rack"), ("spec.engine", "VLLM"),
    # unknown fields
    ("spec.runtime.maxBatchsize", 8), ("spec.scaling.warmpool", {"size": 1}),
    ("spec.replica", 2), ("spec.slo.ttft.p99", "1s"), ("extra", {}), ("spec.runtime.typo", None),
    ("spec.scaling.max_replicas", 3), ("spec.runtime.max_batch_size", 8),  # Python names are not YAML names
    # bad units
    ("spec.slo.ttft.p95", "5 minutes"), ("spec.slo.ttft.p95", "500"), ("spec.slo.itl.p95", "1d"),
    ("spec.slo.itl.p95", "5M"), ("spec.slo.itl.p95", "-1s"), ("spec.slo.ttft.p95", "500 ms"),
    ("spec.placement.pendingTimeout", "1.s"), ("spec.resources.cpu", "2 cores"),
    ("spec.resources.cpu", "1.5m"), ("spec.resources.memory", "32GB"),
    ("spec.resources.memory", "32gi"), ("spec.slo.objective", "99"), ("spec.slo.objective", "99 %"),
    # empty strings
    ("spec.model.name", ""), ("spec.engine", ""), ("spec.slo.ttft.p95", ""),
    ("spec.slo.objective", ""), ("spec.resources.cpu", ""), ("spec.resources.memory", ""),
    ("spec.scaling.scaleDown.stabilizationWindow", ""), ("spec.runtime.image", ""),
    ("spec.resources.gpuType", ""), ("spec.scaling.profile.configMap", ""),
    # objectives of 100% and 0%, zero budgets
    ("spec.slo.objective", "100%"), ("spec.slo.objective", "100.0%"), ("spec.slo.objective", "0%"),
    ("spec.slo.objective", "0.0%"), ("spec.slo.objective", "00%"),
    ("spec.slo.ttft.p95", "0ms"), ("spec.slo.itl.p95", "0s"), ("spec.slo.ttft.p95", "0m0.0s"),
    # names: DNS-1035 labels for the ModelService, DNS labels for regions, object and key names
    ("metadata.name", "Chat"), ("metadata.name", "chat.v1"), ("metadata.name", "1chat"),
    ("metadata.name", "chät"), ("metadata.name", "c" * 64), ("metadata.name", "chat-"),
    ("spec.scaling.profile.configMap", "Profiles_1"), ("spec.scaling.profile.configMap", "../secrets"),
    ("spec.resources.gpuType", "nvidia h100"), ("spec.resources.gpuType", "ĥ100"),
]


def mistaken(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(base)
    if path == "spec.resources.gpuType":
        set_at(document, "spec.resources.gpus", 1)  # so that only the type itself is wrong
    if path.startswith("spec.scaling.profile.") and path != "spec.scaling.profile.configMap":
        set_at(document, "spec.scaling.profile.configMap", "profiles")
    if path.startswith("spec.runtime.speculative."):
        set_at(document, "spec.engine", "bundled")
    set_at(document, path, value)
    return document
