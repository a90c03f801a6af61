"""A one-node Kubernetes cluster whose pods really run: kubelet, kube-proxy, containerd.

The control plane is the same etcd / kube-apiserver / kube-controller-manager /
kube-scheduler the kwok mode uses, started here directly (no kwokctl: this mode needs
its own bind address, certificates for a kubelet and kube-proxy, and no fake nodes).

Everything that would otherwise touch the host's network runs in a network namespace
of its own (`modeltrust-<name>-<hash>`): the control plane, containerd, the kubelet,
kube-proxy, the CNI bridge and its masquerade rules, kube-proxy's nftables table and
the kubelet's iptables chains. A veth pair links it to the host: the host side has
`host_address` (what pods use to reach servers the tests run on the host), the node side
has `node_address` (the API server, the kubelet and the node's InternalIP). Host routes
send the pod and Service ranges through it, so tests on the host reach ClusterIPs too.
Two clusters therefore never share a table, a chain or a port (kube-proxy's nftables
table name is fixed, so two of them in one namespace would overwrite each other).

What stays on the host, all under the cluster's directory or removed by `down`: the
containerd root/state/socket, kubelet root dir and its mounts, pod logs, the
hostPath volumes, a cgroup root (`/modeltrust-...`) in every hierarchy, the CNI result
cache entries, the kubelet's /var/log/containers links, and the kernel sysctls the
kubelet sets at start (vm.overcommit_memory, kernel.panic, ...): their previous values
are recorded under /run/modeltrust and restored when the last real-node cluster stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import image_archive
from harness.pki import Pki, kubeconfig

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = Path("/run/modeltrust")  # slot lock and sysctl records shared by all clusters
CNI_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))  # Debian's first
CNI_CACHE = Path("/var/lib/cni/results")  # libcni's, not configurable in containerd 1.6
CONTAINER_LOG_LINKS = Path("/var/log/containers")  # the kubelet's, not configurable
STORAGE_CLASS = "standard"
API_PORT = 6443
MAX_SLOTS = 40
# The kubelet sets these at start (unless protectKernelDefaults, which then refuses to
# start): record them before the first cluster, restore after the last. The network ones
# are recorded too; nothing here changes them on the host (only inside the namespace).
HOST_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
)
# Host directories the kubelet, containerd's shims, libcni and `ip netns` create at fixed
# paths. Those missing before the first real-node cluster are removed after the last one
# (when nothing but empty directories and the kubelet's device-plugin socket is left).
HOST_DIRS = (
    Path("/var/lib/kubelet"),  # device-plugins/kubelet.sock: a fixed path in the kubelet
    Path("/var/log/containers"),
    Path("/run/containerd"),  # s/: containerd 1.6 shims' socket dir, not configurable
    Path("/var/lib/cni"),
    Path("/run/netns"),
)
_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class RealNodeError(RuntimeError):
    """The real-node cluster could not start; the message names what is missing or failed."""


@dataclass(frozen=True)
class Addresses:
    """The per-cluster names and ranges, all derived from one free slot number."""

    slot: int
    netns: str
    host_veth: str
    node_veth: str
    bridge: str
    host_ip: str
    node_ip: str
    pod_cidr: str
    service_cidr: str
    api_service_ip: str
    dns_ip: str

    @classmethod
    def for_slot(cls, slot: int, netns: str) -> Addresses:
        return cls(
            slot=slot,
            netns=netns,
            host_veth=f"mt{slot}h",
            node_veth=f"mt{slot}n",
            bridge=f"mtbr{slot}",
            host_ip=f"10.250.{slot}.1",
            node_ip=f"10.250.{slot}.2",
            pod_cidr=f"10.{200 + slot}.0.0/16",
            service_cidr=f"10.{96 + slot}.0.0/16",
            api_service_ip=f"10.{96 + slot}.0.1",
            dns_ip=f"10.{96 + slot}.0.10",
        )

    def networks(self) -> list[ipaddress.IPv4Network]:
        link = ipaddress.IPv4Network(f"{self.host_ip}/30", strict=False)
        return [
            link,
            ipaddress.IPv4Network(self.pod_cidr),
            ipaddress.IPv4Network(self.service_cidr),
        ]


# --- prerequisites ---------------------------------------------------------------------


def _cgroup_mounts() -> dict[str, str]:
    """Mount point -> fstype of every cgroup hierarchy (v1 and v2)."""
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0]
        if fstype in ("cgroup", "cgroup2"):
            found[_unescape(left.split()[4])] = fstype
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


def cni_dir() -> Path | None:
    return next((d for d in CNI_DIRS if (d / "bridge").exists()), None)


def missing_prerequisites(bin_dir: Path, images_dir: Path) -> list[str]:
    """What this machine lacks to run real pods, each naming where it comes from."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: containerd, the kubelet and the CNI plugins need uid 0")
    commands = {
        "containerd": "Debian package containerd",
        "containerd-shim-runc-v2": "Debian package containerd",
        "ctr": "Debian package containerd",
        "runc": "Debian package runc",
        "nft": "Debian package nftables (kube-proxy's nftables mode)",
        "iptables": "Debian package iptables (the CNI bridge plugin's masquerade rules)",
        "ip": "Debian package iproute2",
        "nsenter": "Debian package util-linux",
    }
    for command, source in commands.items():
        if shutil.which(command) is None:
            missing.append(f"`{command}` on PATH ({source})")
    plugins = cni_dir()
    if plugins is None:
        missing.append(
            "CNI plugins in /usr/lib/cni or /opt/cni/bin (Debian package "
            "containernetworking-plugins)"
        )
    else:
        missing.extend(
            f"CNI plugin {plugins / p} (Debian package containernetworking-plugins)"
            for p in ("bridge", "host-local", "loopback")
            if not (plugins / p).exists()
        )
    mounts = _cgroup_mounts()
    if not mounts:
        missing.append("cgroups: nothing is mounted under /sys/fs/cgroup")
    elif "cgroup" in mounts.values():
        controllers = {Path(m).name for m, t in mounts.items() if t == "cgroup"}
        missing.extend(
            f"the cgroup v1 `{c}` hierarchy under /sys/fs/cgroup"
            for c in ("cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer")
            if not any(c in name.split(",") for name in controllers)
        )
    filesystems = Path("/proc/filesystems").read_text()
    if "overlay" not in filesystems:
        missing.append("the overlay filesystem (containerd's snapshotter)")
    if not Path("/proc/sys/net/bridge").exists():
        missing.append("the br_netfilter kernel module (`modprobe br_netfilter`)")
    for tool in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "kubectl", "kubelet", "kube-proxy", "coredns"):  # fmt: skip
        if not (bin_dir / tool).exists():
            missing.append(f"{bin_dir / tool} (tests/cluster/build-tools.sh --real-node)")
    for image in ("pause", "netcheck"):
        if not (images_dir / image).exists():
            missing.append(f"{images_dir / image} (tests/cluster/build-tools.sh --real-node)")
    return missing


