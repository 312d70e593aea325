"""Fixtures for the control-plane tests: the cluster (one per session), fake nodes and kubelet, the
chart's RBAC and CRDs, and the real operator run as the chart's ServiceAccount."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cluster_harness import (  # noqa: E402
    INSTALLED_KINDS,
    ROOT_DIR,
    Cluster,
    api_client,
    apply,
    ensure_namespace,
    load_yaml,
    service_account_token,
    wait_for,
)
from controlplane import ControlPlane, build_binaries  # noqa: E402
from fake_kubelet import FakeKubelet, create_node  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402

# Nodes in one region only: pods placed in any other region stay Pending (tests/cluster/test_regions.py).
NODES = [("node-a", "us-east-1", "us-east-1a"), ("node-b", "us-east-1", "us-east-1b")]
OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "sloserve-system", "sloserve"
# Every test makes its own namespace, so the operator watches all of them (the chart's default is a Role
# per listed namespace; tests/cluster/test_rbac.py runs that mode too).
CHART_VALUES = {"watchAllNamespaces": True}


def chart_objects(values: dict | None = None) -> list[dict]:
    """The chart as install.yaml lays it out (Namespace, CRDs, templates) for these values."""
    from sloserve_operator.kube import manifests

    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    return [namespace, *manifests.crds_of(), *manifests.render_chart(values or CHART_VALUES)]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + controller-manager + scheduler, fake nodes and kubelet, chart installed."""
    bin_dir = build_binaries()
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), bin_dir)
    kubelet = None
    try:
        plane.start(timeout=120)
        api = api_client(plane.admin_kubeconfig)
        for index, (name, region, zone) in enumerate(NODES):
            create_node(api, name, region=region, zone=zone, ip=f"192.0.2.{index + 1}")
        kubelet = FakeKubelet(api_client(plane.admin_kubeconfig)).start()
        # The chart's objects, except its copy of the ModelService CRD: the generated one in crds/ is applied.
        install = [doc for doc in chart_objects()
                   if doc["kind"] in INSTALLED_KINDS and doc["kind"] != "ClusterKopfPeering"
                   and doc["metadata"]["name"] != "modelservices.sloserve.io"]
        apply(api, install)
        apply(api, load_yaml(Path(os.environ.get("SLOSERVE_TEST_CRD", ROOT_DIR / "crds" / "modelservices.sloserve.io.yaml"))))
        wait_for(lambda: _crds_established(api), timeout=30, what="CRDs Established")
        apply(api, [doc for doc in chart_objects() if doc["kind"] == "ClusterKopfPeering"])
        plane.kubelet = kubelet
        yield plane
    finally:
        if kubelet is not None:
            kubelet.stop()
        plane.stop()


def _crds_established(api) -> bool:
    from kubernetes import client

    crds = client.ApiextensionsV1Api(api).list_custom_resource_definition().items
    names = {c.metadata.name for c in crds if any(
        cond.type == "Established" and cond.status == "True" for cond in c.status.conditions or [])}
    return {"modelservices.sloserve.io", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= names


@pytest.fixture
def startup_seconds(control_plane: ControlPlane) -> Iterator[Callable[[float], None]]:
    """Make new pods take this long to become Ready (the model load); back to instant afterwards."""
    def set_delay(seconds: float) -> None:
        control_plane.kubelet.startup_seconds = seconds

    yield set_delay
    control_plane.kubelet.startup_seconds = 0.0


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> Cluster:
    return Cluster(api_client(control_plane.admin_kubeconfig))


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: ControlPlane, cluster: Cluster) -> Path:
    """A kubeconfig holding a bound token of the chart's ServiceAccount: RBAC is the chart's, nothing more."""
    token = service_account_token(cluster.api, OPERATOR_ACCOUNT, OPERATOR_NAMESPACE)
    return control_plane.write_kubeconfig(control_plane.workdir / "operator.kubeconfig", token,
                                          user="system:serviceaccount:sloserve-system:sloserve")


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its objects go with it)."""
    name = f"t-{request.node.name[5:25].replace('_', '-').strip('-').lower()}-{uuid.uuid4().hex[:5]}"
    ensure_namespace(cluster.api, name)
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture(scope="module")
def operator_factory(operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Callable[..., OperatorProcess]]:
    """Start `sloserve operator` replicas (default: fast drift and autoscale intervals); stop all at the end."""
    started: list[OperatorProcess] = []
    workdir = tmp_path_factory.mktemp("operator")

    def start(*args: str, name: str = "operator", env: dict[str, str] | None = None) -> OperatorProcess:
        args = args or ("--all-namespaces", "--drift-interval=2", "--autoscale-interval=2")
        process = OperatorProcess(operator_kubeconfig, workdir, f"{name}-{len(started)}", *args, env=env)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def operator(operator_factory: Callable[..., OperatorProcess]) -> OperatorProcess:
    """One operator replica for the module's tests."""
    return operator_factory()
