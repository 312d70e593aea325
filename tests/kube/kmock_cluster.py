"""A kmock Kubernetes emulator in a background thread, reachable through a kubeconfig.

The real operator (kopf, the official kubernetes client) talks HTTP to it exactly as to an API server.
kmock stores objects and streams watch events; it does not assign uid, resourceVersion or
creationTimestamp and ignores generateName,
so ServingEmulator adds those (kopf and owner references need them). Known gaps kept
for e2e/: no server-side apply, label selectors ignored (kube.py filters again), status not a separate
subresource, no garbage collection, POST answers 200. One kmock parsing bug is patched below.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import yaml
from kmock._internal import enums, parsing

_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads /api/v1/namespaces[/NAME] as a namespace prefix with nothing after it and fails;
    kopf lists namespaces when it watches named ones. Parse the Namespace resource itself."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None, None)
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces

RESOURCES: dict[str, dict[str, Any]] = {
    "sloserve.io/v1alpha1/modelservices": {"kind": "ModelService", "namespaced": True,
                                           "subresources": {"status", "scale"}},
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True, "subresources": {"status", "scale"}},
    "v1/services": {"kind": "Service", "namespaced": True},
    "v1/pods": {"kind": "Pod", "namespaced": True, "subresources": {"status"}},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "policy/v1/poddisruptionbudgets": {"kind": "PodDisruptionBudget", "namespaced": True},
    "events.k8s.io/v1/events": {"kind": "Event", "namespaced": True},
}
PEERING_RESOURCES: dict[str, dict[str, Any]] = {
    "kopf.dev/v1/clusterkopfpeerings": {"kind": "ClusterKopfPeering", "namespaced": False},
    "kopf.dev/v1/kopfpeerings": {"kind": "KopfPeering", "namespaced": True},
}
MONITORING_RESOURCES: dict[str, dict[str, Any]] = {
    "monitoring.coreos.com/v1/podmonitors": {"kind": "PodMonitor", "namespaced": True},
    "monitoring.coreos.com/v1/prometheusrules": {"kind": "PrometheusRule", "namespaced": True},
}


class ServingEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata a real API server assigns on create and update, and its
    resourceVersion precondition on patches (409 Conflict)."""

    _counter = itertools.count(1)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {}) if request.action in (
                enums.action.CREATE, enums.action.UPDATE) else None
            if request.action == enums.action.UPDATE and meta and meta.get("resourceVersion"):
                current = self._current(request)  # optimistic concurrency, as the API server does it
                if current is not None and current.get("metadata", {}).get("resourceVersion") != meta["resourceVersion"]:
                    raise kmock.KubernetesError(status=409, reason="Conflict",
                                                message="the object has been modified; please apply your changes "
                                                        "to the latest version and try again")
            if meta is not None:
                meta["resourceVersion"] = str(next(self._counter))
            if request.action == enums.action.CREATE and meta is not None:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                meta.setdefault("generation", 1)
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                if request.namespace and "namespace" not in meta:
                    meta["namespace"] = request.namespace
            if request.action == enums.action.UPDATE and meta is not None and "spec" in request.data \
                    and request.subresource is None:
                current = self._current(request)
                if current is not None:
                    meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
        if request.resource is not None and request.action == enums.action.DELETE and request.name:
            current = self._current(request)
            if current is not None:  # marking for deletion is a write: it moves resourceVersion too
                key = (request.resource, request.namespace, request.name)
                self.objects[key].patch({"metadata": {"resourceVersion": str(next(self._counter))}})
        return await super()._handle(request)

    def _current(self, request: Any) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key].raw
        return None


class KmockCluster:
    """Start/stop the emulator on 127.0.0.1 in its own thread; write a kubeconfig pointing at it."""

    def __init__(self, tmp: Path, *, monitoring: bool = False) -> None:
        self.kubeconfig = tmp / "kubeconfig"
        self.monitoring = monitoring
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self.ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.emulator: ServingEmulator | None = None
        self.url = ""
        self.error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            self.error = error
            self.ready.set()

    async def _serve(self) -> None:
        self.stopping = asyncio.Event()
        async with ServingEmulator() as emulator, kmock.Server(emulator) as server:
            resources = {**RESOURCES, **PEERING_RESOURCES}
            if self.monitoring:
                resources.update(MONITORING_RESOURCES)
            for key, info in resources.items():
                emulator.resources[key] = kmock.ResourceInfo(
                    kind=info["kind"], namespaced=info["namespaced"],
                    verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
                    subresources=info.get("subresources", set()),
                )
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self.ready.set()
            await self.stopping.wait()

    def __enter__(self) -> KmockCluster:
        self.thread.start()
        if not self.ready.wait(10) or self.error is not None:
            raise RuntimeError(f"kmock did not start: {self.error!r}")
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": "default"}}],
        }))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stopping is not None:
            self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=10)

    # ------------------------------------------------------------ reading the stored state

    def call(self, fn: Any) -> Any:
        """Run fn() on the emulator's loop (its stores are not thread-safe)."""
        async def wrapper() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout=10)

    def objects(self, resource: str, namespace: str = "default") -> dict[str, dict[str, Any]]:
        """name -> latest body of every live object of a resource ('apps/v1/deployments')."""
        def collect() -> dict[str, dict[str, Any]]:
            assert self.emulator is not None
            found = {}
            for (res, ns, name), obj in list(self.emulator.objects.items()):
                if _resource_key(res) == resource and ns == namespace and not obj.deleted:
                    found[name] = obj.raw
            return found
        return self.call(collect)

    def versions(self, resource: str, name: str, namespace: str = "default") -> int:
        """How many versions of an object the emulator has seen (creation + every write)."""
        def count() -> int:
            assert self.emulator is not None
            for (res, ns, obj_name), obj in list(self.emulator.objects.items()):
                if _resource_key(res) == resource and ns == namespace and obj_name == name:
                    return len([version for version in obj.history if version is not None])
            return 0
        return self.call(count)


def _resource_key(resource: Any) -> str:
    group = f"{resource.group}/" if resource.group else ""
    return f"{group}{resource.version}/{resource.plural}"
