"""The e2e install (e2e/install.py) on a fresh API server: the chart as one `kubectl apply` stream fails
there (kubectl maps every kind before applying, and the KopfPeering CRD is in the same stream); CRDs first,
`kubectl wait --for=condition=Established`, then the rest installs. The same holds for the plain manifests
(manifests/crds.yaml, then manifests/install.yaml), applied as README and docs/operations.md say."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from cluster_harness import ROOT_DIR, api_client
from controlplane import ControlPlane, build_binaries
from kubernetes import client

sys.path.insert(0, str(ROOT_DIR))
from e2e import install  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")


def assert_installed(plane: ControlPlane) -> None:
    """The install's custom resource (the KopfPeering) and the operator's Deployment exist."""
    api = api_client(plane.admin_kubeconfig)
    peerings = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "kopf.dev", "v1", "default", "kopfpeerings")["items"]
    assert [p["metadata"]["name"] for p in peerings] == ["sloserve"]
    deployments = client.AppsV1Api(api).list_namespaced_deployment("sloserve-system").items
    assert [d.metadata.name for d in deployments] == ["sloserve"]


def test_crds_then_wait_then_the_rest_installs_on_a_fresh_cluster(tmp_path):
    plane = ControlPlane(tmp_path / "fresh", build_binaries())
    try:
        plane.start(timeout=120)
        kubectl = ["kubectl", f"--kubeconfig={plane.admin_kubeconfig}"]
        steps = install.parts()
        one_stream = subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"], text=True,
                                    input=install.as_yaml(steps["crds"] + steps["rest"]), capture_output=True,
                                    timeout=120)
        assert one_stream.returncode != 0 and "KopfPeering" in one_stream.stderr, one_stream.stderr

        install.apply(kubectl)
        assert_installed(plane)
    finally:
        plane.stop()


def test_plain_manifests_install_in_two_commands_on_a_fresh_cluster(tmp_path):
    plane = ControlPlane(tmp_path / "fresh", build_binaries())
    try:
        plane.start(timeout=120)
        kubectl = ["kubectl", f"--kubeconfig={plane.admin_kubeconfig}"]
        crds, rest = ROOT_DIR / "manifests" / "crds.yaml", ROOT_DIR / "manifests" / "install.yaml"
        for command in (["apply", "--server-side", "-f", str(crds)],
                        ["wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds)],
                        ["apply", "--server-side", "-f", str(rest)]):
            done = subprocess.run([*kubectl, *command], text=True, capture_output=True, timeout=120)
            assert done.returncode == 0, (command, done.stderr)
        assert_installed(plane)
    finally:
        plane.stop()
