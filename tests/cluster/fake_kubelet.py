"""Fake nodes and a fake kubelet: what lets pods of a kubelet-less control plane become Running and Ready.

The scheduler binds pods to the fake Nodes (by region, zone and GPU labels, nvidia.com/gpu capacity); the
fake kubelet then does the two things a kubelet does that the operator depends on: it reports bound pods
Running and Ready with a pod IP (so the EndpointSlice controller puts them behind Services), and it
finishes the deletion of terminating pods (a real kubelet stops the containers, then deletes the pod).
Pods with no node bound are left alone: they stay Pending, as on a real cluster.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import logging
import threading
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)

REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
GPU_PRODUCT = "nvidia.com/gpu.product"
# A test sets this annotation on a pod to make it fail its readiness probe (a hung or crash-looping
# runtime): the fake kubelet reports it Running but not Ready until the annotation is removed.
HOLD_UNREADY = "fake-kubelet.sloserve.io/unready"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def create_node(api: client.ApiClient, name: str, *, region: str, zone: str, gpus: int = 8,
                gpu_type: str = "nvidia-h100", ip: str = "192.0.2.1") -> None:
    """A Node with topology and GPU labels; its status (capacity, Ready) is set through /status."""
    core = client.CoreV1Api(api)
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", REGION: region, ZONE: zone}
    if gpus:
        labels[GPU_PRODUCT] = gpu_type
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                      "spec": {}})
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110", "ephemeral-storage": "1Ti"}
    if gpus:
        capacity["nvidia.com/gpu"] = str(gpus)
    now = _now()
    core.patch_node_status(name, {"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "FakeKubelet", "message": "fake node",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"kubeletVersion": "v1.36.3", "architecture": "amd64", "operatingSystem": "linux",
                     "machineID": name, "systemUUID": name, "bootID": name, "kernelVersion": "fake",
                     "osImage": "fake", "containerRuntimeVersion": "fake://1", "kubeProxyVersion": "v1.36.3"},
    }})
    # The TaintNodesByCondition admission plugin taints every new Node not-ready; on a real cluster the
    # node lifecycle controller lifts it once the kubelet reports Ready. That controller is off here (no
    # heartbeats would come), so the fake node lifts it itself.
    core.patch_node(name, {"spec": {"taints": None}})


class FakeKubelet:
    """A watch loop in a thread; start() / stop(). Pod IPs come from 10.244.0.0/16, one per pod.

    `startup_seconds` stands in for the model load: a bound pod is Running but not Ready for that long.
    With 0 (the default) pods are Ready at once, which hides what a warm pool is for; tests about
    promotion and rollouts set it (a real runtime takes minutes). A pod annotated HOLD_UNREADY is made
    (or kept) Running and not Ready, whatever its age: its readiness probe fails."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.startup_seconds = 0.0
        self._starting: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-kubelet", daemon=True)
        self._ips = (str(ip) for ip in itertools.islice(ipaddress.ip_network("10.244.0.0/16").hosts(), 1, None))
        self._lock = threading.Lock()
        self.errors: list[str] = []

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.core.list_pod_for_all_namespaces()
                for pod in pods.items:
                    self.handle(pod)
                stream = watch.Watch()
                for event in stream.stream(self.core.list_pod_for_all_namespaces, timeout_seconds=5,
                                           resource_version=pods.metadata.resource_version):
                    if self._stop.is_set():
                        stream.stop()
                        break
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.handle(event["object"])
            except Exception as error:  # noqa: BLE001 - a watch that expired or blipped: list again
                if not self._stop.is_set():
                    self.errors.append(repr(error))
                    self._stop.wait(0.2)

    def handle(self, pod: client.V1Pod) -> None:
        meta, spec, status = pod.metadata, pod.spec, pod.status
        try:
            if meta.deletion_timestamp is not None:
                # The kubelet's part of graceful deletion: containers stopped, the pod object removed.
                self.core.delete_namespaced_pod(meta.name, meta.namespace, grace_period_seconds=0)
            elif spec.node_name and _held_unready(pod):
                with self._lock:  # released later: start again (startup_seconds), as a restarted runtime
                    self._starting.discard(meta.uid)
                if _is_ready(pod) or (status.phase or "") != "Running":
                    self.core.patch_namespaced_pod_status(meta.name, meta.namespace, self._unready_status(pod))
            elif spec.node_name and not _is_ready(pod):
                if self.startup_seconds > 0:
                    self._start_later(pod)
                else:
                    self.core.patch_namespaced_pod_status(meta.name, meta.namespace,
                                                          self._running_status(pod, status))
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _start_later(self, pod: client.V1Pod) -> None:
        """Running, not Ready now; Ready after startup_seconds (a timer thread, once per pod)."""
        meta = pod.metadata
        with self._lock:
            if meta.uid in self._starting:
                return
            self._starting.add(meta.uid)
        self.core.patch_namespaced_pod_status(meta.name, meta.namespace, self._unready_status(pod))

        def ready() -> None:
            try:
                current = self.core.read_namespaced_pod(meta.name, meta.namespace)
                if current.metadata.uid == meta.uid and current.metadata.deletion_timestamp is None \
                        and not _held_unready(current):
                    self.core.patch_namespaced_pod_status(meta.name, meta.namespace,
                                                          self._running_status(current, current.status))
            except ApiException as error:
                if error.status != 404:
                    self.errors.append(repr(error))

        timer = threading.Timer(self.startup_seconds, ready)
        timer.daemon = True
        timer.start()

    def _unready_status(self, pod: client.V1Pod) -> dict[str, Any]:
        """Running with an IP, containers started but not ready (a probe failing or the model loading)."""
        starting = self._running_status(pod, pod.status)
        for condition in starting["status"]["conditions"]:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition["status"] = "False"
        for container in starting["status"]["containerStatuses"]:
            container["ready"] = False
        return starting

    def _running_status(self, pod: client.V1Pod, status: client.V1PodStatus) -> dict[str, Any]:
        now = _now()
        with self._lock:
            ip = status.pod_ip or next(self._ips)
        conditions = [{"type": kind, "status": "True", "lastTransitionTime": now}
                      for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
        containers = [{"name": c.name, "image": c.image, "imageID": f"fake://{c.image}", "ready": True,
                       "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                      for c in pod.spec.containers]
        return {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.0.2.1",
                           "startTime": now, "conditions": conditions, "containerStatuses": containers}}


def _held_unready(pod: client.V1Pod) -> bool:
    return (pod.metadata.annotations or {}).get(HOLD_UNREADY) == "true"


def _is_ready(pod: client.V1Pod) -> bool:
    if (pod.status.phase or "") != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
