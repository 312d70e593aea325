"""Install the chart, rendered for the e2e cluster, in two steps: CRDs (and the Namespace), wait until the
API server reports them Established, then everything else.

One stream fails on a fresh cluster: kubectl maps every object's kind before applying any, and the chart's
KopfPeering records are of a kind whose CRD is in the same stream ("no matches for kind").

    python -m e2e.install --apply [--context CTX]    # what kind.sh and e2e/conftest.py run
    python -m e2e.install --part crds|rest            # print one part as YAML
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

import yaml
from sloserve_operator.kube import manifests

E2E_VALUES = {
    "image": {"repository": "sloserve/operator", "tag": "e2e", "pullPolicy": "Never"},
    "runtimeImage": "sloserve/runtime:e2e",
    "autoscaler": {"prometheusUrl": "http://prometheus.monitoring.svc:9090", "interval": 5, "window": 30,
                   "driftInterval": 30},
    "logFormat": "plain",
    "replicaCount": 2,  # active/standby: the suite checks that exactly one replica pauses
    "watchNamespaces": ["default"],  # the quickstart's namespace (the chart's default scope)
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


def parts(chart_values: dict | None = None) -> dict[str, list[dict[str, Any]]]:
    """{"crds": Namespace + CRDs, "rest": the templates} for these values (default: values())."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": manifests.NAMESPACE}}
    return {"crds": [namespace, *manifests.crds_of()],
            "rest": manifests.render_chart(values() if chart_values is None else chart_values)}


def as_yaml(objects: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)


def apply(kubectl: list[str], chart_values: dict | None = None, timeout: float = 120) -> None:
    """CRDs, `kubectl wait` for Established, then the rest (`kubectl`: the command and its global flags)."""
    steps = parts(chart_values)
    subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"], input=as_yaml(steps["crds"]), text=True,
                   check=True, timeout=timeout)
    names = [f"crd/{obj['metadata']['name']}" for obj in steps["crds"] if obj["kind"] == "CustomResourceDefinition"]
    subprocess.run([*kubectl, "wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *names],
                   check=True, timeout=timeout + 10)
    subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"], input=as_yaml(steps["rest"]), text=True,
                   check=True, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apply", action="store_true", help="apply both parts with kubectl, waiting in between")
    parser.add_argument("--context", default="", help="kubectl context for --apply")
    parser.add_argument("--part", choices=["crds", "rest"], help="print one part")
    args = parser.parse_args(argv)
    if args.apply:
        apply(["kubectl", *([f"--context={args.context}"] if args.context else [])])
        return 0
    steps = parts()
    sys.stdout.write(as_yaml(steps[args.part] if args.part else steps["crds"] + steps["rest"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