# --- small host helpers ------------------------------------------------------------------


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RealNodeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with (RUN_DIR / name).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def host_sysctls() -> dict[str, str | None]:
    return {name: _read_sysctl(name) for name in HOST_SYSCTLS}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == str(root) or point.startswith(prefix):
            points.append(point)
    return points


def _unmount_all(root: Path) -> None:
    """Unmount everything at or under `root`, deepest first (lazily if busy)."""
    for _ in range(20):
        points = _mounts_under(root)
        if not points:
            return
        for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
            if _libc.umount2(point.encode(), 0) != 0:
                _libc.umount2(point.encode(), _MNT_DETACH)
    raise RealNodeError(f"mounts under {root} would not go: {_mounts_under(root)}")


def _cgroup_pids(cgroup_root: str) -> set[int]:
    pids: set[int] = set()
    for mount in _cgroup_mounts():
        top = Path(mount) / cgroup_root.lstrip("/")
        if top.is_dir():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
    return pids


def _remove_cgroups(cgroup_root: str) -> list[str]:
    """rmdir the cgroup root in every hierarchy, children first; return what stayed."""
    left = []
    for mount in _cgroup_mounts():
        top = Path(mount) / cgroup_root.lstrip("/")
        if not top.is_dir():
            continue
        for attempt in range(50):
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for directory in [*dirs, top]:
                with contextlib.suppress(OSError):
                    directory.rmdir()
            if not top.exists():
                break
            time.sleep(0.1 * min(attempt + 1, 5))
        else:
            left.append(str(top))
    return left


