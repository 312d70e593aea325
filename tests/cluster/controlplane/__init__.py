"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Built from the Go module proxy by build.sh (cached in .cache/controlplane/bin), run on 127.0.0.1 only,
with RBAC authorization and a static admin token; every process is stopped by its PID."""

from .processes import ControlPlane, build_binaries

__all__ = ["ControlPlane", "build_binaries"]
