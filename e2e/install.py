"""Install the chart for the e2e cluster in the two steps docs/operations.md gives: apply manifests/crds.yaml,
`kubectl wait --for=condition=Established` on it (bounded by a timeout), then install.yaml's objects.

One stream fails on a fresh cluster: kubectl maps every object's kind before applying any, and the chart's
KopfPeering records are of a kind whose CRD is in the same stream ("no matches for kind"). The CRD step applies
the file itself; the second step is manifests/install.yaml's objects rendered with the e2e images and values
(at the chart's default values they are the file's objects: tests/kube/test_chart.py checks that).

    python -m e2e.install --apply [--context CTX] [--timeout S]   # what kind.sh and e2e/conftest.py run
    python -m e2e.install --part crds|rest                         # print one part as YAML
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from sloserve_operator.kube import manifests

CRDS_FILE = Path(__file__).resolve().parents[1] / "manifests" / "crds.yaml"

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
    """{"crds": manifests/crds.yaml's objects, "rest": install.yaml's objects for these values (default:
    values())}."""
    crds = [obj for obj in yaml.safe_load_all(CRDS_FILE.read_text()) if obj]
    return {"crds": crds, "rest": manifests.install_objects(values() if chart_values is None else chart_values)}


def as_yaml(objects: list[dict[str, Any]]) -> str:
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)


def apply(kubectl: list[str], chart_values: dict | None = None, timeout: float = 120) -> None:
    """Apply manifests/crds.yaml, wait (at most `timeout` s) until its CRDs are Established, then apply the
    rest (`kubectl`: the command and its global flags). Raises CalledProcessError or TimeoutExpired."""
    rest = as_yaml(parts(chart_values)["rest"])
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(CRDS_FILE)], check=True, timeout=timeout)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
                    "-f", str(CRDS_FILE)], check=True, timeout=timeout + 10)
    subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"], input=rest, text=True, check=True,
                   timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apply", action="store_true", help="apply both parts with kubectl, waiting in between")
    parser.add_argument("--context", default="", help="kubectl context for --apply")
    parser.add_argument("--part", choices=["crds", "rest"], help="print one part")
    parser.add_argument("--timeout", type=float, default=120, help="seconds for each step (default 120)")
    args = parser.parse_args(argv)
    if args.apply:
        apply(["kubectl", *([f"--context={args.context}"] if args.context else [])], timeout=args.timeout)
        return 0
    steps = parts()
    sys.stdout.write(as_yaml(steps[args.part] if args.part else steps["crds"] + steps["rest"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
