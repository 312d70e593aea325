"""ModelService -> the Kubernetes objects that serve it. Pure: same input, same output, no API calls.

Per region: a Deployment (serving + warm pods; the pod template says role=serving and the operator relabels
warm pods), a Service selecting that region's serving pods and a PodDisruptionBudget. Per ModelService: a
Service `<name>` selecting serving pods in every region, a PodMonitor whose relabelling gives each series
the labels namespace, model_service, region, role and pod, and a PrometheusRule (slo_rules.py).

With spec.routing (docs/routing.md): an InferencePool (inference.networking.k8s.io/v1) `<name>` over the
serving pods of every region, one `<name>-R` per region when regions are listed, each naming its endpoint
picker Service (`<picker>`, `<picker>-R`), and, with spec.routing.httpRoute, an HTTPRoute `<name>`
(gateway.networking.k8s.io/v1) whose backend is the pool `<name>`. Without spec.routing nothing of the
gateway API is rendered (the Services alone, as before).

With spec.placement.topology "zone" the "regions" are zones of this cluster (node label
topology.kubernetes.io/zone) and the Service `<name>` over all of them prefers same-zone endpoints.

Naming: the default region (no spec.placement.regions) renders `<name>`; region R renders `<name>-R`,
shortened with a hash suffix when longer than 63 characters (a Service name's limit). All children carry the
label `sloserve.io/model-service=<name>` (the operator lists them by it, and deletes those of a region removed
from the spec) and an owner reference to the ModelService when its uid is known.

Model sources (spec.model.uri, and spec.runtime.speculative.draftModel):
- empty: the engine's default. The bundled runtime serves its built-in SmolLM2-135M-Instruct; vLLM and
  SGLang are given spec.model.name and download it themselves (HF_TOKEN from the optional Secret `hf-token`).
- pvc://CLAIM/PATH: the claim mounted read-only at /models/<role>, the engine pointed at PATH inside it.
- hf://ORG/NAME: an emptyDir filled by an init container (the engine image's own huggingface_hub,
  spec.model.revision honoured, HF_TOKEN from the optional Secret `hf-token`), then mounted read-only. Its
  sizeLimit is spec.model.storage (a draft model's: DRAFT_STORAGE), requested as ephemeral-storage too.
- file:///PATH: a path inside the image (a model baked into a custom spec.runtime.image). hostPath volumes
  are not allowed under the restricted Pod Security Standard, so node-local files are not mounted.
- s3:// and gs:// are refused with a clear error (no in-cluster fetcher yet).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from sloserve_operator.api.engines import (
    PROFILES,
    EngineProfile,
    ModelPaths,
    UnsupportedKnob,
    cpu_threads,
    engine_args,
)
from sloserve_operator.api.labels import (
    COMPONENT_LABEL,
    ENGINE_LABEL,
    MANAGED_BY_LABEL,
    MODEL_SERVICE_LABEL,
    NAME_LABEL,
    PART_OF_LABEL,
    REGION_LABEL,
    ROLE_LABEL,
    SERVING,
)
from sloserve_operator.api.spec import (
    API_VERSION,
    KIND,
    Engine,
    ModelService,
    ModelServiceSpec,
    SpeculativeMethod,
)
from sloserve_operator.autoscaler.decide.placement import (
    DEFAULT_REGION,
    region_names,
    region_weights,
    split_plain,
)
from sloserve_operator.kube.slo_rules import prometheus_rule

HTTP_PORT = 8000
GRPC_PORT = 8001
MODEL_ROOT = "/models"
CACHE_DIR = "/cache"
PRESTOP_SECONDS = 5  # endpoints controllers and proxies stop routing before the drain starts
DRAIN_SECONDS = 30  # in-flight requests get this long to finish after SIGTERM
GRACE_MARGIN_SECONDS = 15
STARTUP_BUDGET_SECONDS = 1800  # loading large weights onto GPUs can take many minutes
RUN_AS_ID = 1000
DRAFT_STORAGE = "20Gi"  # draft models are small (a few hundred MB to a few GB)
HF_TOKEN_SECRET = "hf-token"
HF_TOKEN_KEY = "token"
MAX_NAME = 63
# spec.placement.topology -> the node label a region's name is matched against
TOPOLOGY_LABELS = {"region": "topology.kubernetes.io/region", "zone": "topology.kubernetes.io/zone"}

_FETCH_SCRIPT = (
    "import os\n"
    "from huggingface_hub import snapshot_download\n"
    "snapshot_download(repo_id=os.environ['HF_REPO'], revision=os.environ.get('HF_REVISION') or None,\n"
    "                  local_dir=os.environ['MODEL_DIR'])\n"
)
_PVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


# ---------------------------------------------------------------- names and labels


def child_name(service_name: str, region: str) -> str:
    """`<name>` for the default region, `<name>-<region>` otherwise, hashed down to 63 characters."""
    name = service_name if region == DEFAULT_REGION else f"{service_name}-{region}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:MAX_NAME - 9].rstrip('-')}-{digest}"


def common_labels(service: ModelService, component: str = "model-server") -> dict[str, str]:
    """No app.kubernetes.io/instance: ArgoCD tracks its applications' objects by that label, so children
    carrying `<msvc>` there would look like a stray Argo app's (and could be pruned); the ModelService is
    named by sloserve.io/model-service instead."""
    return {
        NAME_LABEL: "sloserve-runtime",
        MANAGED_BY_LABEL: "sloserve-operator",
        COMPONENT_LABEL: component,
        PART_OF_LABEL: "sloserve",
        MODEL_SERVICE_LABEL: service.metadata.name,
        ENGINE_LABEL: service.spec.engine.value,
    }


def pod_selector(service: ModelService, region: str) -> dict[str, str]:
    """The Deployment's (immutable) selector: never the role, which the operator changes on live pods."""
    return {MODEL_SERVICE_LABEL: service.metadata.name, REGION_LABEL: region}


