"""Shared fixtures: the e2e cluster, one namespace per e2e test, and test markers."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import (
    SUMMARY,
    Cluster,
    ClusterError,
    RealNodePlane,
    cluster_mode,
    connect_existing,
    temporary_cluster,
)
from harness.image import ImageBuildError, build_image, image_on_node
from harness.postgres import PostgresError, PostgresServer

_MARKERS = ("unit", "integration", "e2e")
_cluster_summary = SUMMARY  # lines for the terminal summary, tests may add theirs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests under an e2e/ folder are e2e; a test that says nothing else is a unit test.
    for item in items:
        if "e2e" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.e2e)
        elif not any(item.get_closest_marker(m) for m in _MARKERS):
            item.add_marker(pytest.mark.unit)
    _deselect_kwok_only(config, items)


def _pods_really_run() -> bool:
    """Whether the session's cluster runs pods: the real-node mode, or a cluster KUBECONFIG
    names (kind, ...). An unknown mode is left to the `cluster` fixture to report."""
    return bool(os.environ.get("KUBECONFIG")) or os.environ.get("MODELTRUST_CLUSTER") == "real"


def _deselect_kwok_only(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect (not skip) the tests marked kwok_only where pods really run; each one's
    reason goes into the terminal summary. A kwok_only mark without a reason is an error."""
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("kwok_only")
        if marker is None:
            kept.append(item)
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: kwok_only needs a reason")
        dropped.append(item)
        if _pods_really_run():
            _cluster_summary.append(f"deselected (kwok only) {item.nodeid}: {reason}")
    if dropped and _pods_really_run():
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster KUBECONFIG names, else a local cluster started for this session:
    kwok's fake node by default, a real kubelet when MODELTRUST_CLUSTER=real.

    A cluster that cannot start fails every e2e test with the reason; nothing is skipped
    and nothing falls back to the other mode.
    """
    named = os.environ.get("KUBECONFIG")
    if named:
        reached = connect_existing(Path(named))
        _cluster_summary.append(f"KUBECONFIG={named}, server {reached.server_version}")
        yield reached
        return
    try:
        mode = cluster_mode()
        plane = temporary_cluster(mode)
        started = plane.up()
    except ClusterError as exc:
        pytest.fail(f"the local cluster did not start: {exc}", pytrace=False)
    if started.real_pods:
        info = started.node_info
        _cluster_summary.append(
            f"local real-node cluster {plane.name}, kube-apiserver {started.server_version}, "
            f"kubelet {info.get('kubeletVersion')}, {info.get('containerRuntimeVersion')}, "
            f"pods reach the host at {started.host_address}"
        )
    else:
        _cluster_summary.append(
            f"local control plane {plane.name} (kwok), kube-apiserver {started.server_version}"
        )
    try:
        yield started
    finally:
        plane.down()
        shutil.rmtree(plane.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def real_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A cluster whose pods really run, with the modeltrust image in its container runtime.

    The session's `cluster` when that one runs pods (MODELTRUST_CLUSTER=real, or the
    cluster KUBECONFIG names, e.g. kind, where hack/e2e-kind.sh loaded the image and
    MODELTRUST_E2E_IMAGE names it); otherwise one real-node cluster started for the session
    and shared by every real-pod test. The image is `make image`'s (harness.image), built
    if needed and imported once. Nothing is skipped: a cluster or image that cannot be had
    fails the tests with the reason.
    """
    if os.environ.get("KUBECONFIG") or cluster_mode() == "real":
        shared: Cluster = request.getfixturevalue("cluster")
        _import_modeltrust_image(shared)
        yield shared
        return
    plane = RealNodePlane(name=f"rp{os.getpid()}", workdir=Path(tempfile.mkdtemp(prefix="mt-rp-")))
    try:
        started = plane.up()
    except ClusterError as exc:
        pytest.fail(f"the real-node cluster for real-pod tests did not start: {exc}", pytrace=False)
    try:
        info = started.node_info
        _cluster_summary.append(
            f"real-pod tests' real-node cluster {plane.name}, kube-apiserver "
            f"{started.server_version}, kubelet {info.get('kubeletVersion')}, "
            f"{info.get('containerRuntimeVersion')}, pods reach the host at {started.host_address}"
        )
        _import_modeltrust_image(started)
        yield started
    finally:
        plane.down()
        shutil.rmtree(plane.workdir, ignore_errors=True)


def _import_modeltrust_image(cluster: Cluster) -> None:
    if cluster.importer is None:
        return  # an external cluster: its image was loaded by whoever made it (hack/e2e-kind.sh)
    try:
        image = build_image()
    except ImageBuildError as exc:
        pytest.fail(f"the modeltrust image could not be built: {exc}", pytrace=False)
    started = time.monotonic()
    image_on_node(cluster)  # imported once, by its digest reference too
    _cluster_summary.append(
        f"imported {image.reference} ({image.archive_path.stat().st_size >> 20} MiB) "
        f"in {time.monotonic() - started:.0f}s"
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (harness.postgres: Debian's binaries,
    `initdb` in a temporary directory, a free port). One that cannot start fails every
    test that needs it, with the reason; nothing is skipped."""
    workdir = Path(tempfile.mkdtemp(prefix="mt-pg-"))
    try:
        server = PostgresServer(workdir)
        server.start()
    except PostgresError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"the tests' PostgreSQL server did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database on the session's server; dropped afterwards."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's ledger keeps its store, once per backend: a SQLite file in the
    test's directory, then a fresh PostgreSQL database (a postgresql:// URL)."""
    if request.param == "sqlite":
        return str(tmp_path / "l.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per e2e test, deleted afterwards (without waiting for it to go)."""
    name = f"mt-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _cluster_summary:
        terminalreporter.write_line(f"e2e cluster: {line}")
