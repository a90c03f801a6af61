"""The real-node cluster mode: pods really run, and `down` leaves nothing behind.

These tests start their own real-node clusters (whatever MODELTRUST_CLUSTER says), so
CI exercises the mode on every run. They need root, the Debian packages of
tests/cluster/install-node-deps.sh and `build-tools.sh --real-node`; without them they
fail naming what is missing (never skipped, never silently on kwok).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import SUMMARY, Cluster, ClusterError, RealNodePlane
from harness.image_archive import NETCHECK_IMAGE, write_image_archive
from harness.real_node import (
    CNI_CACHE,
    CONTAINER_LOG_LINKS,
    HOST_DIRS,
    RealNodeCluster,
    RealNodeError,
    host_sysctls,
)
from harness.waiting import wait_for

# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def baseline() -> dict[str, object]:
    """The host's sysctls and fixed-path directories before this module starts a cluster:
    after the last `down` they must be as they were."""
    return {"sysctls": host_sysctls(), "dirs": [str(d) for d in HOST_DIRS if d.exists()]}


def _start(name: str, workdir: Path) -> tuple[RealNodePlane, Cluster]:
    plane = RealNodePlane(name=name, workdir=workdir)
    try:
        cluster = plane.up()
    except ClusterError as exc:
        pytest.fail(f"the real-node cluster did not start: {exc}", pytrace=False)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in plane.timings.items())
    info = cluster.node_info
    SUMMARY.append(
        f"real-node test cluster {name}: kubelet {info['kubeletVersion']}, "
        f"{info['containerRuntimeVersion']}; from binaries ready: {timings}"
    )
    return plane, cluster


@pytest.fixture(scope="module")
def real_plane(
    baseline: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RealNodePlane, Cluster]]:
    plane, cluster = _start(f"rn{os.getpid()}a", tmp_path_factory.mktemp("real-node-a"))
    try:
        yield plane, cluster
    finally:
        plane.down()


@pytest.fixture
def real(real_plane: tuple[RealNodePlane, Cluster]) -> Cluster:
    return real_plane[1]


@pytest.fixture
def ns(real: Cluster) -> Iterator[str]:
    name = f"rn-{uuid.uuid4().hex[:8]}"
    real.create_namespace(name)
    wait_for(
        "the namespace's default service account",
        lambda: real.kubectl("-n", name, "get", "sa", "default", check=False).returncode == 0,
        timeout=30,
    )
    yield name
    real.kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- helpers -------------------------------------------------------------------------------


def pod(
    name: str,
    args: list[str],
    *,
    image: str = NETCHECK_IMAGE,
    labels: dict[str, str] | None = None,
    claim: str | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",  # imported, not pulled: there is no registry
        "args": args,
    }
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 1}
    if claim:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": spec,
    }


def apply(cluster: Cluster, namespace: str, *objects: dict[str, Any]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=body)


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def running(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """Wait until the pod runs with all containers ready; return it."""

    def ready() -> dict[str, Any] | None:
        found = get(cluster, namespace, "pod", name)
        status = found.get("status", {})
        statuses = status.get("containerStatuses", [])
        if status.get("phase") == "Running" and statuses and all(s["ready"] for s in statuses):
            return found
        return None

    return wait_for(f"pod {namespace}/{name} Running", ready, timeout=120)


def exec_in(cluster: Cluster, namespace: str, name: str, *command: str) -> str:
    return cluster.kubectl("-n", namespace, "exec", name, "--", *command, timeout=30).stdout


def eventually_exec(cluster: Cluster, namespace: str, name: str, *command: str) -> str:
    """Run `command` in the pod until it succeeds (Services take a moment to be wired)."""

    def attempt() -> str | None:
        result = cluster.kubectl(
            "-n", namespace, "exec", name, "--", *command, check=False, timeout=30
        )
        return result.stdout if result.returncode == 0 else None

    return wait_for(f"`{' '.join(command)}` in {name} to succeed", attempt, timeout=60)


def web_service(cluster: Cluster, namespace: str) -> str:
    """A netcheck server pod behind a ClusterIP Service `web` (80 -> 8080); its ClusterIP."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(cluster, namespace, pod("web", ["serve", ":8080"]), pod("client", ["serve"]), service)
    running(cluster, namespace, "web")
    running(cluster, namespace, "client")
    return str(get(cluster, namespace, "service", "web")["spec"]["clusterIP"])


