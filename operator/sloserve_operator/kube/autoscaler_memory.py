"""The one store of a ModelService's desired state and the autoscaler's memory: a ConfigMap
`<name>-autoscaler` owned by the ModelService, holding the decided serving and warm targets per region,
the policy state and the degraded note.

The autoscale tick writes its decision here first, with a resourceVersion precondition, and acts only once
that write succeeded; reconcile (create, update, drift check) renders the Deployments from what is stored
here. So the two can never disagree about replicas, and a tick that lost a race (409) changes nothing.

Not an annotation on the ModelService: writing its metadata every tick would look like a change to kopf
(annotations are part of what it diffs) and race with its finalizer handling. Not status: status is an
output (what is), and the CRD's status schema is typed. A ConfigMap survives operator restarts and leader
changes, so stabilization windows are not reset, and is garbage-collected with its owner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException

from sloserve_operator.api.labels import AUTOSCALER_MEMORY_LABEL
from sloserve_operator.kube.client import Kube
from sloserve_operator.kube.owners import owner_reference

KEY = "memory.json"

WriteOutcome = Literal["written", "unchanged", "conflict", "gone"]


@dataclass(frozen=True)
class Stored:
    """The remembered dict and the ConfigMap's resourceVersion it was read at (None: no ConfigMap yet)."""

    memory: dict[str, Any] = field(default_factory=dict)
    resource_version: str | None = None


def namespace_terminating(error: ApiException) -> bool:
    """The API server refuses new objects in a namespace being deleted (403 NamespaceTerminating): not a
    permission problem, the ModelService is about to go as well."""
    return error.status == 403 and "NamespaceTerminating" in (error.body or "")


def config_map_name(service: str) -> str:
    return f"{service}-autoscaler"


def read_stored(kube: Kube, namespace: str, service: str) -> Stored:
    """The stored memory and its resourceVersion; an unparsable one reads as {} (start afresh)."""
    config_map = kube.get("ConfigMap", namespace, config_map_name(service))
    if config_map is None:
        return Stored()
    version = (config_map.get("metadata") or {}).get("resourceVersion")
    text = (config_map.get("data") or {}).get(KEY)
    try:
        memory = json.loads(text) if text else {}
    except ValueError:
        memory = {}
    return Stored(memory if isinstance(memory, dict) else {}, version)


def read_memory(kube: Kube, namespace: str, service: str) -> dict[str, Any]:
    """The remembered dict, or {} when there is none yet or it cannot be parsed."""
    return read_stored(kube, namespace, service).memory


def encode(memory: dict[str, Any]) -> str:
    return json.dumps(memory, sort_keys=True, separators=(",", ":"))


def write_memory(kube: Kube, owner: dict[str, Any], memory: dict[str, Any], stored: Stored) -> WriteOutcome:
    """Store `memory` if the ConfigMap is still at the version `stored` was read at.

    "unchanged" when there is nothing new to write, "conflict" when another writer got there first (409 on
    the precondition, or the ConfigMap appeared / vanished since it was read), "gone" when the namespace is
    being deleted (its ConfigMaps go before the ModelService): in both the caller must not act."""
    if memory == stored.memory and stored.resource_version is not None:
        return "unchanged"
    meta = owner["metadata"]
    namespace, name = meta.get("namespace", "default"), config_map_name(meta["name"])
    data = {KEY: encode(memory)}
    try:
        if stored.resource_version is None:
            kube.create({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "labels": {AUTOSCALER_MEMORY_LABEL: meta["name"]},
                             "ownerReferences": [owner_reference(owner)]},
                "data": data,
            })
        else:
            kube.patch("ConfigMap", namespace, name,
                       {"metadata": {"resourceVersion": stored.resource_version}, "data": data})
    except ApiException as error:
        if error.status in (404, 409):  # 409: changed or created meanwhile; 404: deleted meanwhile
            return "conflict"
        if namespace_terminating(error):
            return "gone"
        raise
    return "written"
