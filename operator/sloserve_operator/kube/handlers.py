"""kopf handlers for ModelService: thin wrappers over reconcile.py and autoscale_step.py.

Handlers are registered into a registry by `register(registry, config)` rather than at import time, so the
autoscale interval comes from the command line and tests can run the real operator under
kopf.testing.KopfRunner with their own settings. Handlers are sync: kopf runs them in worker threads, and
the official kubernetes client they use (kube.py) is sync.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from sloserve_operator.api.labels import FINALIZER
from sloserve_operator.api.spec import GROUP, PLURAL, VERSION
from sloserve_operator.autoscaler.observe.observation import Observation
from sloserve_operator.autoscaler.observe.sources import PrometheusSource
from sloserve_operator.kube import operator_metrics
from sloserve_operator.kube.actuator import KubernetesActuator
from sloserve_operator.kube.autoscale_tick import autoscale_once
from sloserve_operator.kube.client import Kube, connection_settings, load_configuration
from sloserve_operator.kube.liveness import HandlerClock
from sloserve_operator.kube.reconcile import KubeEvent, ReconcileOptions, min_ready_seconds_for, reconcile

log = logging.getLogger("sloserve.operator")


@dataclass
class OperatorConfig:
    """Options of `sloserve operator` that the handlers need."""

    prometheus_url: str | None = None  # None: nothing measured, the policy holds (manual sizing still applies)
    autoscale_interval: float = 10.0
    metrics_window: float = 60.0
    drift_interval: float = 60.0
    peering_lifetime: int = 60  # seconds a silent peer stays alive; a standby takes over after this
    wedged_after: float = 300.0  # /healthz fails once a handler has run this long (the kubelet restarts us)
    request_timeout: float = 30.0  # seconds per Kubernetes API call: a hung call must not hold the lock
    images: dict[str, str] = field(default_factory=dict)  # engine -> image override
    monitoring_labels: dict[str, str] = field(default_factory=dict)  # on PodMonitors and PrometheusRules
    kube: Kube | None = None  # built lazily on first use (after kopf has logged in)
    metrics_source: Any = None  # a sources.MetricsSource; default PrometheusSource(prometheus_url)

    def reconcile_options(self) -> ReconcileOptions:
        """The same rendering and actuation for the change handlers, the drift check and the autoscaler."""
        kube = self.client()
        return ReconcileOptions(images=self.images or None, monitoring_labels=self.monitoring_labels or None,
                                actuate=KubernetesActuator(kube).apply,
                                min_ready_seconds=min_ready_seconds_for(self.autoscale_interval))

    def client(self) -> Kube:
        if self.kube is None:
            self.kube = Kube(request_timeout=self.request_timeout)
        return self.kube

    def source(self) -> Any:
        if self.metrics_source is None:
            if self.prometheus_url:
                self.metrics_source = PrometheusSource(self.prometheus_url, window_seconds=self.metrics_window)
            else:
                self.metrics_source = NoMetrics()
        return self.metrics_source


class NoMetrics:
    """The source when no --prometheus-url is given: nothing is measured, so the policy holds; the timer
    still runs to keep pod roles (warm pool promotion) and manual sizing applied."""

    def observe(self, service: Any, now: float) -> Observation:
        return Observation(time=now, problems=("no Prometheus configured (--prometheus-url)",))


def emit(body: kopf.Body | dict[str, Any], events: list[KubeEvent]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def backoff(retry: int) -> float:
    """Seconds before retry number `retry`: 1, 2, 4, ... capped at one minute."""
    return float(min(2 ** retry, 60))


class ObjectLocks:
    """One lock per ModelService: the change handlers, the drift check and the autoscaler all write the
    status (conditions are one list), so they take turns and each starts from a fresh read."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)


def fresh(kube: Kube, body: kopf.Body) -> dict[str, Any] | None:
    """The object as the API server has it now (kopf's body may be one event behind); None once deleted."""
    meta = body["metadata"]
    current = kube.get("ModelService", meta.get("namespace"), meta["name"])
    if current is None or current["metadata"].get("uid") != meta.get("uid"):
        return None
    if current["metadata"].get("deletionTimestamp"):
        return None
    return current