def leftovers(node: RealNodeCluster, ident: str, names: list[str], cidrs: list[str]) -> list[str]:
    """Everything of the cluster still on the host (empty when `down` was complete)."""
    found = []
    root = str(node.dir)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if root in command:
                found.append(f"process {proc.name}: {command[:120]}")
    found += [
        f"mount {line.split()[4]}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if root in line
    ]
    if node.dir.exists():
        found.append(f"directory {node.dir}")
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if ident in netns:
        found.append(f"network namespace {ident}")
    found += [f"link {n}" for n in names if Path("/sys/class/net", n).exists()]
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    found += [f"route {c}" for c in cidrs if c in routes]
    for tool in (["nft", "list", "ruleset"], ["iptables-save"]):
        text = subprocess.run(tool, capture_output=True, text=True).stdout
        found += [
            f"{tool[0]}: {line.strip()}"
            for line in text.splitlines()
            if any(marker in line for marker in [ident, *names, *cidrs])
        ]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if " - cgroup" in line and Path(fields[4], node.cgroup_root.lstrip("/")).exists():
            found.append(f"cgroup {fields[4]}{node.cgroup_root}")
    if CNI_CACHE.exists():
        found += [
            f"CNI cache {p}"
            for p in CNI_CACHE.iterdir()
            if p.name.startswith(f"{ident}-") or root in p.read_text(errors="replace")
        ]
    if CONTAINER_LOG_LINKS.exists():
        found += [
            f"log link {p}"
            for p in CONTAINER_LOG_LINKS.iterdir()
            if p.is_symlink() and os.readlink(p).startswith(root)
        ]
    return found


# --- tests ---------------------------------------------------------------------------------


