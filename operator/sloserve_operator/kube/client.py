"""A thin, generic layer over the official `kubernetes` client for the few kinds the operator touches.

The typed APIs of the client need one method per kind; the operator's reconcile loop treats every child
object alike (get, create, merge-patch, delete, list by label), so this module builds the REST path from a
small kind table and lets the client's ApiClient do configuration, authentication, TLS and retries of the
transport. Objects stay plain dicts, exactly as render.py builds them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the REST API."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def collection_path(self, namespace: str | None) -> str:
        root = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            return f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{root}/{self.plural}"


KINDS: dict[str, Kind] = {
    kind.kind: kind
    for kind in (
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("v1", "Service", "services"),
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Event", "events"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
        Kind("monitoring.coreos.com/v1", "ServiceMonitor", "servicemonitors"),
        Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules"),
        Kind("inference.networking.k8s.io/v1", "InferencePool", "inferencepools"),
        Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
        Kind("sloserve.io/v1alpha1", "ModelService", "modelservices"),
    )
}

MONITORING_API = "monitoring.coreos.com/v1"


def kind_of(obj: dict[str, Any]) -> Kind:
    """The Kind entry for an object; unknown kinds are a programming error in render.py."""
    try:
        return KINDS[obj["kind"]]
    except KeyError as error:
        raise ValueError(f"kube.py does not know kind {obj.get('kind')!r}; add it to KINDS") from error


def load_configuration() -> client.Configuration:
    """In-cluster service account when running in a pod, else KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        # KUBECONFIG is read now, not when the kubernetes package was imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                client_configuration=configuration)
    return configuration


def connection_settings(configuration: client.Configuration) -> dict[str, Any]:
    """The kubernetes client's configuration as keyword arguments of kopf.ConnectionInfo, so kopf's own
    watch streams and our writes use the same credentials (in-cluster token, or the kubeconfig's)."""
    token = (configuration.api_key or {}).get("authorization") or (configuration.api_key or {}).get("BearerToken")
    if token:
        token = token.removeprefix("Bearer ").strip()
    return {
        "server": configuration.host,
        "ca_path": configuration.ssl_ca_cert,
        "insecure": not configuration.verify_ssl,
        "token": token or None,
        "certificate_path": configuration.cert_file,
        "private_key_path": configuration.key_file,
    }


class Kube:
    """Get, list, create, merge-patch and delete any kind in KINDS; answers are plain dicts."""

    def __init__(self, api_client: client.ApiClient | None = None, *, discovery_ttl: float = 300.0,
                 request_timeout: float | None = 30.0) -> None:
        self.api = api_client or client.ApiClient(load_configuration())
        self.request_timeout = request_timeout  # seconds per call; None waits forever (a hung call wedges)
        self._discovery_ttl = discovery_ttl
        self._discovered: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ raw request

    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json") -> Any:
        """One REST call; non-2xx raises the client's ApiException (with .status)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        query_params = [(key, value) for key, value in (query or {}).items() if value is not None]
        _, url, header_params, serialized, _ = self.api.param_serialize(
            method=method, resource_path=path, query_params=query_params, header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=header_params, body=serialized,
                                     _request_timeout=self.request_timeout)
        data = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(data) if data else None

    # ------------------------------------------------------------ objects

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"{KINDS[kind].collection_path(namespace)}/{name}")
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Objects of a kind carrying all `labels`. The selector is also applied here, so a server that
        ignores labelSelector (or a stale cache in front of it) cannot make us act on foreign objects."""
        selector = ",".join(f"{key}={value}" for key, value in sorted((labels or {}).items())) or None
        answer = self.request("GET", KINDS[kind].collection_path(namespace), query={"labelSelector": selector})
        items = (answer or {}).get("items") or []
        wanted = labels or {}
        # A real API server leaves kind and apiVersion out of a list's items (only the List carries them);
        # callers key children by kind, so put them back.
        known = KINDS[kind]
        return [
            {"apiVersion": known.api_version, "kind": known.kind, **item} for item in items
            if all((item.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in wanted.items())
            and (namespace is None or item.get("metadata", {}).get("namespace") in (None, namespace))
        ]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = kind_of(obj)
        return self.request("POST", kind.collection_path(obj["metadata"].get("namespace")), body=obj)

    def patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any], *,
              subresource: str | None = None) -> dict[str, Any]:
        """JSON merge patch: works for built-in kinds and custom resources alike."""
        path = f"{KINDS[kind].collection_path(namespace)}/{name}"
        if subresource:
            path += f"/{subresource}"
        return self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        try:
            self.request("DELETE", f"{KINDS[kind].collection_path(namespace)}/{name}",
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    # ------------------------------------------------------------ discovery

    def serves(self, api_version: str) -> bool:
        """Whether the API server serves a group/version (e.g. the Prometheus operator's CRDs).

        Cached for `discovery_ttl` seconds: CRDs are installed rarely and reconciles are frequent."""
        now = time.monotonic()
        with self._lock:
            cached = self._discovered.get(api_version)
            if cached and now - cached[0] < self._discovery_ttl:
                return cached[1]
        prefix = "/apis/" if "/" in api_version else "/api/"
        try:
            answer = self.request("GET", prefix + api_version)
            present = bool(answer)
        except ApiException as error:
            if error.status not in (404, 503):
                raise
            present = False
        with self._lock:
            self._discovered[api_version] = (now, present)
        return present
