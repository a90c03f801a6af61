"""A real, local Kubernetes cluster for e2e tests, or the cluster KUBECONFIG names.

Two local modes, chosen with MODELTRUST_CLUSTER:

- `kwok` (the default, fast): etcd, kube-apiserver, kube-controller-manager and
  kube-scheduler built from their official Go modules (tests/cluster/build-tools.sh),
  supervised by kwokctl in its `binary` runtime, plus kwok's fake nodes so Deployments
  and StatefulSets become Ready without a kubelet. Everything listens on 127.0.0.1;
  nothing runs in pods.
- `real`: the same control plane plus a kubelet, kube-proxy, containerd, CNI and CoreDNS
  in a network namespace of the cluster's own (tests/harness/real_node.py): pods run.

    PYTHONPATH=tests python -m harness.cluster up     # prints the kubeconfig path
    PYTHONPATH=tests python -m harness.cluster down   # stops everything, removes the work dir
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.real_node import RealNodeCluster, RealNodeError

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "cluster" / "build-tools.sh"
VERSIONS_FILE = REPO / "tests" / "cluster" / "versions.env"
CACHE = Path(os.environ.get("MODELTRUST_CACHE", Path.home() / ".cache" / "modeltrust"))
DEFAULT_NAME = "modeltrust-dev"
NODE_NAME = "kwok-node-0"


MODES = ("kwok", "real")
# "e2e cluster: ..." lines pytest prints in its terminal summary (tests/conftest.py).
SUMMARY: list[str] = []


class ClusterError(RuntimeError):
    """The cluster could not be started or reached; the message says why and what to do."""


def cluster_mode() -> str:
    """MODELTRUST_CLUSTER: `kwok` (default, fake nodes) or `real` (a kubelet, real pods)."""
    mode = os.environ.get("MODELTRUST_CLUSTER", "kwok") or "kwok"
    if mode not in MODES:
        raise ClusterError(f"MODELTRUST_CLUSTER={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def versions() -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pinned[key] = value
    return pinned


def tools_dir() -> Path:
    return Path(os.environ.get("MODELTRUST_TOOLS", CACHE / "tools"))


def tools_bin(*, real_node: bool = False) -> Path:
    """Build (first run only) and return the directory holding the pinned binaries.

    `real_node` adds what only the real-node mode needs (CoreDNS, the images' binaries)."""
    env = {**os.environ, "MODELTRUST_TOOLS": str(tools_dir())}
    flags = ["--real-node"] if real_node else []
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *flags], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ClusterError(
            f"building the control plane failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}\nRun {BUILD_SCRIPT} by hand to see the whole log."
        )
    return Path(result.stdout.strip().splitlines()[-1])


def tool_env(bin_dir: Path, kubeconfig: Path) -> dict[str, str]:
    """Environment for kubectl/helm/kopf: our kubectl first on PATH (the image ships an old one)."""
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "KUBECONFIG": str(kubeconfig),
    }