def test_node_is_ready_with_the_pinned_kubelet_and_containerd(
    real_plane: tuple[RealNodePlane, Cluster],
) -> None:
    plane, cluster = real_plane
    assert cluster.real_pods
    info = cluster.node_info
    assert info["kubeletVersion"] == cluster.server_version
    assert info["containerRuntimeVersion"].startswith("containerd://")
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) == 1
    conditions = {c["type"]: c["status"] for c in nodes[0]["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert plane.timings["node Ready"] > 0


def test_a_pod_runs_with_no_restarts_and_logs_and_exec_work(
    real: Cluster, ns: str, tmp_path: Path
) -> None:
    # import_image takes any archive: here one written now under a new tag
    tag = "modeltrust.local/netcheck-imported:test"
    binary = Path(os.environ.get("MODELTRUST_TOOLS", Path.home() / ".cache/modeltrust/tools"))
    archive = write_image_archive(
        tmp_path / "imported.tar",
        tag,
        {"netcheck": binary / "images" / "netcheck"},
        entrypoint=["/netcheck"],
    )
    real.import_image(archive)
    apply(real, ns, pod("app", ["serve"], image=tag))
    found = running(real, ns, "app")
    # Fake nodes hid a crash-looping pod once: a real one must not restart at all.
    time.sleep(3)  # a crash loop needs a moment to show
    found = get(real, ns, "pod", "app")
    assert [s["restartCount"] for s in found["status"]["containerStatuses"]] == [0]
    assert found["status"]["podIP"].startswith("10.")
    logs = real.kubectl("-n", ns, "logs", "app").stdout
    assert "netcheck serving on :8080" in logs
    assert exec_in(real, ns, "app", "/netcheck", "write", "/tmp/probe", "hello").strip() == "hello"


def test_a_pod_reaches_a_service_through_kube_proxy(real: Cluster, ns: str) -> None:
    cluster_ip = web_service(real, ns)
    body = eventually_exec(real, ns, "client", "/netcheck", "get", f"http://{cluster_ip}/")
    assert body.strip() == "netcheck web"


def test_coredns_resolves_a_service_name(real: Cluster, ns: str) -> None:
    cluster_ip = web_service(real, ns)
    fqdn = f"web.{ns}.svc.cluster.local"
    assert eventually_exec(real, ns, "client", "/netcheck", "lookup", fqdn).split() == [cluster_ip]
    # the search path too, and a request by name through DNS and kube-proxy together
    assert exec_in(real, ns, "client", "/netcheck", "lookup", "web").split() == [cluster_ip]
    body = eventually_exec(real, ns, "client", "/netcheck", "get", "http://web/")
    assert body.strip() == "netcheck web"


def test_a_claim_of_the_default_storage_class_binds_and_is_writable(
    real_plane: tuple[RealNodePlane, Cluster], ns: str
) -> None:
    plane, real = real_plane
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    apply(real, ns, claim)
    bound = wait_for(
        "the claim Bound",
        lambda: (c := get(real, ns, "pvc", "data")).get("status", {}).get("phase") == "Bound" and c,
        timeout=60,
    )
    assert bound["spec"]["storageClassName"] == "standard"
    volume = bound["spec"]["volumeName"]
    apply(real, ns, pod("writer", ["serve"], claim="data"))
    running(real, ns, "writer")
    exec_in(real, ns, "writer", "/netcheck", "write", "/data/hello", "persisted")
    on_host = plane.node.dir / "volumes" / volume / "hello"
    assert on_host.read_text() == "persisted"
    # deleting the claim deletes the volume and its directory
    real.kubectl("-n", ns, "delete", "pod", "writer", "--wait=true", timeout=60)
    real.kubectl("-n", ns, "delete", "pvc", "data", "--wait=true", timeout=60)
    wait_for(
        "the released volume deleted",
        lambda: real.kubectl("get", "pv", volume, check=False).returncode != 0,
        timeout=60,
    )
    assert not on_host.parent.exists()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_pod_reaches_a_server_on_the_host_address(real: Cluster, ns: str) -> None:
    # model stores and ledgers the tests run on the host: bound to host_address, not loopback
    assert real.host_address != "127.0.0.1"
    server = http.server.ThreadingHTTPServer((real.host_address, 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        apply(real, ns, pod("client", ["serve"]))
        running(real, ns, "client")
        url = f"http://{real.host_address}:{server.server_address[1]}/"
        assert exec_in(real, ns, "client", "/netcheck", "get", url) == "from the host\n"
    finally:
        server.shutdown()
        server.server_close()


def test_a_second_cluster_runs_beside_and_down_leaves_nothing(
    real_plane: tuple[RealNodePlane, Cluster],
    baseline: dict[str, object],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    first_plane, first = real_plane
    namespace = f"rn-{uuid.uuid4().hex[:8]}"
    first.create_namespace(namespace)
    wait_for(
        "the default service account",
        lambda: first.kubectl("-n", namespace, "get", "sa", "default", check=False).returncode == 0,
        timeout=30,
    )
    first_ip = web_service(first, namespace)

    second_plane, second = _start(f"rn{os.getpid()}b", tmp_path_factory.mktemp("real-node-b"))
    planes = [(first_plane, first), (second_plane, second)]
    marks = []
    for plane, _ in planes:
        a = plane.node.addresses
        assert a is not None
        marks.append((plane.node.ident, [a.host_veth, a.bridge], [a.pod_cidr, a.service_cidr]))
    assert marks[0][1] != marks[1][1]
    assert marks[0][2] != marks[1][2]
    assert first.host_address != second.host_address
    try:
        second.create_namespace(namespace)
        wait_for(
            "the default service account",
            lambda: (
                second.kubectl("-n", namespace, "get", "sa", "default", check=False).returncode == 0
            ),
            timeout=30,
        )
        second_ip = web_service(second, namespace)
        for cluster, ip in ((first, first_ip), (second, second_ip)):
            body = eventually_exec(
                cluster, namespace, "client", "/netcheck", "get", f"http://{ip}/"
            )
            assert body.strip() == "netcheck web"
    finally:
        started = time.monotonic()
        second_plane.down()
        SUMMARY.append(f"real-node cluster down in {time.monotonic() - started:.1f}s (second)")
    assert leftovers(second_plane.node, *marks[1]) == []
    # the first one is untouched by the second's down
    body = eventually_exec(first, namespace, "client", "/netcheck", "get", f"http://{first_ip}/")
    assert body.strip() == "netcheck web"

    started = time.monotonic()
    first_plane.down()
    SUMMARY.append(f"real-node cluster down in {time.monotonic() - started:.1f}s (first)")
    assert leftovers(first_plane.node, *marks[0]) == []
    assert host_sysctls() == baseline["sysctls"]
    assert [str(d) for d in HOST_DIRS if d.exists()] == baseline["dirs"]


def test_a_machine_without_the_prerequisites_gets_them_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no fallback to kwok: up() refuses, naming each missing piece and where it comes from
    monkeypatch.setenv("PATH", str(tmp_path))
    node = RealNodeCluster("absent", tmp_path, tmp_path / "bin", tmp_path / "images")
    with pytest.raises(RealNodeError) as raised:
        node.up()
    message = str(raised.value)
    for expected in (
        "`containerd` on PATH (Debian package containerd)",
        "`runc` on PATH (Debian package runc)",
        "`nft` on PATH (Debian package nftables",
        f"{tmp_path / 'bin' / 'kubelet'} (tests/cluster/build-tools.sh --real-node)",
        "tests/cluster/install-node-deps.sh",
    ):
        assert expected in message
    assert not node.dir.exists()