def _remove_if_only_ours(directory: Path) -> None:
    """rmdir `directory` if it holds nothing but empty directories and sockets."""
    if not directory.is_dir():
        return
    entries = sorted(directory.rglob("*"), key=lambda p: -len(p.parts))
    if any(not (e.is_dir() or e.is_socket()) or e.is_symlink() for e in entries):
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            entry.rmdir() if entry.is_dir() else entry.unlink()
    # `ip netns add` bind-mounts /run/netns onto itself (os.path.ismount cannot see that)
    _unmount_all(directory)
    with contextlib.suppress(OSError):
        directory.rmdir()


def _make_cgroup_root(cgroup_root: str) -> None:
    """Create the kubelet's cgroupRoot in every hierarchy (cpuset needs cpus/mems copied)."""
    for mount, fstype in _cgroup_mounts().items():
        top = Path(mount) / cgroup_root.lstrip("/")
        top.mkdir(exist_ok=True)
        if fstype == "cgroup" and (top / "cpuset.cpus").exists():
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (top / knob).write_text((Path(mount) / knob).read_text())
        if fstype == "cgroup2" and (Path(mount) / "cgroup.subtree_control").exists():
            available = (Path(mount) / "cgroup.controllers").read_text().split()
            for controller in available:
                with contextlib.suppress(OSError):
                    (Path(mount) / "cgroup.subtree_control").write_text(f"+{controller}")
                with contextlib.suppress(OSError):
                    (top / "cgroup.subtree_control").write_text(f"+{controller}")


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RealNodeError(f"timed out after {timeout:.0f}s waiting for {what}\n{log()}")


# --- the cluster -------------------------------------------------------------------------


