"""`make manifests`: the files derived from the Helm chart and the dashboard, rendered offline.

Writes (or, with --check, verifies that these are up to date):
- charts/sloserve/dashboards/sloserve.json             the Grafana dashboard (dashboard.py)
- manifests/grafana-dashboard.json                     the same dashboard, for importing by hand
- manifests/crds.yaml                                  the CRDs alone (applied first, then waited for)
- manifests/install.yaml                               the chart rendered with default values into the
                                                       namespace sloserve-system, Namespace first, no CRD

Two files because one stream fails on a fresh cluster: kubectl maps every object's kind before applying
any, and the chart's KopfPeering records are of a kind whose CRD would be in the same stream.

The chart's crds/modelservices.sloserve.io.yaml is a symlink to crds/ (generated from api.py by `make crds`;
Helm reads the linked file), so only crds.yaml needs re-rendering after a CRD change.
Helm runs in-process (helm-python-sdk, Helm v4's Go SDK through its C ABI): no helm binary is needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from sloserve_operator.kube.dashboard import dashboard_json

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "sloserve"
NAMESPACE = "sloserve-system"
RELEASE = "sloserve"
# Install order, as Helm applies kinds (CRDs and namespaces before what lives in them).
KIND_ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
              "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap", "NetworkPolicy", "Service", "ClusterKopfPeering", "KopfPeering", "Deployment"]


def render_chart(values: dict[str, Any] | None = None, *, chart: Path = CHART, namespace: str = NAMESPACE,
                 release: str = RELEASE) -> list[dict[str, Any]]:
    """The chart's objects for `values` (templates only, in install order; CRDs are in crds_of)."""
    import helm_python as helm

    loaded = helm.Chart.load(chart)
    try:
        rendered = loaded.render(values or {}, name=release, namespace=namespace, is_install=True)
    finally:
        loaded.close()
    objects = [obj for path, text in sorted(rendered.items()) if not path.endswith("NOTES.txt")
               for obj in yaml.safe_load_all(text) if obj]
    return sorted(objects, key=lambda obj: KIND_ORDER.index(obj["kind"]) if obj["kind"] in KIND_ORDER
                  else len(KIND_ORDER))


def crds_of(chart: Path = CHART) -> list[dict[str, Any]]:
    return [obj for path in sorted((chart / "crds").glob("*.yaml"))
            for obj in yaml.safe_load_all(path.read_text()) if obj]


def _as_yaml(header: str, objects: list[dict[str, Any]]) -> str:
    return header + "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)


def _is_crd(obj: dict[str, Any]) -> bool:
    return obj["kind"] == "CustomResourceDefinition"


def crd_objects(chart: Path = CHART) -> list[dict[str, Any]]:
    """Every CRD the install needs (the chart's crds/ and any a template renders): crds.yaml's objects."""
    return [*crds_of(chart), *(obj for obj in render_chart(chart=chart) if _is_crd(obj))]


def install_objects(values: dict[str, Any] | None = None, chart: Path = CHART) -> list[dict[str, Any]]:
    """The Namespace and the chart's templates for `values`, no CRD: install.yaml's objects at the
    default values (e2e/install.py renders them with its own images)."""
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": NAMESPACE, "labels": {
                     "pod-security.kubernetes.io/enforce": "restricted",
                     "app.kubernetes.io/part-of": "sloserve"}}}
    return [namespace, *(obj for obj in render_chart(values, chart=chart) if not _is_crd(obj))]


def crds_yaml(chart: Path = CHART) -> str:
    """manifests/crds.yaml: crd_objects with a header saying how to apply them."""
    objects = crd_objects(chart)
    header = ("# sloserve CRDs: rendered from charts/sloserve by `make manifests` (do not edit). Apply before\n"
              "# install.yaml: kubectl apply --server-side -f manifests/crds.yaml && kubectl wait\n"
              "#   --for=condition=Established -f manifests/crds.yaml\n")
    return _as_yaml(header, objects)


def install_yaml(chart: Path = CHART) -> str:
    """manifests/install.yaml: install_objects at the default values (no CRD: those are in crds.yaml)."""
    objects = install_objects(chart=chart)
    header = ("# sloserve operator: rendered from charts/sloserve by `make manifests` (do not edit).\n"
              "# After manifests/crds.yaml is Established: kubectl apply --server-side -f manifests/install.yaml\n")
    return _as_yaml(header, objects)


def expected_files(root: Path = ROOT) -> dict[Path, str]:
    """The dashboard files and the content they must have (install.yaml is rendered after them, from the
    chart that embeds the dashboard)."""
    chart = root / "charts" / "sloserve"
    dashboard = dashboard_json()
    files = {
        chart / "dashboards" / "sloserve.json": dashboard,
        root / "manifests" / "grafana-dashboard.json": dashboard,
    }
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sloserve_operator.kube.manifests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 listing files that are out of date")
    args = parser.parse_args(argv)
    files = expected_files()
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if not args.check:
        for path in stale:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[path])
    for name, render in (("crds.yaml", crds_yaml), ("install.yaml", install_yaml)):
        path, text = ROOT / "manifests" / name, render()
        if not path.exists() or path.read_text() != text:
            stale.append(path)
            if not args.check:
                path.write_text(text)
    if args.check and stale:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run `make manifests`", file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