def _metadata(service: ModelService, name: str, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": service.metadata.namespace, "labels": labels}
    if service.metadata.uid:
        meta["ownerReferences"] = [{
            "apiVersion": API_VERSION, "kind": KIND, "name": service.metadata.name,
            "uid": service.metadata.uid, "controller": True, "blockOwnerDeletion": True,
        }]
    return meta


# ---------------------------------------------------------------- model sources


@dataclass
class ModelSource:
    """How one model reaches the container: its path there, plus the volumes and init steps it needs."""

    path: str | None = None
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    init_containers: list[dict[str, Any]] = field(default_factory=list)
    storage: str | None = None  # ephemeral storage the source needs on the node (hf:// downloads)


def model_source(uri: str, revision: str, *, role: str, field_name: str, image: str,
                 storage: str = DRAFT_STORAGE) -> ModelSource:
    """Resolve a model URI (see the module doc) for the volume named `role` ("model" or "draft")."""
    if not uri:
        return ModelSource()
    if "://" not in uri:  # a bare path (draft models are often given this way)
        return ModelSource(path=uri)
    scheme, rest = uri.split("://", 1)
    mount_dir = f"{MODEL_ROOT}/{role}"
    if scheme == "file":
        if not rest.startswith("/"):
            raise UnsupportedKnob(f"{field_name}: file:// needs an absolute path, e.g. file:///models/llama")
        return ModelSource(path=rest)
    if scheme == "pvc":
        claim, _, sub_path = rest.partition("/")
        if not _PVC_NAME.match(claim) or len(claim) > 253:
            raise UnsupportedKnob(f"{field_name}: {claim!r} is not a valid PersistentVolumeClaim name")
        return ModelSource(
            path=f"{mount_dir}/{sub_path.strip('/')}" if sub_path.strip("/") else mount_dir,
            volumes=[{"name": role, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            mounts=[{"name": role, "mountPath": mount_dir, "readOnly": True}],
        )
    if scheme == "hf":
        repo = rest.strip("/")
        return ModelSource(
            path=mount_dir,
            volumes=[{"name": role, "emptyDir": {"sizeLimit": storage}}],
            mounts=[{"name": role, "mountPath": mount_dir, "readOnly": True}],
            init_containers=[_fetch_container(role, repo, revision, mount_dir, image)],
            storage=storage,
        )
    raise UnsupportedKnob(f"{field_name}: scheme {scheme}:// is not supported by the renderer; "
                          "use pvc://, hf:// or file://")


def _fetch_container(role: str, repo: str, revision: str, mount_dir: str, image: str) -> dict[str, Any]:
    return {
        "name": f"fetch-{role}",
        "image": image,
        "command": ["python3", "-c", _FETCH_SCRIPT],
        "env": [
            {"name": "HF_REPO", "value": repo},
            {"name": "HF_REVISION", "value": revision},
            {"name": "MODEL_DIR", "value": mount_dir},
            *_cache_env(),
            _hf_token_env(),
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": role, "mountPath": mount_dir},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": CACHE_DIR},
        ],
    }


def _model_sources(spec: ModelServiceSpec, image: str) -> tuple[ModelSource, ModelSource]:
    main = model_source(spec.model.uri, spec.model.revision, role="model", field_name="spec.model.uri",
                        image=image, storage=spec.model.storage)
    draft = ModelSource()
    speculative = spec.runtime.speculative
    if speculative.method == SpeculativeMethod.draft and speculative.draft_model:
        draft = model_source(speculative.draft_model, "", role="draft",
                             field_name="spec.runtime.speculative.draftModel", image=image)
    return main, draft


# ---------------------------------------------------------------- container and pod


def engine_image(service: ModelService, images: dict[str, str] | None = None) -> str:
    """spec.runtime.image, else the operator's image for the engine, else the built-in default."""
    engine = service.spec.engine.value
    return service.spec.runtime.image or (images or {}).get(engine) or PROFILES[engine].image


def container_args(service: ModelService, port: int = HTTP_PORT, *, grpc_port: int = 0,
                   paths: ModelPaths | None = None) -> list[str]:
    """The engine's flags for this ModelService (no --host: callers choose where to listen).

    Local mode starts bundled-runtime processes with these; pass `paths` to point at local weights when
    spec.model.uri is a pvc:// or hf:// location that only exists inside a pod.
    """
    if paths is None:
        main, draft = _model_sources(service.spec, engine_image(service))
        paths = ModelPaths(main.path, draft.path)
    return engine_args(service.spec, port, paths, grpc_port=grpc_port, drain_timeout=DRAIN_SECONDS)


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _cache_env() -> list[dict[str, Any]]:
    """Every writable path the engines and their libraries use points into the emptyDirs. USER is set because
    the non-root UID has no passwd entry in most engine images and getpass.getuser() (torch's compile cache)
    fails without it."""
    return [
        {"name": "HOME", "value": "/tmp"},
        {"name": "USER", "value": "sloserve"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
    ]


def _hf_token_env() -> dict[str, Any]:
    return {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": HF_TOKEN_SECRET, "key": HF_TOKEN_KEY, "optional": True}}}


def _engine_env(spec: ModelServiceSpec, main: ModelSource) -> list[dict[str, Any]]:
    env = _cache_env()
    if main.path is None and spec.engine != Engine.bundled:
        env.append(_hf_token_env())  # the engine downloads spec.model.name itself
    else:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if spec.engine == Engine.bundled and spec.resources.gpus == 0:
        env.append({"name": "OMP_NUM_THREADS", "value": str(cpu_threads(spec))})
    if spec.engine == Engine.vllm:
        env.append({"name": "VLLM_NO_USAGE_STATS", "value": "1"})
    return env


def _resources(spec: ModelServiceSpec, *sources: ModelSource) -> dict[str, Any]:
    amounts: dict[str, str] = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    if spec.resources.gpus > 0:
        amounts["nvidia.com/gpu"] = str(spec.resources.gpus)
    # requests == limits: Guaranteed QoS, so latency does not depend on noisy neighbours.
    resources = {"requests": dict(amounts), "limits": dict(amounts)}
    downloads = [source.storage for source in sources if source.storage]
    if downloads:  # a request only: the emptyDir's sizeLimit is what evicts a runaway download
        from kubernetes.utils import parse_quantity  # (the kubernetes client is needed only here)

        resources["requests"]["ephemeral-storage"] = downloads[0] if len(downloads) == 1 else \
            str(int(sum(parse_quantity(size) for size in downloads)))
    return resources


def _probes(engine: EngineProfile) -> dict[str, Any]:
    def http(path: str, period: int, timeout: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period,
                "timeoutSeconds": timeout, "failureThreshold": failures}

    return {
        "startupProbe": http(engine.health_path, 10, 5, STARTUP_BUDGET_SECONDS // 10),
        "readinessProbe": http(engine.ready_path, 5, 3, 3),
        "livenessProbe": http(engine.health_path, 10, 5, 6),
    }


def _runtime_container(service: ModelService, image: str, main: ModelSource,
                       draft: ModelSource) -> dict[str, Any]:
    spec = service.spec
    engine = PROFILES[spec.engine.value]
    grpc_port = GRPC_PORT if engine.grpc else 0
    ports = [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    if grpc_port:
        ports.append({"name": "grpc", "containerPort": grpc_port, "protocol": "TCP"})
    mounts = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
        *main.mounts,
        *draft.mounts,
    ]
    if spec.resources.gpus > 0:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
    return {
        "name": "runtime",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(engine.command),
        "args": ["--host", "0.0.0.0", *container_args(service, HTTP_PORT, grpc_port=grpc_port,
                                                        paths=ModelPaths(main.path, draft.path))],
        "ports": ports,
        "env": _engine_env(spec, main),
        "resources": _resources(spec, main, draft),
        **_probes(engine),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _volumes(spec: ModelServiceSpec, main: ModelSource, draft: ModelSource) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}},
        {"name": "cache", "emptyDir": {}},
        *main.volumes,
        *draft.volumes,
    ]
    if spec.resources.gpus > 0:  # NCCL and tensor-parallel workers share memory through /dev/shm
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory",
                                                    "sizeLimit": f"{max(1, 2 * spec.resources.gpus)}Gi"}})
    return volumes


