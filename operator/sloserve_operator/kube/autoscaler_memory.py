"""What the autoscaler remembers between ticks (policy state, warm targets, degraded note), kept in a
ConfigMap `<name>-autoscaler` owned by the ModelService.

Not an annotation on the ModelService: writing its metadata every tick would look like a change to kopf
(annotations are part of what it diffs) and race with its finalizer handling. Not status: the CRD's status
schema is typed. A ConfigMap survives operator restarts and leader changes, so stabilization windows
are not reset, and is garbage-collected with its owner.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from sloserve_operator.api.labels import AUTOSCALER_MEMORY_LABEL
from sloserve_operator.kube.client import Kube
from sloserve_operator.kube.owners import owner_reference

KEY = "memory.json"


def config_map_name(service: str) -> str:
    return f"{service}-autoscaler"


def read_memory(kube: Kube, namespace: str, service: str) -> dict[str, Any]:
    """The remembered dict, or {} when there is none yet or it cannot be parsed (start afresh)."""
    config_map = kube.get("ConfigMap", namespace, config_map_name(service))
    text = ((config_map or {}).get("data") or {}).get(KEY)
    if not text:
        return {}
    try:
        memory = json.loads(text)
    except ValueError:
        return {}
    return memory if isinstance(memory, dict) else {}


def encode(memory: dict[str, Any]) -> str:
    return json.dumps(memory, sort_keys=True, separators=(",", ":"))


def write_memory(kube: Kube, owner: dict[str, Any], memory: dict[str, Any], previous: dict[str, Any]) -> bool:
    """Store `memory` unless it equals `previous`; True when something was written."""
    if memory == previous:
        return False
    meta = owner["metadata"]
    namespace, name = meta.get("namespace", "default"), config_map_name(meta["name"])
    body = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {AUTOSCALER_MEMORY_LABEL: meta["name"]},
                     "ownerReferences": [owner_reference(owner)]},
        "data": {KEY: encode(memory)},
    }
    try:
        kube.patch("ConfigMap", namespace, name, {"data": body["data"]})
    except ApiException as error:
        if error.status != 404:
            raise
        kube.create(body)
    return True