class RealNodeCluster:
    """One real-node cluster under `workdir/<name>.node`, its kubeconfig beside it."""

    def __init__(self, name: str, workdir: Path, bin_dir: Path, images_dir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.dir = workdir / f"{name}.node"
        self.kubeconfig = workdir / f"{name}.kubeconfig"
        self.bin_dir = bin_dir
        self.images_dir = images_dir
        digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:6]
        self.ident = f"modeltrust-{name}-{digest}"
        self.node_name = f"{name}-node"[:63].lower()
        self.cgroup_root = f"/{self.ident}"
        self.state_file = self.dir / "state.json"
        self.addresses: Addresses | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.timings: dict[str, float] = {}

    # -- state shared between `up` and a later `down` (possibly another process) --

    def _state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state

    def _save(self, **changes: Any) -> None:
        state = self._state()
        state.update(changes)
        self.state_file.write_text(json.dumps(state, indent=2) + "\n")

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def tail_logs(self, lines: int = 12) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")) if self.logs.exists() else []:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log} (last lines) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- up --

    def up(self, timeout: float = 240) -> None:
        missing = missing_prerequisites(self.bin_dir, self.images_dir)
        if missing:
            raise RealNodeError(
                "this machine cannot run a real-node cluster; missing:\n  - "
                + "\n  - ".join(missing)
                + "\nInstall the Debian packages with tests/cluster/install-node-deps.sh."
            )
        self.down()  # a half-started leftover of the same name
        started = time.monotonic()
        self.dir.mkdir(parents=True)
        self.logs.mkdir()
        self._save(name=self.name, ident=self.ident, cgroup_root=self.cgroup_root, pids={})
        try:
            self._up(started, timeout)
        except BaseException:
            log = self.tail_logs()
            self.down()
            if log:
                print(log, file=sys.stderr)
            raise

    def _up(self, started: float, timeout: float) -> None:
        deadline = started + timeout
        self._hold_sysctls()
        a = self._network()
        self.addresses = a
        self._save(addresses=asdict(a))
        pki = self._pki(a)
        self._write_cni_config(a)
        self._start_etcd()
        self._start_containerd()
        self._start_apiserver(a)
        archives = image_archive.local_images(
            self.images_dir, self.bin_dir / "coredns", self.coredns_image, self.dir / "images"
        )
        self._wait_containerd(deadline)
        for archive in archives:
            self.import_image(archive)
        for alias in image_archive.PAUSE_ALIASES:
            tagged = self._ctr("images", "tag", "--force", image_archive.PAUSE_IMAGE, alias)
            if tagged.returncode != 0:
                raise RealNodeError(f"tagging {alias} failed: {tagged.stderr.strip()}")
        self.timings["images imported"] = time.monotonic() - started
        _make_cgroup_root(self.cgroup_root)
        self._start_kubelet(a, pki)
        self._wait_apiserver(deadline)
        self.timings["apiserver ready"] = time.monotonic() - started
        # Only now: with authentication kubeconfigs they read a ConfigMap at start and
        # exit if RBAC's bootstrap roles are not there yet.
        self._start_controllers(a)
        self._start_kube_proxy(a)
        self._start_provisioner(a)
        self._apply_addons(a)
        _wait("node Ready", self._node_ready, deadline - time.monotonic(), self.tail_logs)
        self.timings["node Ready"] = time.monotonic() - started
        _wait(
            "CoreDNS available",
            self._coredns_ready,
            deadline - time.monotonic(),
            lambda: (
                self._kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
                + self.tail_logs()
            ),
        )
        self.timings["CoreDNS ready"] = time.monotonic() - started
        self._save(up=True, timings=self.timings)

    @property
    def coredns_image(self) -> str:
        version = (self.bin_dir / "coredns").resolve().parent.name.removeprefix("coredns-")
        return f"modeltrust.local/coredns:{version}"

    def _network(self) -> Addresses:
        """Pick a free slot, create the namespace and the veth pair, route the ranges."""
        ns = self.ident
        with _locked("slots.lock"):
            routes = json.loads(_run("ip", "-j", "route", "show", "table", "all").stdout or "[]")
            taken = []
            for route in routes:
                with contextlib.suppress(ValueError):  # "default", IPv6, ...
                    taken.append(ipaddress.IPv4Network(route.get("dst", ""), strict=False))
            for slot in range(MAX_SLOTS):
                a = Addresses.for_slot(slot, ns)
                if Path(f"/sys/class/net/{a.host_veth}").exists():
                    continue
                if any(n.overlaps(t) for n in a.networks() for t in taken if t.prefixlen > 0):
                    continue
                break
            else:
                raise RealNodeError(f"no free network slot among {MAX_SLOTS} (all in use)")
            _run("ip", "netns", "add", ns)
            self._save(netns=ns)
            _run("ip", "link", "add", a.host_veth, "type", "veth", "peer", "name", a.node_veth,
                 "netns", ns)  # fmt: skip
            self._save(host_veth=a.host_veth)
        _run("ip", "addr", "add", f"{a.host_ip}/30", "dev", a.host_veth)
        _run("ip", "link", "set", a.host_veth, "up")
        for cidr in (a.pod_cidr, a.service_cidr):
            _run("ip", "route", "add", cidr, "via", a.node_ip, "dev", a.host_veth)
        inside = ("ip", "netns", "exec", ns)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{a.node_ip}/30", "dev", a.node_veth)
        _run(*inside, "ip", "link", "set", a.node_veth, "up")
        _run(*inside, "ip", "route", "add", "default", "via", a.host_ip)
        # In the node's namespace only: routing for pods, bridged traffic through nftables.
        _run(*inside, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && "
             "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables && "
             "echo 1 > /proc/sys/net/bridge/bridge-nf-call-ip6tables")  # fmt: skip
        return a

    def _pki(self, a: Addresses) -> dict[str, Path]:
        pki = Pki(self.dir / "pki")
        server = f"https://{a.node_ip}:{API_PORT}"
        names = (
            a.node_ip, a.api_service_ip, "127.0.0.1", "localhost", "kubernetes",
            "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
        )  # fmt: skip
        serving = pki.issue("apiserver", "kube-apiserver", server_names=names, client=False)
        kubelet_client = pki.issue(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            organization="system:masters",
        )
        sa = pki.service_account_keys()
        files = {
            "ca": pki.ca,
            "apiserver.crt": serving.cert,
            "apiserver.key": serving.key,
            "kubelet-client.crt": kubelet_client.cert,
            "kubelet-client.key": kubelet_client.key,
            "sa.pub": sa.cert,
            "sa.key": sa.key,
        }
        identities = {
            "admin": ("kubernetes-admin", "system:masters"),
            "controller-manager": ("system:kube-controller-manager", None),
            "scheduler": ("system:kube-scheduler", None),
            "kubelet": (f"system:node:{self.node_name}", "system:nodes"),
            "kube-proxy": ("system:kube-proxy", None),
            "provisioner": ("modeltrust:hostpath-provisioner", "system:masters"),
        }
        for who, (user, group) in identities.items():
            credential = pki.issue(who, user, organization=group)
            target = self.kubeconfig if who == "admin" else self.dir / f"{who}.kubeconfig"
            kubeconfig(target, server, pki.ca, credential, user)
            files[f"{who}.crt"], files[f"{who}.key"] = credential.cert, credential.key
        return files

    def _spawn(self, name: str, *argv: str, netns: bool = True) -> None:
        ns = self.ident
        command = ["nsenter", f"--net=/run/netns/{ns}", "--", *argv] if netns else list(argv)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `cluster.py up`; `down` stops it by pid
                cwd=self.dir,
            )
        self._procs[name] = proc
        pids = self._state().get("pids", {})
        pids[name] = proc.pid
        self._save(pids=pids)

    def _start_etcd(self) -> None:
        self._spawn(
            "etcd",
            str(self.bin_dir / "etcd"),
            f"--data-dir={self.dir / 'etcd'}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=default=http://127.0.0.1:2380",
            "--unsafe-no-fsync=true",  # a throwaway test cluster: durability is not wanted
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        )

    def _start_apiserver(self, a: Addresses) -> None:
        p = self.dir / "pki"
        self._spawn(
            "kube-apiserver",
            str(self.bin_dir / "kube-apiserver"),
            "--etcd-servers=http://127.0.0.1:2379",
            f"--bind-address={a.node_ip}",
            f"--advertise-address={a.node_ip}",
            f"--secure-port={API_PORT}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={a.service_cidr}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            # logs/exec go to the node's address; its name resolves nowhere here
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--profiling=false",
            "--v=1",
        )

    def _start_controllers(self, a: Addresses) -> None:
        p = self.dir / "pki"
        kcm = self.dir / "controller-manager.kubeconfig"
        self._spawn(
            "kube-controller-manager",
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kcm}",
            f"--authentication-kubeconfig={kcm}",
            f"--authorization-kubeconfig={kcm}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            # one identity (a service account) per controller, as on kubeadm clusters
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--service-cluster-ip-range={a.service_cidr}",
            f"--cluster-cidr={a.pod_cidr}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            "--v=1",
        )
        scheduler = self.dir / "scheduler.kubeconfig"
        self._spawn(
            "kube-scheduler",
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={scheduler}",
            f"--authentication-kubeconfig={scheduler}",
            f"--authorization-kubeconfig={scheduler}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--v=1",
        )

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    def _start_containerd(self) -> None:
        c = self.dir / "containerd"
        c.mkdir()
        plugins = cni_dir()
        config = f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{self.containerd_socket}"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image_archive.PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: runc cannot give sandboxes a negative oom_score_adj
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_unprivileged_ports = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{c / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{plugins}"
    conf_dir = "{self.dir / "cni" / "net.d"}"
"""
        (c / "config.toml").write_text(config)
        self._spawn("containerd", "containerd", f"--config={c / 'config.toml'}")

    def _ctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return _run("ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args,
                    check=False, timeout=timeout)  # fmt: skip

    def _wait_containerd(self, deadline: float) -> None:
        _wait(
            "containerd to answer",
            lambda: self._ctr("version", timeout=10).returncode == 0,
            deadline - time.monotonic(),
            self.tail_logs,
        )

    def import_image(self, archive: Path) -> dict[str, str]:
        """Import a `docker save`/OCI archive into the node's containerd (k8s.io namespace);
        returns each imported name with the digest-pinned reference (`repo@sha256:...`) it
        can also be run by.

        A registry pull records both references; `ctr import` only the tag, and the kubelet
        resolves a `repo@sha256:` reference only if containerd has an image by that name.
        Policies allow runtime images by digest only, so the digest reference is made here.
        Pods use either with imagePullPolicy IfNotPresent or Never (nothing can be pulled)."""
        result = self._ctr("images", "import", str(archive), timeout=900)
        if result.returncode != 0:
            raise RealNodeError(f"importing {archive} failed: {result.stderr.strip()}")
        names = set(re.findall(r"^unpacking (\S+) \(sha256:", result.stdout, re.MULTILINE))
        listed = self._ctr("images", "ls")
        pinned: dict[str, str] = {}
        for line in listed.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 3 or fields[0] not in names:
                continue
            name, digest = fields[0], fields[2]
            repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
            ref = f"{repo}@{digest}"
            tagged = self._ctr("images", "tag", "--force", name, ref)
            if tagged.returncode != 0:
                raise RealNodeError(f"tagging {name} as {ref} failed: {tagged.stderr.strip()}")
            pinned[name] = ref
        return pinned

    def _write_cni_config(self, a: Addresses) -> None:
        net_d = self.dir / "cni" / "net.d"
        net_d.mkdir(parents=True)
        config = {
            "cniVersion": "1.0.0",
            "name": self.ident,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": a.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": a.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.dir / "cni" / "ipam"),
                    },
                }
            ],
        }
        (net_d / "10-modeltrust.conflist").write_text(json.dumps(config, indent=2))

    def _start_kubelet(self, a: Addresses, pki: dict[str, Path]) -> None:
        root = self.dir / "kubelet"
        root.mkdir()
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroup v1 hosts: kubelet 1.35 refuses them unless told otherwise
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "address": a.node_ip,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki["ca"])},
            },
            "authorization": {"mode": "Webhook"},
            "clusterDNS": [a.dns_ip],
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(root / "volume-plugins"),
            "failSwapOn": False,
            "serializeImagePulls": False,
            # imported images cannot be pulled again: never garbage-collect them
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "nodeStatusReportFrequency": "10s",
        }
        (self.dir / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        self._spawn(
            "kubelet",
            str(self.bin_dir / "kubelet"),
            f"--config={self.dir / 'kubelet.yaml'}",
            f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
            f"--root-dir={root}",
            f"--cert-dir={root / 'pki'}",
            f"--hostname-override={self.node_name}",
            f"--node-ip={a.node_ip}",
            "--v=1",
        )

    def _start_kube_proxy(self, a: Addresses) -> None:
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "mode": "nftables",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-proxy.kubeconfig")},
            "hostnameOverride": self.node_name,
            "clusterCIDR": a.pod_cidr,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # leave the host's conntrack sysctls alone
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
        }
        (self.dir / "kube-proxy.yaml").write_text(json.dumps(config, indent=2))
        self._spawn(
            "kube-proxy",
            str(self.bin_dir / "kube-proxy"),
            f"--config={self.dir / 'kube-proxy.yaml'}",
            "--v=1",
        )

    def _start_provisioner(self, a: Addresses) -> None:
        p = self.dir / "pki"
        self._spawn(
            "hostpath-provisioner",
            sys.executable,
            str(Path(__file__).with_name("hostpath_provisioner.py")),
            f"--server=https://{a.node_ip}:{API_PORT}",
            f"--ca={p / 'ca.crt'}",
            f"--cert={p / 'provisioner.crt'}",
            f"--key={p / 'provisioner.key'}",
            f"--root={self.dir / 'volumes'}",
            f"--node={self.node_name}",
            f"--storage-class={STORAGE_CLASS}",
            netns=False,
        )

    def _kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RealNodeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def _wait_apiserver(self, deadline: float) -> None:
        context = ssl.create_default_context(cafile=str(self.dir / "pki" / "ca.crt"))
        context.load_cert_chain(self.dir / "pki" / "admin.crt", self.dir / "pki" / "admin.key")
        assert self.addresses is not None
        url = f"https://{self.addresses.node_ip}:{API_PORT}/readyz"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        _wait("kube-apiserver /readyz", ready, deadline - time.monotonic(), self.tail_logs)

    def _apply_addons(self, a: Addresses) -> None:
        manifests = addon_manifests(a.dns_ip, self.coredns_image)
        self._kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                           "items": manifests}))  # fmt: skip

    def node_info(self) -> dict[str, str]:
        out = self._kubectl("get", "node", self.node_name, "-o", "json").stdout
        info: dict[str, str] = json.loads(out)["status"]["nodeInfo"]
        return info

    def _node_ready(self) -> bool:
        result = self._kubectl(
            "get", "node", self.node_name, "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False,
        )  # fmt: skip
        return result.stdout.strip() == "True"

    def _coredns_ready(self) -> bool:
        result = self._kubectl(
            "-n", "kube-system", "get", "deployment", "coredns",
            "-o", "jsonpath={.status.readyReplicas}", check=False,
        )  # fmt: skip
        return result.stdout.strip() == "1"

    # -- down --

    def _hold_sysctls(self) -> None:
        """Record the host's sysctls before the first real-node cluster on this machine."""
        with _locked("sysctls.lock"):
            holders = self._live_sysctl_holders()
            record = RUN_DIR / "sysctls.json"
            if not holders or not record.exists():
                absent = [str(d) for d in HOST_DIRS if not d.exists()]
                record.write_text(json.dumps({"sysctls": host_sysctls(), "absent": absent}))
            (RUN_DIR / "holders").mkdir(exist_ok=True)
            (RUN_DIR / "holders" / self.ident).write_text(str(self.dir))

    def _live_sysctl_holders(self) -> list[Path]:
        live = []
        for holder in (RUN_DIR / "holders").glob("*") if (RUN_DIR / "holders").exists() else []:
            if Path(holder.read_text().strip(), "state.json").exists():
                live.append(holder)
            else:
                holder.unlink(missing_ok=True)  # a cluster whose directory is gone
        return live

    def _release_sysctls(self) -> None:
        """Restore the recorded sysctls when the last real-node cluster goes."""
        with _locked("sysctls.lock"):
            (RUN_DIR / "holders" / self.ident).unlink(missing_ok=True)
            if self._live_sysctl_holders():
                return
            record = RUN_DIR / "sysctls.json"
            if not record.exists():
                return
            recorded = json.loads(record.read_text())
            for name, value in recorded["sysctls"].items():
                if value is not None and _read_sysctl(name) != value:
                    with contextlib.suppress(OSError):
                        Path("/proc/sys", name).write_text(value)
            for directory in map(Path, recorded["absent"]):
                _remove_if_only_ours(directory)
            record.unlink()

    def _our_pids(self, state: dict[str, Any]) -> dict[str, int]:
        """The processes we started that still run (checked against their command line)."""
        ours = {}
        for name, pid in state.get("pids", {}).items():
            if _alive(pid) and str(self.dir) in _cmdline(pid):
                ours[name] = pid
        return ours

    def _shim_pids(self) -> list[int]:
        address = f"-address {self.containerd_socket} "
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            command = _cmdline(int(proc.name))
            if "containerd-shim" in command and address in command + " ":
                pids.append(int(proc.name))
        return pids

    def _stop(self, pids: list[int], grace: float) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        while any(_alive(p) for p in pids):
            self._reap()
            time.sleep(0.05)
        self._reap()

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()

    def _drain(self, state: dict[str, Any], pids: dict[str, int]) -> None:
        """Let the kubelet stop every pod (CNI DEL, unmounts) while it still can."""
        if not {"kube-apiserver", "kubelet", "containerd"} <= pids.keys():
            return
        if "kube-controller-manager" in pids:  # nothing may recreate what we delete
            self._stop([pids.pop("kube-controller-manager")], grace=5)
        deleted = self._kubectl(
            "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false",
            check=False, timeout=20,
        )  # fmt: skip
        if deleted.returncode != 0:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = self._kubectl("get", "pods", "-A", "-o", "name", check=False, timeout=10)
            if left.returncode != 0 or not left.stdout.strip():
                break
            time.sleep(0.3)

    def down(self) -> None:
        """Stop everything and leave nothing behind; safe to call on a half-started cluster."""
        state = self._state()
        if not state and not self.dir.exists():
            self.kubeconfig.unlink(missing_ok=True)
            return
        pids = self._our_pids(state)
        self._drain(state, pids)
        # pod network namespaces: CRI keeps them under its state dir (unmounted below)
        for name in ("kube-proxy", "hostpath-provisioner", "kube-scheduler",
                     "kube-controller-manager", "kubelet"):  # fmt: skip
            if name in pids:
                self._stop([pids.pop(name)], grace=10)
        cgroup_root = state.get("cgroup_root", self.cgroup_root)
        self._stop(self._shim_pids(), grace=5)
        for _ in range(20):  # pod processes the shims left (SIGKILL, they are disposable)
            left = _cgroup_pids(cgroup_root)
            if not left:
                break
            self._stop(sorted(left), grace=0.5)
        for name in ("containerd", "kube-apiserver", "etcd"):
            if name in pids:
                self._stop([pids.pop(name)], grace=10)
        self._stop(list(pids.values()), grace=5)
        _unmount_all(self.dir)
        left_cgroups = _remove_cgroups(cgroup_root)
        ident = state.get("ident", self.ident)
        if CNI_CACHE.exists():  # results of our network, and loopback's naming our netns
            for cached in CNI_CACHE.iterdir():
                with contextlib.suppress(OSError):
                    if cached.name.startswith(f"{ident}-") or str(self.dir) in cached.read_text():
                        cached.unlink()
        if CONTAINER_LOG_LINKS.exists():
            pod_logs = str(self.dir / "pod-logs")
            for link in CONTAINER_LOG_LINKS.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(pod_logs):
                    link.unlink(missing_ok=True)
        if state.get("host_veth"):
            _run("ip", "link", "del", state["host_veth"], check=False)
        if state.get("netns"):
            _run("ip", "netns", "del", state["netns"], check=False)
        if Path(RUN_DIR / "holders" / ident).exists():
            self._release_sysctls()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)
        self._procs.clear()
        if left_cgroups:
            raise RealNodeError(f"cgroups that would not go: {left_cgroups}")


def addon_manifests(dns_ip: str, coredns_image: str) -> list[dict[str, Any]]:
    """The default StorageClass and CoreDNS (Deployment + the kube-dns Service)."""
    labels = {"k8s-app": "kube-dns"}
    corefile = """.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
"""
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "modeltrust.dev/hostpath",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "containers": [
                            {
                                "name": "coredns",
                                "image": coredns_image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 1,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": labels,
                "clusterIP": dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        },
    ]