def _scheduling(spec: ModelServiceSpec, region: str, selector: dict[str, str]) -> dict[str, Any]:
    node_selector: dict[str, str] = {}
    if region != DEFAULT_REGION:
        node_selector[TOPOLOGY_LABELS[spec.placement.topology]] = region
    if spec.resources.gpus > 0 and spec.resources.gpu_type:
        node_selector["nvidia.com/gpu.product"] = spec.resources.gpu_type
    spread = [
        {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": dict(selector)}, "matchLabelKeys": ["pod-template-hash"]}
        for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
    ]
    scheduling: dict[str, Any] = {"topologySpreadConstraints": spread}
    if node_selector:
        scheduling["nodeSelector"] = node_selector
    if spec.resources.gpus > 0:
        scheduling["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return scheduling


def _deployment(service: ModelService, region: str, replicas: int, image: str) -> dict[str, Any]:
    spec = service.spec
    name = child_name(service.metadata.name, region)
    selector = pod_selector(service, region)
    labels = {**common_labels(service), REGION_LABEL: region}
    main, draft = _model_sources(spec, image)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # service env vars such as VLLM_PORT confuse engines that read them
        "terminationGracePeriodSeconds": PRESTOP_SECONDS + DRAIN_SECONDS + GRACE_MARGIN_SECONDS,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS_ID, "runAsGroup": RUN_AS_ID, "fsGroup": RUN_AS_ID,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"},
        },
        **_scheduling(spec, region, selector),
        "containers": [_runtime_container(service, image, main, draft)],
        "volumes": _volumes(spec, main, draft),
    }
    init_containers = main.init_containers + draft.init_containers
    if init_containers:
        pod_spec["initContainers"] = init_containers
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(service, name, labels),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": STARTUP_BUDGET_SECONDS,
            "selector": {"matchLabels": selector},
            # Never below the current count during a rollout: capacity is what the SLO is made of.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": {**labels, ROLE_LABEL: SERVING},
                    "annotations": {"kubectl.kubernetes.io/default-container": "runtime"},
                },
                "spec": pod_spec,
            },
        },
    }


