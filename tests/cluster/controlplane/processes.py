"""Start and stop the control plane's four processes.

Why not envtest's binaries: nothing may be downloaded from a download site here, so build.sh compiles them
from the Go module proxy. Why the controllers and the scheduler: the operator's behaviour on a real cluster
(ReplicaSets, garbage collection, EndpointSlices, Pending pods) comes from them, which kmock cannot show.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
DEFAULT_BIN = REPO / ".cache" / "controlplane" / "bin"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

# Controllers a cluster without kubelets must not run: node lifecycle would taint every fake node
# not-ready (no heartbeats) and evict the pods; the rest need a cloud or node CIDRs.
CONTROLLERS = "*,-node-lifecycle-controller,-node-ipam-controller,-cloud-node-lifecycle-controller,-service-lb-controller,-node-route-controller"


def build_binaries(bin_dir: Path = DEFAULT_BIN, timeout: float = 3600) -> Path:
    """Run build.sh (a no-op when the binaries are cached) and return the folder holding them."""
    subprocess.run(["bash", str(HERE / "build.sh"), str(bin_dir)], check=True, timeout=timeout)
    return bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass
class ControlPlane:
    """The four processes, their files under `workdir`, and the admin identity tests use."""

    workdir: Path
    bin_dir: Path = DEFAULT_BIN
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    api_port: int = 0
    kubelet: Any = None  # the test harness's FakeKubelet, set by the fixture that starts it

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pki" / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    # -- start -------------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> ControlPlane:
        """Start etcd, the apiserver, then the controllers and scheduler; return once /readyz answers."""
        deadline = time.monotonic() + timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        self._make_pki()
        etcd_url = self._start_etcd()
        self._start_apiserver(etcd_url)
        self._wait_ready(deadline)
        self.write_kubeconfig(self.admin_kubeconfig, self.admin_token, user="admin")
        kubeconfig = str(self.admin_kubeconfig)
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--controllers={CONTROLLERS}",
            f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            f"--cluster-signing-cert-file={self.ca_file}",
            f"--cluster-signing-key-file={self.workdir / 'pki' / 'ca.key'}",
            "--use-service-account-credentials=false",
            # Seconds, not the production minutes: tests watch GC and ReplicaSets converge.
            "--concurrent-gc-syncs=5",
            "--v=1",
        ])
        self._spawn("kube-scheduler", [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--v=1",
        ])
        time.sleep(0.5)
        self._check_alive()
        return self

    def _make_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        if (pki / "apiserver.crt").exists():
            return
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sloserve-test-ca",
                 "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
                 "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"))
        (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n")
        _openssl("x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"),
                 "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(pki / "san.ext"), "-out", str(pki / "apiserver.crt"))
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        # A static token file: the admin (system:masters) identity for the tests and the controllers.
        (pki / "tokens.csv").write_text(f'{self.admin_token},admin,admin-uid,"system:masters"\n')

    def _start_etcd(self) -> str:
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        self._spawn("etcd", [
            "--name=test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}",
            "--unsafe-no-fsync",  # test data: durability is not wanted, speed on a shared disk is
            "--log-level=warn",
        ])
        return client_url

    def _start_apiserver(self, etcd_url: str) -> None:
        pki = self.workdir / "pki"
        self.api_port = free_port()
        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            # On top of the default plugins (ValidatingAdmissionPolicy among them): what refuses children
            # whose blockOwnerDeletion the creator may not set (managed clusters such as OpenShift enable it).
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ])

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _wait_ready(self, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(f"{self.url}/readyz",
                                         headers={"Authorization": f"Bearer {self.admin_token}"})
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(request, context=context, timeout=3) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready in time ({last}); logs in {self.workdir / 'logs'}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")

    # -- identities --------------------------------------------------------------------------------

    def write_kubeconfig(self, path: Path, token: str, user: str, namespace: str = "default") -> Path:
        """A kubeconfig for `token` against this apiserver (CA-verified TLS)."""
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: test\n  cluster:\n    server: {self.url}\n"
            f"    certificate-authority: {self.ca_file}\n"
            f"users:\n- name: {user}\n  user:\n    token: {token}\n"
            f"contexts:\n- name: test\n  context:\n    cluster: test\n    user: {user}\n"
            f"    namespace: {namespace}\n"
            "current-context: test\n")
        return path

    # -- stop --------------------------------------------------------------------------------------

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM each process by PID (scheduler and controllers first, etcd last), SIGKILL after timeout."""
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout=timeout)
        self.processes.clear()
