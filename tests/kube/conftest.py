"""Fixtures for the operator tests: a kmock API server and the real operator under KopfRunner."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kmock_cluster import KmockCluster  # noqa: E402
from operator_harness import OperatorUnderTest  # noqa: E402


@pytest.fixture(scope="module")
def operator_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., OperatorUnderTest]]:
    """Start kmock and the real operator (kopf.testing.KopfRunner) with the given options; stop both."""
    import kopf
    from kopf.testing import KopfRunner
    from sloserve_operator.kube.client import Kube
    from sloserve_operator.kube.handlers import OperatorConfig, register

    stack: list[Any] = []
    patcher = pytest.MonkeyPatch()

    def start(*, monitoring: bool = False, drift_interval: float = 1.0, autoscale_interval: float = 0.5,
              setup: Callable[[KmockCluster], None] | None = None, source: Any = None) -> OperatorUnderTest:
        cluster = KmockCluster(tmp_path_factory.mktemp("kmock"), monitoring=monitoring).__enter__()
        stack.append(cluster)
        if setup is not None:
            cluster.call(lambda: setup(cluster))
        patcher.setenv("KUBECONFIG", str(cluster.kubeconfig))
        config = OperatorConfig(autoscale_interval=autoscale_interval, drift_interval=drift_interval,
                                metrics_source=source)
        registry = register(kopf.OperatorRegistry(), config)
        settings = kopf.OperatorSettings()
        runner = KopfRunner(["run", "--standalone", "--all-namespaces"], registry=registry, settings=settings,
                            timeout=30)
        runner.__enter__()
        stack.append(runner)
        return OperatorUnderTest(cluster, Kube())

    yield start
    for item in reversed(stack):
        item.__exit__(None, None, None)
    patcher.undo()