# ---------------------------------------------------------------- services, PDB, monitoring


def _service_ports(service: ModelService) -> list[dict[str, Any]]:
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]
    if PROFILES[service.spec.engine.value].grpc:
        ports.append({"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                      "appProtocol": "grpc"})
    return ports


def _service(service: ModelService, name: str, selector: dict[str, str],
             extra_labels: dict[str, str], prefer_close: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP", "selector": selector, "ports": _service_ports(service)}
    if prefer_close:  # same-zone endpoints first, any zone when the client's zone has none ready
        spec["trafficDistribution"] = "PreferClose"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(service, name, {**common_labels(service), **extra_labels}),
        "spec": spec,
    }


def _pdb(service: ModelService, region: str, pods: int) -> dict[str, Any]:
    """At most one pod of the region evicted at a time, and never its only one: with `pods` <= 1 (no warm
    pod, one serving) maxUnavailable is 0, so a drain waits instead of taking the region to zero. Always
    maxUnavailable (never minAvailable): the drift patch is a merge patch, and switching between the two
    would leave both set, which the API server refuses."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(service, child_name(service.metadata.name, region),
                              {**common_labels(service), REGION_LABEL: region}),
        "spec": {
            "maxUnavailable": 0 if pods <= 1 else 1,
            "selector": {"matchLabels": pod_selector(service, region)},
            # A pod that never became ready must not block node drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


INFERENCE_POOL_API = "inference.networking.k8s.io/v1"
HTTP_ROUTE_API = "gateway.networking.k8s.io/v1"


def _inference_pool(service: ModelService, name: str, selector: dict[str, str], picker: str,
                    extra_labels: dict[str, str]) -> dict[str, Any]:
    """An InferencePool over serving pods: the gateway asks `picker` (an endpoint picker Service) which pod
    of the pool takes each request, instead of kube-proxy's random choice."""
    routing = service.spec.routing
    assert routing is not None
    return {
        "apiVersion": INFERENCE_POOL_API,
        "kind": "InferencePool",
        "metadata": _metadata(service, name, {**common_labels(service, "routing"), **extra_labels}),
        "spec": {
            "selector": {"matchLabels": selector},
            "targetPorts": [{"number": HTTP_PORT}],
            "appProtocol": "http",
            "endpointPickerRef": {
                "group": "", "kind": "Service", "name": picker,
                "port": {"number": routing.endpoint_picker.port},
                "failureMode": routing.endpoint_picker.failure_mode.value,
            },
        },
    }


def _http_route(service: ModelService) -> dict[str, Any]:
    """HTTPRoute `<name>`: the Gateways' traffic under the path prefix goes to the InferencePool `<name>`."""
    routing = service.spec.routing
    assert routing is not None and routing.http_route is not None
    route = routing.http_route
    parents = []
    for gateway in route.gateways:
        parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.name}
        if gateway.namespace:
            parent["namespace"] = gateway.namespace
        if gateway.section_name:
            parent["sectionName"] = gateway.section_name
        parents.append(parent)
    spec: dict[str, Any] = {
        "parentRefs": parents,
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": route.path}}],
            "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                             "name": service.metadata.name}],
        }],
    }
    if route.hostnames:
        spec["hostnames"] = list(route.hostnames)
    return {
        "apiVersion": HTTP_ROUTE_API,
        "kind": "HTTPRoute",
        "metadata": _metadata(service, service.metadata.name, common_labels(service, "routing")),
        "spec": spec,
    }