def write(kube: Kube, body: dict[str, Any], status: dict[str, Any]) -> str:
    """Merge-patch the status computed from `body`, only if the object has not changed since it was read
    (metadata.resourceVersion makes the API server answer 409 otherwise: a deletion or a newer spec wins,
    and the next pass starts from a fresh read). Answers "written", "conflict" or "gone"."""
    meta = body["metadata"]
    namespace, name = meta.get("namespace"), meta["name"]
    patch: dict[str, Any] = {"status": status}
    if meta.get("resourceVersion"):
        patch["metadata"] = {"resourceVersion": meta["resourceVersion"]}
    try:
        kube.patch("ModelService", namespace, name, patch, subresource="status")
    except ApiException as error:
        if error.status in (404, 409):
            return "gone" if error.status == 404 else "conflict"
        raise
    return "written"


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> kopf.OperatorRegistry:
    """Add the ModelService handlers to `registry` and return it."""
    resource = (GROUP, VERSION, PLURAL)
    locks = ObjectLocks()
    clock = HandlerClock(config.wedged_after)

    @kopf.on.login(id="login", registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(**connection_settings(load_configuration()))

    @kopf.on.startup(id="configure", registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        settings.peering.lifetime = config.peering_lifetime
        settings.posting.level = logging.WARNING  # our own Events go through kopf.event; skip kopf's chatter
        settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]
        # A deletion waits for a timer tick that is mid-way (sync handlers cannot be cancelled): wait for it
        # directly for a few seconds, then re-check every 2 s rather than kopf's default minute.
        settings.background.instant_exit_timeout = 5.0
        settings.background.cancellation_polling = 2.0
        # Watches that end by themselves: a connection the network silently dropped is re-established
        # within minutes instead of leaving the operator deaf while its health endpoint stays green.
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 15

    @kopf.on.probe(id="handlers", registry=registry)
    def handlers_probe(**_: Any) -> dict[str, Any]:
        return clock.check()  # raises Wedged: kopf answers /healthz with 500

    def run_reconcile(body: kopf.Body, retry: int, trigger: str) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        kube = config.client()
        with clock.running("reconcile"), locks(meta["uid"]):
            current = fresh(kube, body)
            if current is None:
                return
            try:
                result = reconcile(kube, current, now=time.time(), options=config.reconcile_options())
                written = write(kube, current, result.status)
            except Exception:
                operator_metrics.RECONCILES.labels(namespace, name, "error").inc()
                operator_metrics.ERRORS.labels(namespace, name, "internal").inc()
                raise
        emit(body, result.events)
        operator_metrics.RECONCILES.labels(namespace, name, "ok" if result.valid else "invalid").inc()
        if result.transient_error or written == "conflict":
            operator_metrics.ERRORS.labels(namespace, name, "transient").inc()
            why = result.transient_error or "status changed while reconciling"
            raise kopf.TemporaryError(f"{trigger}: {why}", delay=backoff(retry))
        if result.valid and "regions" in result.status:
            operator_metrics.record_replicas(namespace, name, result.status["regions"], result.warm)

    @kopf.on.create(*resource, id="reconcile-on-create", registry=registry)
    def on_create(body: kopf.Body, retry: int, **_: Any) -> None:
        run_reconcile(body, retry, "create")

    @kopf.on.update(*resource, field="spec", id="reconcile-on-update", registry=registry)
    def on_update(body: kopf.Body, retry: int, **_: Any) -> None:
        run_reconcile(body, retry, "update")

    @kopf.on.resume(*resource, id="reconcile-on-resume", registry=registry)
    def on_resume(body: kopf.Body, retry: int, **_: Any) -> None:
        run_reconcile(body, retry, "resume")

    @kopf.timer(*resource, id="drift-check", interval=config.drift_interval,
                initial_delay=config.drift_interval, registry=registry)
    def drift_check(body: kopf.Body, retry: int, **_: Any) -> None:
        run_reconcile(body, retry, "drift check")

    @kopf.on.delete(*resource, id="forget", optional=True, registry=registry)
    def on_delete(body: kopf.Body, **_: Any) -> None:
        operator_metrics.forget(body["metadata"].get("namespace", "default"), body["metadata"]["name"])
        locks.forget(body["metadata"]["uid"])

    @kopf.timer(*resource, id="autoscale", interval=config.autoscale_interval,
                initial_delay=config.autoscale_interval, registry=registry)
    def autoscale(body: kopf.Body, **_: Any) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        kube = config.client()
        with clock.running("autoscale"), locks(meta["uid"]):
            current = fresh(kube, body)
            if current is None:
                return
            try:
                # Persists the decision (memory ConfigMap, resourceVersion precondition) before it acts;
                # a lost race acts on nothing and is retried on the next tick.
                tick = autoscale_once(kube, config.source(), current, time.time(), config.reconcile_options())
                if tick is None:
                    return  # invalid spec: reconcile has said so in status
                if tick.status is None:
                    operator_metrics.ERRORS.labels(namespace, name, "transient").inc()
                    log.info("autoscale %s/%s: decision not persisted (%s); not acting", namespace, name,
                             tick.persisted)
                    return
                write(kube, current, tick.status)
            except Exception:
                operator_metrics.ERRORS.labels(namespace, name, "autoscale").inc()
                raise
        emit(body, tick.events)
        operator_metrics.DECISIONS.labels(namespace, name, tick.direction, str(tick.metrics_available).lower()).inc()
        operator_metrics.record_replicas(namespace, name, tick.status["regions"], tick.warm)
        if tick.spec is not None:
            slo = tick.spec.slo
            operator_metrics.record_slo(namespace, name, slo.ttft.p95_seconds, slo.itl.p95_seconds, slo.objective_fraction)
        for region, observed in (tick.observation.regions.items() if tick.observation else ()):
            operator_metrics.record_observed(namespace, name, region, observed.ttft_p95, observed.itl_p95)
        if tick.actuation:
            for region in tick.actuation.promoted.values():
                operator_metrics.PROMOTIONS.labels(namespace, name, region).inc()

    without_finalizer(registry, {"drift-check", "autoscale"})
    return registry


def without_finalizer(registry: kopf.OperatorRegistry, handler_ids: set[str]) -> None:
    """kopf puts a finalizer on every object a timer runs for, so that it can stop the timer before the object
    goes. Ours re-read the object first and do nothing once it is gone, and children go by owner references,
    so they need none; a finalizer would outlive an uninstalled operator and hang `kubectl delete msvc` and
    namespace deletion. kopf has no public switch for timers, hence the replaced handler entries; with no
    handler requiring it, kopf also removes the finalizer an older version put on existing objects."""
    spawning = registry._spawning  # noqa: SLF001 - see the docstring
    spawning._handlers = [  # noqa: SLF001
        dataclasses.replace(handler, requires_finalizer=False) if handler.id in handler_ids else handler
        for handler in spawning._handlers  # noqa: SLF001
    ]