@dataclass
class Cluster:
    """A reachable cluster: where its kubeconfig is and how to run kubectl against it.

    `real_pods` says whether pods really run (a kubelet) or only look Running (kwok).
    `host_address` is where a pod reaches a server the tests run on this machine (model
    stores, ledgers): bind those servers to it, never to 127.0.0.1, which in a pod is the
    pod itself. `node_info` is the node's status.nodeInfo (kubeletVersion,
    containerRuntimeVersion, ...) when the harness started a real node. `logs_dir` holds
    the logs of the components a local cluster runs (None for a cluster KUBECONFIG names).
    """

    kubeconfig: Path
    bin_dir: Path | None
    local: bool
    server_version: str = ""
    env: dict[str, str] = field(default_factory=dict)
    mode: str = "kwok"
    real_pods: bool = False
    host_address: str = "127.0.0.1"
    node_info: dict[str, str] = field(default_factory=dict)
    logs_dir: Path | None = None
    importer: Callable[[Path], dict[str, str]] | None = field(default=None, repr=False)

    def import_image(self, archive: Path) -> dict[str, str]:
        """Load an image archive (`docker save`, `buildah push docker-archive:`, OCI) into
        the node's container runtime, so pods can use its tag with no registry; returns each
        imported name with its digest-pinned reference (`repo@sha256:...`)."""
        if self.importer is None:
            raise ClusterError(
                f"a {self.mode} cluster has no container runtime to import {archive} into; "
                "use MODELTRUST_CLUSTER=real (or load it into your own cluster yourself)"
            )
        return self.importer(archive)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", *args],
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def create_namespace(self, name: str, timeout: float = 60) -> None:
        """Create a namespace and wait for its `default` ServiceAccount: until the
        ServiceAccount controller has made it, the API server refuses every pod there
        ("serviceaccount default not found"), which a loaded machine makes visible."""
        self.kubectl("create", "namespace", name)
        deadline = time.monotonic() + timeout
        while self.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode:
            if time.monotonic() > deadline:
                raise ClusterError(f"namespace {name}: no default ServiceAccount after {timeout}s")
            time.sleep(0.2)

    def kubectl_json(self, *args: str) -> dict[str, object]:
        out = self.kubectl(*args, "-o", "json").stdout
        parsed: dict[str, object] = json.loads(out)
        return parsed


def _read_server_version(cluster: Cluster) -> str:
    info = cluster.kubectl_json("version")
    server = info.get("serverVersion")
    if not isinstance(server, dict):
        raise ClusterError(f"the API server did not report a version: {info}")
    return str(server["gitVersion"])