def _routing_objects(service: ModelService, regions: list[str]) -> list[dict[str, Any]]:
    routing = service.spec.routing
    if routing is None:
        return []
    name, picker = service.metadata.name, routing.endpoint_picker.name
    objects = [_inference_pool(service, name, {MODEL_SERVICE_LABEL: name, ROLE_LABEL: SERVING}, picker, {})]
    for region in regions:
        if region != DEFAULT_REGION:
            objects.append(_inference_pool(service, child_name(name, region),
                                           {**pod_selector(service, region), ROLE_LABEL: SERVING},
                                           child_name(picker, region), {REGION_LABEL: region}))
    if routing.http_route is not None:
        objects.append(_http_route(service))
    return objects


POD_MONITOR_RELABELINGS = (
    ("__meta_kubernetes_namespace", "namespace"),
    ("__meta_kubernetes_pod_label_sloserve_io_model_service", "model_service"),
    ("__meta_kubernetes_pod_label_sloserve_io_region", "region"),
    ("__meta_kubernetes_pod_label_sloserve_io_role", "role"),
    ("__meta_kubernetes_pod_name", "pod"),
)


def _monitoring_labels(service: ModelService, extra: dict[str, str] | None) -> dict[str, str]:
    """The operator's labels plus --monitoring-label ones: a Prometheus from kube-prometheus-stack selects
    PodMonitors and PrometheusRules by `release: <its release>`, and picks up nothing without it."""
    return {**(extra or {}), **common_labels(service, "monitoring")}


