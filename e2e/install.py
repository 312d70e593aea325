"""Print the chart, rendered for the e2e cluster, as one YAML stream (`python -m e2e.install | kubectl apply`)."""

from __future__ import annotations

import os
import sys

import yaml
from sloserve_operator.kube import manifests

E2E_VALUES = {
    "image": {"repository": "sloserve/operator", "tag": "e2e", "pullPolicy": "Never"},
    "runtimeImage": "sloserve/runtime:e2e",
    "autoscaler": {"prometheusUrl": "http://prometheus.monitoring.svc:9090", "interval": 5, "window": 30,
                   "driftInterval": 30},
    "logFormat": "plain",
    "replicaCount": 2,  # active/standby: the suite checks that exactly one replica pauses
}


def values() -> dict:
    """E2E_VALUES, with the images overridable for clusters that pull from a registry
    (E2E_OPERATOR_IMAGE=repo:tag, E2E_RUNTIME_IMAGE=repo:tag)."""
    result = {**E2E_VALUES}
    if os.environ.get("E2E_OPERATOR_IMAGE"):
        repository, _, tag = os.environ["E2E_OPERATOR_IMAGE"].rpartition(":")
        result["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    if os.environ.get("E2E_RUNTIME_IMAGE"):
        result["runtimeImage"] = os.environ["E2E_RUNTIME_IMAGE"]
    return result


def main() -> int:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": manifests.NAMESPACE}}
    objects = [namespace, *manifests.crds_of(), *manifests.render_chart(values())]
    sys.stdout.write("".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
