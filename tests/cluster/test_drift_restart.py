"""Drift, restarts and leader election with real processes: a child edited by hand is put back; an operator
killed with SIGKILL and started again converges without duplicates; of two replicas only one acts."""

from __future__ import annotations

import json
import re

from cluster_harness import wait_for
from kubernetes.client.rest import ApiException
from quickstart_spec import QUICKSTART_SPEC

# A short peering lifetime: a SIGKILLed replica's record counts as alive for this long.
ARGS = ("--all-namespaces", "--drift-interval=2", "--autoscale-interval=2", "--peering-lifetime=5")
MANUAL = {**QUICKSTART_SPEC, "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 4,
                                         "warmPool": {"size": 0}}, "replicas": 1}


def _image(cluster, namespace: str) -> str:
    return cluster.apps.read_namespaced_deployment("chat", namespace).spec.template.spec.containers[0].image


def _service_ports(cluster, namespace: str):
    try:
        return [p.port for p in cluster.core.read_namespaced_service("chat", namespace).spec.ports]
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_hand_edits_are_put_back(cluster, namespace, operator_factory):
    operator = operator_factory(*ARGS)
    try:
        cluster.create_msvc("chat", namespace, MANUAL)
        original = wait_for(lambda: _image_or_none(cluster, namespace), timeout=60, what="Deployment chat", explain=lambda: cluster.describe(namespace))
        ports = wait_for(lambda: _service_ports(cluster, namespace), timeout=30, what="Service chat", explain=lambda: cluster.describe(namespace))

        cluster.apps.patch_namespaced_deployment("chat", namespace, {"spec": {"template": {"spec": {
            "containers": [{"name": "runtime", "image": "example.invalid/hand-edited:1"}]}}}})
        cluster.core.delete_namespaced_service("chat", namespace)
        wait_for(lambda: _image(cluster, namespace) == original, timeout=30, what="image put back", explain=lambda: cluster.describe(namespace))
        wait_for(lambda: _service_ports(cluster, namespace) == ports, timeout=30, what="Service recreated", explain=lambda: cluster.describe(namespace))
    finally:
        operator.stop()


def _image_or_none(cluster, namespace: str):
    try:
        return _image(cluster, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_killed_operator_restarts_and_converges_without_duplicates(cluster, namespace, operator_factory):
    first = operator_factory(*ARGS)
    cluster.create_msvc("chat", namespace, MANUAL)
    wait_for(lambda: len(cluster.ready_pods(namespace, "sloserve.io/model-service=chat")) == 1, timeout=60,
             what="1 ready pod", explain=lambda: cluster.describe(namespace))
    first.kill()

    # Changed while no operator runs; the next one must pick it up on resume.
    cluster.patch_msvc("chat", namespace, {"spec": {"replicas": 3}})
    second = operator_factory(*ARGS)
    try:
        wait_for(lambda: len(cluster.ready_pods(namespace, "sloserve.io/model-service=chat")) == 3, timeout=90,
                 what="3 ready pods after the restart", explain=lambda: cluster.describe(namespace))
        wait_for(lambda: (cluster.msvc("chat", namespace).get("status") or {}).get("serving") == 3, timeout=30,
                 what="status serving=3", explain=lambda: cluster.describe(namespace))
        assert [d.metadata.name for d in cluster.deployments(namespace)] == ["chat"]
        services = cluster.core.list_namespaced_service(namespace).items
        assert [s.metadata.name for s in services] == ["chat"]
        pdbs = cluster.policy.list_namespaced_pod_disruption_budget(namespace).items
        assert [p.metadata.name for p in pdbs] == ["chat"]
        replica_sets = [rs for rs in cluster.apps.list_namespaced_replica_set(namespace).items if rs.spec.replicas]
        assert len(replica_sets) == 1
        assert len(cluster.live_pods(namespace, "sloserve.io/model-service=chat")) == 3
    finally:
        second.stop()


HANDLED = re.compile(r"Handler 'reconcile-on-(create|update|resume)[^']*' succeeded")
# JSON logs name the object each line is about (plain ones do not), so only this test's namespace counts.
PEERING_ARGS = (*ARGS, "--log-format=json")


def test_two_replicas_only_one_acts(cluster, namespace, operator_factory):
    # Start from a peering record without the replicas earlier tests SIGKILLed (they count as alive, at any
    # priority, for the lifetime). Priorities are fixed so that the second replica outranks the running first
    # one: the first then logs its pause (a replica paused from its own start logs nothing).
    _forget_peers(cluster)
    standby = operator_factory(*PEERING_ARGS, "--priority=10", name="standby")
    wait_for(lambda: "Resuming operations" in standby.log(), timeout=90, what="the first replica running")
    active = operator_factory(*PEERING_ARGS, "--priority=20", name="active")
    try:
        wait_for(lambda: "Pausing operations in favour of" in standby.log(), timeout=90,
                 what="the first replica paused for the second",
                 explain=lambda: f"first: {standby.log()[-2000:]}\nsecond: {active.log()[-2000:]}")
        cluster.create_msvc("chat", namespace, MANUAL)
        wait_for(lambda: _handled(active, namespace), timeout=60, what="the active replica reconciled", explain=lambda: cluster.describe(namespace))
        assert not _handled(standby, namespace), standby.log()[-2000:]

        # The active one dies: after the peering lifetime the standby takes over and reconciles.
        active.kill()
        cluster.patch_msvc("chat", namespace, {"spec": {"replicas": 2}})
        wait_for(lambda: len(cluster.ready_pods(namespace, "sloserve.io/model-service=chat")) == 2, timeout=90,
                 what="the standby took over and scaled to 2", explain=lambda: cluster.describe(namespace))
        # Its handler logs once it returns, which can be after the pods it asked for are Ready.
        wait_for(lambda: _handled(standby, namespace), timeout=30, what="the standby's reconcile logged")
    finally:
        standby.stop()
        active.stop()


def _forget_peers(cluster, name: str = "sloserve") -> None:
    peering = cluster.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
    peers = peering.get("status") or {}
    if peers:
        cluster.custom.patch_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name,
                                                   {"status": {peer: None for peer in peers}})


def _handled(process, namespace: str) -> bool:
    """A reconcile handler succeeded for an object in this namespace (earlier tests' objects may linger)."""
    for line in process.log().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if HANDLED.search(record.get("message", "")) and (record.get("object") or {}).get("namespace") == namespace:
            return True
    return False
