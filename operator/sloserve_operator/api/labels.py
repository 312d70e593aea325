"""The label, role and annotation names sloserve writes and selects on, in one place.

They are part of the contract with users and other controllers (selectors, dashboards, PodMonitors, Argo), so
render, reconcile, the actuator, the warm pool, local mode and the simulator all take them from here.
"""

from __future__ import annotations

# Kubernetes recommended labels (app.kubernetes.io/instance is left out on purpose: see render.common_labels).
NAME_LABEL = "app.kubernetes.io/name"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
PART_OF_LABEL = "app.kubernetes.io/part-of"

# sloserve's own labels.
MODEL_SERVICE_LABEL = "sloserve.io/model-service"  # on every rendered child: the ModelService it belongs to
REGION_LABEL = "sloserve.io/region"
ROLE_LABEL = "sloserve.io/role"  # SERVING or WARM; the operator flips it on live pods
ENGINE_LABEL = "sloserve.io/engine"
# Deliberately not MODEL_SERVICE_LABEL: the memory ConfigMap is not a rendered child and must not be pruned as one.
AUTOSCALER_MEMORY_LABEL = "sloserve.io/autoscaler-memory-of"

# A replica's role: serving replicas take traffic, warm ones are loaded and wait to be promoted.
SERVING = "serving"
WARM = "warm"

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SCRAPE_ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics"}
PORT_ANNOTATION = "prometheus.io/port"
FINALIZER = "sloserve.io/finalizer"
# Hash of the rendered pod template, stamped on the template by reconcile: tells the actuator which pods are
# of the Deployment's current revision without reading ReplicaSets (the chart grants no access to them).
TEMPLATE_HASH_ANNOTATION = "sloserve.io/template-hash"
