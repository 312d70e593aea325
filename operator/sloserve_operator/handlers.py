"""kopf handlers for ModelService: thin wrappers over reconcile.py and autoscale_step.py.

Handlers are registered into a registry by `register(registry, config)` rather than at import time, so the
autoscale interval comes from the command line and tests can run the real operator under
kopf.testing.KopfRunner with their own settings. Handlers are sync: kopf runs them in worker threads, and
the official kubernetes client they use (kube.py) is sync.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from . import operator_metrics as metrics
from .api import GROUP, PLURAL, VERSION
from .autoscale_step import autoscale_once, memory_patch
from .kube import Kube
from .observation import Observation
from .reconcile import Event, reconcile

log = logging.getLogger("sloserve.operator")


@dataclass
class OperatorConfig:
    """Options of `sloserve operator` that the handlers need."""

    prometheus_url: str | None = None  # None: nothing measured, the policy holds (manual sizing still applies)
    autoscale_interval: float = 10.0
    metrics_window: float = 60.0
    drift_interval: float = 60.0
    images: dict[str, str] = field(default_factory=dict)  # engine -> image override
    kube: Kube | None = None  # built lazily on first use (after kopf has logged in)
    metrics_source: Any = None  # a metrics.MetricsSource; default PrometheusSource(prometheus_url)

    def client(self) -> Kube:
        if self.kube is None:
            self.kube = Kube()
        return self.kube

    def source(self) -> Any:
        if self.metrics_source is None:
            if self.prometheus_url:
                from .metrics import PrometheusSource

                self.metrics_source = PrometheusSource(self.prometheus_url, window_seconds=self.metrics_window)
            else:
                self.metrics_source = NoMetrics()
        return self.metrics_source


class NoMetrics:
    """The source when no --prometheus-url is given: nothing is measured, so the policy holds; the timer
    still runs to keep pod roles (warm pool promotion) and manual sizing applied."""

    def observe(self, service: Any, now: float) -> Observation:
        return Observation(time=now, problems=("no Prometheus configured (--prometheus-url)",))


def emit(body: kopf.Body | dict[str, Any], events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def write_status(patch: kopf.Patch, status: dict[str, Any]) -> None:
    for key, value in status.items():
        patch.status[key] = value


def backoff(retry: int) -> float:
    """Seconds before retry number `retry`: 1, 2, 4, ... capped at one minute."""
    return float(min(2 ** retry, 60))


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> kopf.OperatorRegistry:
    """Add the ModelService handlers to `registry` and return it."""
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = "sloserve.io/finalizer"
        settings.posting.level = logging.WARNING  # our own Events go through kopf.event; skip kopf's chatter
        settings.batching.error_delays = [1, 2, 5, 10, 30, 60]

    def run_reconcile(body: kopf.Body, patch: kopf.Patch, retry: int, trigger: str) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        try:
            result = reconcile(config.client(), dict(body), now=time.time(), images=config.images or None)
        except Exception:
            metrics.RECONCILES.labels(namespace, name, "error").inc()
            metrics.ERRORS.labels(namespace, name, "internal").inc()
            raise
        emit(body, result.events)
        write_status(patch, result.status)
        metrics.RECONCILES.labels(namespace, name, "ok" if result.valid else "invalid").inc()
        if result.transient_error:
            metrics.ERRORS.labels(namespace, name, "transient").inc()
            raise kopf.TemporaryError(f"{trigger}: {result.transient_error}", delay=backoff(retry))
        if result.valid and "regions" in result.status:
            metrics.record_replicas(namespace, name, result.status["regions"], {})

    @kopf.on.create(*resource, registry=registry)
    def on_create(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        run_reconcile(body, patch, retry, "create")

    @kopf.on.update(*resource, field="spec", registry=registry)
    def on_update(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        run_reconcile(body, patch, retry, "update")

    @kopf.on.resume(*resource, registry=registry)
    def on_resume(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        run_reconcile(body, patch, retry, "resume")

    @kopf.timer(*resource, interval=config.drift_interval, initial_delay=config.drift_interval,
                registry=registry)
    def drift_check(body: kopf.Body, patch: kopf.Patch, retry: int, **_: Any) -> None:
        run_reconcile(body, patch, retry, "drift check")

    @kopf.on.delete(*resource, optional=True, registry=registry)
    def on_delete(body: kopf.Body, **_: Any) -> None:
        metrics.forget(body["metadata"].get("namespace", "default"), body["metadata"]["name"])

    @kopf.timer(*resource, interval=config.autoscale_interval, initial_delay=config.autoscale_interval,
                registry=registry)
    def autoscale(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        meta = body["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        try:
            tick = autoscale_once(config.client(), config.source(), dict(body), time.time())
        except Exception:
            metrics.ERRORS.labels(namespace, name, "autoscale").inc()
            raise
        if tick is None:
            return  # invalid spec: reconcile has said so in status
        emit(body, tick.events)
        write_status(patch, tick.status)
        annotation = memory_patch(tick.memory)["metadata"]["annotations"]
        for key, value in annotation.items():
            if (meta.get("annotations") or {}).get(key) != value:
                patch.metadata.annotations[key] = value
        metrics.DECISIONS.labels(namespace, name, tick.direction, str(tick.metrics_available).lower()).inc()
        metrics.record_replicas(namespace, name, tick.status["regions"], tick.warm)
        for region, observed in (tick.observation.regions.items() if tick.observation else ()):
            metrics.record_observed(namespace, name, region, observed.ttft_p95, observed.itl_p95)
        if tick.actuation:
            for pod in tick.actuation.promoted:
                metrics.PROMOTIONS.labels(namespace, name, _region_of(tick, pod)).inc()

    return registry


def _region_of(tick: Any, pod: str) -> str:
    regions = list(tick.serving)
    return regions[0] if len(regions) == 1 else next((r for r in regions if f"-{r}-" in pod), "unknown")