class LocalControlPlane:
    """kwokctl-supervised control plane under one work directory."""

    def __init__(self, name: str = DEFAULT_NAME, workdir: Path | None = None) -> None:
        self.name = name
        self.workdir = workdir or CACHE / "clusters"
        self.kubeconfig = self.workdir / f"{name}.kubeconfig"
        self.bin_dir = tools_bin()

    @property
    def _kwokctl(self) -> list[str]:
        return [str(self.bin_dir / "kwokctl"), "--name", self.name]

    def _env(self) -> dict[str, str]:
        env = tool_env(self.bin_dir, self.kubeconfig)
        env["KWOK_WORKDIR"] = str(self.workdir)
        return env

    def _config(self) -> Path:
        b = self.bin_dir
        config = self.workdir / f"{self.name}.kwokctl.yaml"
        # Every binary is a local path, so kwokctl never tries to download one, and
        # every component binds to loopback only.
        config.write_text(
            "kind: KwokctlConfiguration\n"
            "apiVersion: config.kwok.x-k8s.io/v1alpha1\n"
            "options:\n"
            "  runtime: binary\n"
            f"  kubeVersion: {versions()['KUBERNETES_VERSION']}\n"
            "  bindAddress: 127.0.0.1\n"
            f"  kubeApiserverBinary: {b / 'kube-apiserver'}\n"
            f"  kubeControllerManagerBinary: {b / 'kube-controller-manager'}\n"
            f"  kubeSchedulerBinary: {b / 'kube-scheduler'}\n"
            f"  kubectlBinary: {b / 'kubectl'}\n"
            f"  etcdBinary: {b / 'etcd'}\n"
            f"  kwokControllerBinary: {b / 'kwok'}\n"
            "  disableQPSLimits: true\n"
            # kwokctl's default Service range is a /24: the 255th Service would fail.
            "componentsPatches:\n"
            "- name: kube-apiserver\n"
            "  extraArgs:\n"
            "  - key: service-cluster-ip-range\n"
            "    value: 10.96.0.0/16\n"
            # Each controller acts as its own service account (deployment-controller,
            # replicaset-controller, generic-garbage-collector, ...), as kubeadm and kind run
            # it, instead of all as "system:kube-controller-manager": the chart's admission
            # policies tell them apart (charts/modeltrust/templates/admission.yaml).
            "- name: kube-controller-manager\n"
            "  extraArgs:\n"
            "  - key: use-service-account-credentials\n"
            '    value: "true"\n'
        )
        return config

    def up(self, timeout: float = 180) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(
            self.kubeconfig,
            self.bin_dir,
            local=True,
            env=self._env(),
            logs_dir=self.workdir / "clusters" / self.name / "logs",
        )
        if self._running():
            cluster.server_version = _read_server_version(cluster)
            return cluster
        # kwokctl picks free ports by probing, so two clusters starting at the same moment
        # can race for one port; a second attempt gets fresh ports.
        for attempt in (1, 2):
            self.down()  # clear a half-started leftover
            created = subprocess.run(
                [
                    *self._kwokctl, "-c", str(self._config()), "create", "cluster",
                    "--kubeconfig", str(self.kubeconfig), "--wait", f"{int(timeout)}s",
                ],
                env=self._env(), capture_output=True, text=True, check=False,
            )  # fmt: skip
            if created.returncode == 0:
                break
            logs = self._tail_logs()
            self.down()
            if attempt == 2:
                raise ClusterError(
                    f"kwokctl could not create the cluster (exit {created.returncode}):\n"
                    f"{created.stderr[-3000:]}\n{logs}"
                )
        self._add_node(cluster)
        self._wait_node_ready(cluster, deadline=time.monotonic() + timeout)
        cluster.server_version = _read_server_version(cluster)
        return cluster

    def _running(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        probe = subprocess.run(
            ["kubectl", "get", "--raw", "/readyz"],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return probe.returncode == 0

    def _add_node(self, cluster: Cluster) -> None:
        # A fake node kwok manages (the controller runs with --manage-all-nodes); no taint,
        # so ordinary workloads schedule onto it as they would on a real node.
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": {
                    "cpu": "64",
                    "memory": "256Gi",
                    "ephemeral-storage": "1Ti",
                    "pods": "2000",
                },
                "capacity": {
                    "cpu": "64",
                    "memory": "256Gi",
                    "ephemeral-storage": "1Ti",
                    "pods": "2000",
                },
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(node))

    def _wait_node_ready(self, cluster: Cluster, deadline: float) -> None:
        while time.monotonic() < deadline:
            result = cluster.kubectl(
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                check=False,
            )
            if result.stdout.strip() == "True":
                return
            time.sleep(0.5)
        raise ClusterError(f"node {NODE_NAME} did not become Ready\n{self._tail_logs()}")

    def _tail_logs(self) -> str:
        logs = self.workdir / "clusters" / self.name / "logs"
        parts = []
        for log in sorted(logs.glob("*.log")) if logs.exists() else []:
            lines = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name} (last lines) ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def pids(self) -> list[int]:
        found = []
        for pid_file in (self.workdir / "clusters" / self.name / "pids").glob("*.pid"):
            try:
                found.append(int(pid_file.read_text().strip()))
            except ValueError:
                continue
        return found

    def down(self) -> None:
        pids = self.pids()
        subprocess.run(
            [*self._kwokctl, "delete", "cluster", "--kubeconfig", str(self.kubeconfig)],
            env=self._env(),
            capture_output=True,
            check=False,
        )
        # kwokctl stops what it started; make sure nothing outlives us even if it failed.
        _kill_all(pids)
        shutil.rmtree(self.workdir / "clusters" / self.name, ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _kill_all(pids: Sequence[int], grace: float = 10) -> None:
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


class RealNodePlane:
    """The real-node mode: the harness runs the control plane, a kubelet and containerd."""

    def __init__(self, name: str = DEFAULT_NAME, workdir: Path | None = None) -> None:
        self.name = name
        self.workdir = workdir or CACHE / "clusters"
        self.bin_dir = tools_bin(real_node=True)
        self.node = RealNodeCluster(name, self.workdir, self.bin_dir, tools_dir() / "images")
        self.kubeconfig = self.node.kubeconfig

    def up(self, timeout: float = 240) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.node.up(timeout=timeout)
            addresses = self.node.addresses
            assert addresses is not None
            cluster = Cluster(
                self.kubeconfig,
                self.bin_dir,
                local=True,
                env=tool_env(self.bin_dir, self.kubeconfig),
                mode="real",
                real_pods=True,
                host_address=addresses.host_ip,
                node_info=self.node.node_info(),
                logs_dir=self.node.logs,
                importer=self.node.import_image,
            )
        except RealNodeError as exc:
            raise ClusterError(str(exc)) from exc
        cluster.server_version = _read_server_version(cluster)
        return cluster

    @property
    def timings(self) -> dict[str, float]:
        return self.node.timings

    def down(self) -> None:
        try:
            self.node.down()
        except RealNodeError as exc:
            raise ClusterError(str(exc)) from exc


def connect_existing(kubeconfig: Path) -> Cluster:
    """The cluster a user named with KUBECONFIG (kind, or any other)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    cluster = Cluster(kubeconfig, None, local=False, env=env, mode="external", real_pods=True)
    try:
        cluster.server_version = _read_server_version(cluster)
    except (ClusterError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(
            f"KUBECONFIG={kubeconfig} names a cluster that does not answer: {exc}. "
            "Unset KUBECONFIG to use the local control plane instead."
        ) from exc
    return cluster


def control_plane(
    mode: str, name: str = DEFAULT_NAME, workdir: Path | None = None
) -> LocalControlPlane | RealNodePlane:
    if mode == "real":
        return RealNodePlane(name, workdir)
    return LocalControlPlane(name, workdir)


def main(argv: Sequence[str]) -> int:
    command = argv[0] if argv else "up"
    try:
        mode = cluster_mode()
        if command == "up":
            plane = control_plane(mode)
            started = time.monotonic()
            cluster = plane.up()
            extra = ""
            if cluster.real_pods:
                extra = (
                    f", kubelet {cluster.node_info.get('kubeletVersion')}, "
                    f"{cluster.node_info.get('containerRuntimeVersion')}, "
                    f"host address for pods {cluster.host_address}"
                )
            print(
                f"{mode} cluster {plane.name} is up ({cluster.server_version}{extra}, "
                f"{time.monotonic() - started:.1f}s)\n"
                f"export KUBECONFIG={cluster.kubeconfig}\n"
                f'export PATH="{plane.bin_dir}:$PATH"',
                file=sys.stderr,
            )
            print(cluster.kubeconfig)
            return 0
        if command == "down":
            # Whichever mode it was started in: `make cluster-down` needs no variable.
            LocalControlPlane().down()
            real = RealNodeCluster(DEFAULT_NAME, CACHE / "clusters", Path(), Path())
            real.down()
            print(f"cluster {DEFAULT_NAME} is down", file=sys.stderr)
            return 0
    except (ClusterError, RealNodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        "usage: [MODELTRUST_CLUSTER=kwok|real] python -m harness.cluster up|down", file=sys.stderr
    )
    return 2


def temporary_cluster(mode: str) -> LocalControlPlane | RealNodePlane:
    """A cluster of `mode` private to one test session (its own name and work dir)."""
    workdir = Path(tempfile.mkdtemp(prefix="modeltrust-e2e-"))
    return control_plane(mode, name=f"e2e-{os.getpid()}", workdir=workdir)


def temporary_control_plane() -> LocalControlPlane:
    """A kwok control plane private to one test session (its own name and work dir)."""
    workdir = Path(tempfile.mkdtemp(prefix="modeltrust-e2e-"))
    return LocalControlPlane(name=f"e2e-{os.getpid()}", workdir=workdir)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
