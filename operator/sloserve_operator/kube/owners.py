"""Owner references: every child of a ModelService (rendered objects and the autoscaler's ConfigMap) is owned
by it, so the garbage collector removes them with it and the operator can tell its children from others'.

A module of its own because both reconcile.py and autoscaler_memory.py need it and neither should import the
other.
"""

from __future__ import annotations

import copy
from typing import Any

from sloserve_operator.api.spec import API_VERSION, KIND


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "controller": True, "blockOwnerDeletion": True}


def with_owner(obj: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    owned = copy.deepcopy(obj)
    owned.setdefault("metadata", {})["ownerReferences"] = [reference]
    return owned


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj.get("metadata", {}).get("ownerReferences") or [])
