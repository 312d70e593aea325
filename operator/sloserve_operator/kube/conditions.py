"""Status conditions as Kubernetes conventions want them: lastTransitionTime moves only when status moves.

Pure functions over lists of condition dicts (camelCase, as stored in the ModelService status), so the
reconcile loop and the autoscale timer can each update the conditions they own without clobbering the rest.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# Reconciling / Stalled follow kstatus (what Flux's health checks and `kubectl wait` read): both "abnormal-true",
# absent or False plus status.observedGeneration == metadata.generation means Current.
CONDITION_TYPES = ("Ready", "Progressing", "Reconciling", "Stalled", "SLOMet", "MetricsAvailable", "Degraded")


def rfc3339(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(type_: str, status: bool | None, reason: str, message: str = "") -> dict[str, Any]:
    """A condition without its timestamps (set_conditions adds them). status None means Unknown."""
    if type_ not in CONDITION_TYPES:
        raise ValueError(f"unknown condition type {type_!r}; expected one of {', '.join(CONDITION_TYPES)}")
    text = "Unknown" if status is None else ("True" if status else "False")
    return {"type": type_, "status": text, "reason": reason, "message": message[:1024]}


def set_conditions(current: list[dict[str, Any]] | None, updates: list[dict[str, Any]], *, now: float,
                   generation: int | None) -> list[dict[str, Any]]:
    """Merge `updates` into `current` (by type), keeping lastTransitionTime unless the status changed.

    Conditions not in `updates` are kept as they are; the result is ordered as CONDITION_TYPES."""
    by_type = {item["type"]: dict(item) for item in current or [] if "type" in item}
    for update in updates:
        previous = by_type.get(update["type"])
        merged = dict(update)
        if previous is not None and previous.get("status") == update["status"]:
            merged["lastTransitionTime"] = previous.get("lastTransitionTime") or rfc3339(now)
        else:
            merged["lastTransitionTime"] = rfc3339(now)
        if generation is not None:
            merged["observedGeneration"] = generation
        by_type[update["type"]] = merged
    order = {name: index for index, name in enumerate(CONDITION_TYPES)}
    return sorted(by_type.values(), key=lambda item: order.get(item["type"], len(order)))


def find(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((item for item in conditions or [] if item.get("type") == type_), None)


def changed(before: list[dict[str, Any]] | None, after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions in `after` whose status, reason or message differ from `before` (for Events)."""
    result = []
    for item in after:
        old = find(before, item["type"])
        if old is None or any(old.get(key) != item.get(key) for key in ("status", "reason", "message")):
            result.append(item)
    return result