def _pod_monitor(service: ModelService, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    engine = PROFILES[service.spec.engine.value]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(service, service.metadata.name, _monitoring_labels(service, extra_labels)),
        "spec": {
            "selector": {"matchLabels": {MODEL_SERVICE_LABEL: service.metadata.name}},
            "podMetricsEndpoints": [{
                "port": "http",
                "path": engine.metrics_path,
                "interval": "15s",
                "relabelings": [
                    {"action": "replace", "sourceLabels": [source], "targetLabel": target}
                    for source, target in POD_MONITOR_RELABELINGS
                ],
            }],
        },
    }


def _prometheus_rule(service: ModelService, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule = prometheus_rule(service)
    rule["metadata"] = _metadata(service, rule["metadata"]["name"], _monitoring_labels(service, extra_labels))
    return rule


# ---------------------------------------------------------------- entry point


def _check_regions(spec: ModelServiceSpec, counts: dict[str, int], argument: str) -> None:
    unknown = sorted(set(counts) - set(region_names(spec)))
    if unknown:
        raise ValueError(f"{argument} names regions not in spec.placement.regions: {', '.join(unknown)}")
    negative = sorted(name for name, count in counts.items() if count < 0)
    if negative:
        raise ValueError(f"{argument} has negative counts for: {', '.join(negative)}")


def render_objects(service: ModelService, serving_by_region: dict[str, int], *,
                   warm_by_region: dict[str, int] | None = None, monitoring: bool = True,
                   images: dict[str, str] | None = None,
                   monitoring_labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every object the ModelService needs, for these serving counts (warm default: spec.scaling.warmPool).

    `monitoring_labels` go on the PodMonitor and PrometheusRule (never overriding the operator's own).

    Regions of the spec missing from the counts get 0 serving replicas. Raises ValueError (UnsupportedKnob
    for spec problems) with a message naming the field or argument.
    """
    spec = service.spec
    if warm_by_region is None:
        warm_by_region = split_plain(spec.scaling.warm_pool.size, region_weights(spec))
    _check_regions(spec, serving_by_region, "serving_by_region")
    _check_regions(spec, warm_by_region, "warm_by_region")
    image = engine_image(service, images)
    regions = region_names(spec)
    objects: list[dict[str, Any]] = [
        _deployment(service, region, serving_by_region.get(region, 0) + warm_by_region.get(region, 0), image)
        for region in regions
    ]
    objects.append(_service(service, service.metadata.name,
                            {MODEL_SERVICE_LABEL: service.metadata.name, ROLE_LABEL: SERVING}, {},
                            prefer_close=spec.placement.topology == "zone" and bool(spec.placement.regions)))
    for region in regions:
        if region != DEFAULT_REGION:
            objects.append(_service(service, child_name(service.metadata.name, region),
                                    {**pod_selector(service, region), ROLE_LABEL: SERVING},
                                    {REGION_LABEL: region}))
    objects.extend(_pdb(service, region, serving_by_region.get(region, 0) + warm_by_region.get(region, 0))
                   for region in regions)
    objects.extend(_routing_objects(service, regions))
    if monitoring:
        objects.append(_pod_monitor(service, monitoring_labels))
        objects.append(_prometheus_rule(service, monitoring_labels))
    return objects


def children(service: ModelService, *, monitoring: bool = True) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of everything render_objects produces for the current spec."""
    return [(obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
            for obj in render_objects(service, {}, warm_by_region={}, monitoring=monitoring)]
