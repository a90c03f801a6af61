"""One writer with failover: the writer Lease (SQLite) and the database lock (PostgreSQL).

Real `modeltrust ledger serve` processes, a real API server (the session's kwok control
plane) holding the Lease, a real PostgreSQL server. A writer is paused (SIGSTOP) or
killed (SIGKILL) under load; a standby takes over; no acknowledged entry is lost, every
checkpoint a client saw is consistent with the final log, no two blocks have one size,
and a resumed old writer never signs or acknowledges again.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cluster import Cluster
from harness.failover import Load, block_sizes, check_after_failover, lease_holder
from harness.ledger import TOKEN, audit, ledger_subprocess, make_keys, wait_ready
from harness.postgres import store_sql
from harness.waiting import wait_for
from modeltrust.chain.client import LedgerClient, LedgerClientError
from modeltrust.chain.k8s_lease import KubeAPIConfig, LeaseConfig, LeaseElector, LeaseError
from modeltrust.chain.storage import SQLiteLedgerStore, WriterLockError
from modeltrust.cli.main import main

LEASE = "ledger-writer"


def _lease_options(namespace: str, seconds: int = 3) -> tuple[str, ...]:
    return (
        "--writer-lease-name", LEASE, "--writer-lease-namespace", namespace,
        "--writer-lease", str(seconds),
    )  # fmt: skip


def _log(workdir: Path) -> str:
    return next(workdir.glob("ledger-*.log")).read_text()


def _verify(db: str, verifier_key: str, sizes: list[int]) -> None:
    assert sizes == sorted(set(sizes)), f"two blocks share a size, or sizes went back: {sizes}"
    result = CliRunner().invoke(
        main, ["ledger", "verify", "--db", db, "--verifier-key", verifier_key, "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert f"OK: {sizes[-1]} entries in {len(sizes)} blocks" in result.output


def test_a_leased_writer_keeps_out_writers_outside_the_lease(tmp_path: Path) -> None:
    """The file lock is the second guard: shared among Lease-elected writers, exclusive
    for a writer that decides alone, so the two kinds never run on one file together."""
    db = tmp_path / "l.db"
    leased = SQLiteLedgerStore(db, writer=True, leased=True)
    other_leased = SQLiteLedgerStore(db, writer=True, leased=True)  # the Lease decides
    with pytest.raises(WriterLockError, match="--writer-lease-name"):
        SQLiteLedgerStore(db, writer=True)
    leased.close()
    other_leased.close()
    alone = SQLiteLedgerStore(db, writer=True)
    with pytest.raises(WriterLockError, match="not elected by the writer Lease"):
        SQLiteLedgerStore(db, writer=True, leased=True)
    alone.close()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("paused", ["idle", "under-load", "mid-commit"])
def test_a_paused_lease_holder_is_fenced_after_a_standby_takes_over(
    tmp_path: Path,
    cluster: Cluster,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    paused: str,
) -> None:
    """Idle, A holds no SQLite lock when paused: B serves one Lease after A's last renewal.
    Under load, A is often paused inside a commit ("mid-commit" makes sure of it), holding
    SQLite's write lock: B takes the Lease but waits for that commit, which A finishes when
    resumed, acknowledging nothing. Either way A never signs or acknowledges again, exits,
    and B continues the log."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    keys = make_keys(tmp_path / "k")
    db = str(tmp_path / "l.db")
    lease = _lease_options(namespace)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        ledger_subprocess(keys, db, tmp_path / "a", *lease) as (a, url_a),
        ledger_subprocess(keys, db, tmp_path / "b", *lease, wait=False) as (b, url_b),
    ):
        holder_a = lease_holder(cluster.kubeconfig, namespace, LEASE)
        assert (holder_a or "").endswith(f"/{a.pid}"), holder_a
        wait_for("B to wait as a standby", lambda: "standby: waiting" in _log(tmp_path / "b"))
        load = Load([url_a, url_b], keys.verifier_key).start()
        wait_for("A to acknowledge entries", lambda: len(load.acked) >= 50, timeout=60)
        if paused == "idle":
            load.stop()
        if paused == "mid-commit":
            _pause_inside_a_commit(a, db)
        else:
            a.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        sizes_while_paused = block_sizes(db)
        try:
            wait_for(
                "B to take the Lease",
                lambda: (lease_holder(cluster.kubeconfig, namespace, LEASE) or "").endswith(
                    f"/{b.pid}"
                ),
                timeout=30,
            )
            took_lease = time.monotonic() - paused_at
            try:
                wait_ready(url_b, b, timeout=10)
                mid_commit = False
            except TimeoutError:
                mid_commit = True
            if paused != "under-load":
                assert mid_commit == (paused == "mid-commit"), f"paused {paused}"
            if mid_commit:
                assert "waiting for the previous writer's unfinished commit" in _log(tmp_path / "b")
            else:
                failover = time.monotonic() - paused_at
                # B serves while A is still stopped; A wrote nothing since it was paused.
                assert block_sizes(db)[: len(sizes_while_paused)] == sizes_while_paused
                if paused != "idle":
                    acked = len(load.acked)
                    wait_for("B to acknowledge entries", lambda: len(load.acked) >= acked + 50)
            load.stop()  # from here on, every new block is A's doing
            sizes_before_resume = block_sizes(db)
        finally:
            a.send_signal(signal.SIGCONT)
        # A resumes with its Lease long expired by its own clock: it refuses every append
        # (a 503, never an acknowledgement) and exits, without signing anything more.
        with (
            pytest.raises(LedgerClientError),
            LedgerClient(url_a, verifier_key=keys.verifier_key, token=TOKEN, timeout=10) as c,
        ):
            c.append(audit(2 * 10**6, key="after-resume"))
        assert a.wait(timeout=30) == 1
        a_log = _log(tmp_path / "a")
        assert "this process never signs or acknowledges again" in a_log
        exits = [line for line in a_log.splitlines() if "exiting" in line]
        # The Lease check stops it; or, resumed between that check and its commit, the
        # store's writer epoch refuses the commit (B claimed it).
        assert exits, a_log[-2000:]
        assert all(
            f"writer Lease {namespace}/{LEASE}" in e or "another sequencer took over" in e
            for e in exits
        ), exits
        if mid_commit:
            # A finished the commit it was paused in (signed while it held the Lease), and
            # nothing more; B then claimed the store and continues from that block.
            wait_ready(url_b, b, timeout=30)
            failover = time.monotonic() - paused_at
            assert len(block_sizes(db)) <= len(sizes_before_resume) + 1
        else:
            assert block_sizes(db) == sizes_before_resume, "the resumed writer committed a block"
        # B goes on: the same log, continued from the last durable checkpoint.
        after = Load([url_b], keys.verifier_key).start()
        wait_for("B to acknowledge entries", lambda: len(after.acked) >= 50)
        after.stop()
        for each in (load, after):
            check_after_failover(url_b, keys.verifier_key, each)
        assert load.seen, "the load saw no checkpoints"
    print(f"paused {paused}: B took the Lease after {took_lease:.1f} s, served after "
          f"{failover:.1f} s{' (A was mid-commit)' if mid_commit else ''}")  # fmt: skip
    # A 3 s Lease: B sees it unchanged for 3 s (first seen up to 0.3 s after A's last
    # renewal, A renews every second).
    assert took_lease < 10, f"B took the Lease {took_lease:.1f} s after A was paused"
    _verify(db, keys.verifier_key, block_sizes(db))


def _pause_inside_a_commit(proc: subprocess.Popen[bytes], db: str) -> None:
    """SIGSTOP ``proc`` at a moment it holds SQLite's write lock (inside a commit):
    stop it, try the lock, and let it run on a little if it was free."""
    rnd = random.Random(5)
    for _ in range(2000):
        proc.send_signal(signal.SIGSTOP)
        wait_for("the writer to stop", lambda: _state(proc.pid) == "T", timeout=5, every=0.001)
        probe = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return  # the write lock is held by the stopped writer
        finally:
            probe.close()
        proc.send_signal(signal.SIGCONT)
        time.sleep(rnd.uniform(0.0, 0.02))
    raise AssertionError("never caught the writer inside a commit")


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def _kill_under_load(
    keys_dir: Path, db: str, workdir: Path, options: tuple[str, ...]
) -> tuple[float, int]:
    keys = make_keys(keys_dir)
    (workdir / "a").mkdir()
    (workdir / "b").mkdir()
    with (
        ledger_subprocess(keys, db, workdir / "a", *options) as (a, url_a),
        ledger_subprocess(keys, db, workdir / "b", *options, wait=False) as (b, url_b),
    ):
        wait_for("B to wait as a standby", lambda: "standby: waiting" in _log(workdir / "b"))
        load = Load([url_a, url_b], keys.verifier_key).start()
        wait_for("A to acknowledge entries", lambda: len(load.acked) >= 100, timeout=60)
        leased = "--writer-lease-name" in options
        if leased:
            # Long enough for B's audit every 5 s to catch up with A's appends at least once.
            time.sleep(6)
        a.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        a.wait()
        wait_ready(url_b, b, timeout=60)
        failover = time.monotonic() - killed_at
        if leased:
            # It audited the log while waiting (at start, then what A appended since); after
            # taking over it audits only what came after that.
            b_log = _log(workdir / "b")
            first = re.search(r"standby: audited the log up to block (\d+)", b_log)
            last = re.search(r"audited up to block (\d+) \(tree size \d+\) while waiting", b_log)
            assert first is not None, b_log[-3000:]
            assert last is not None, b_log[-3000:]
            assert int(last.group(1)) > int(first.group(1)), (first.group(0), last.group(0))
        acked_before = len(load.acked)
        wait_for("B to acknowledge entries", lambda: len(load.acked) >= acked_before + 100)
        load.stop()
        final = check_after_failover(url_b, keys.verifier_key, load)
        assert final >= len(load.acked)
    _verify(db, keys.verifier_key, block_sizes(db))
    return failover, len(load.acked)


@pytest.mark.e2e
@pytest.mark.slow
def test_sigkill_the_lease_holder_under_load_loses_nothing_acknowledged(
    tmp_path: Path, cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    failover, _ = _kill_under_load(
        tmp_path / "k", str(tmp_path / "l.db"), tmp_path, _lease_options(namespace)
    )
    assert failover < 15, f"failover took {failover:.1f} s with a 3 s Lease"


@pytest.mark.integration
@pytest.mark.slow
def test_sigkill_the_database_lock_holder_under_load_loses_nothing_acknowledged(
    tmp_path: Path, postgres_url: str
) -> None:
    # Two `ledger serve` on one database; the killed writer's session ends with it.
    failover, _ = _kill_under_load(tmp_path / "k", postgres_url, tmp_path, ("--writer-lease", "3"))
    assert failover < 15, f"failover took {failover:.1f} s"


def test_the_writer_lease_is_for_sqlite(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    key_file = tmp_path / "k" / "checkpoint.key"
    key_file.write_text(keys.signer.signer_key() + "\n")
    result = CliRunner().invoke(
        main,
        ["ledger", "serve", "--db", "postgresql://ledger@db/ledger", "--key", str(key_file),
         "--origin", keys.signer.name, "--publishers", str(keys.publishers_dir),
         "--writer-lease-name", LEASE],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--writer-lease-name is for SQLite" in result.output
    result = CliRunner().invoke(
        main,
        ["ledger", "serve", "--db", str(tmp_path / "l.db"), "--key", str(key_file),
         "--origin", keys.signer.name, "--publishers", str(keys.publishers_dir),
         "--writer-lease-name", LEASE, "--writer-lease", "2.5"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "whole seconds, at least 3" in result.output


def _role(namespace: str, *, create: bool) -> str:
    rules = [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": [LEASE], "verbs": ["get", "update"]},
    ]  # fmt: skip
    if create:
        rules.append(
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}
        )
    return json.dumps(
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "ledger", "namespace": namespace}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "lease", "namespace": namespace}, "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "lease", "namespace": namespace},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease"},
             "subjects": [{"kind": "ServiceAccount", "name": "ledger", "namespace": namespace}]},
        ]}
    )  # fmt: skip


def _as_service_account(cluster: Cluster, namespace: str) -> KubeAPIConfig:
    def view(field: str) -> str:
        jsonpath = f"jsonpath={{.clusters[0].cluster.{field}}}"
        return cluster.kubectl("config", "view", "--raw", "--minify", "-o", jsonpath).stdout

    token = cluster.kubectl("create", "token", "ledger", "-n", namespace).stdout.strip()
    return KubeAPIConfig(
        server=view("server"), ca_file=Path(view("certificate-authority")), token=token
    )


@pytest.mark.e2e
def test_the_documented_role_is_enough_and_a_missing_verb_is_named(
    cluster: Cluster, namespace: str
) -> None:
    """docs/rbac.md's Role: get and update on the Lease by name, create on leases."""
    cluster.kubectl("apply", "-f", "-", input=_role(namespace, create=False))
    api = _as_service_account(cluster, namespace)

    async def elect(identity: str) -> LeaseElector:
        elector = LeaseElector(LeaseConfig(api, namespace, LEASE, identity, duration=3))
        try:
            await asyncio.wait_for(elector.acquire(), timeout=30)
        except BaseException:
            await elector.release()
            raise
        return elector

    async def without_create() -> None:
        # Not allowed to create the Lease: a configuration error, named, never waited out.
        with pytest.raises(LeaseError, match=r"cannot create .*HTTP 403 .*docs/rbac.md") as e:
            await elect("x/1")
        assert e.value.status == 403

    asyncio.run(without_create())
    cluster.kubectl("apply", "-f", "-", input=_role(namespace, create=True))

    async def takeover() -> None:
        first = await elect("first/1")
        assert first.fence() is None
        await asyncio.sleep(1.5)  # a renewal or so
        await first.release()  # hands it back: the next one takes it at once
        assert first.fence() is not None
        started = time.monotonic()
        second = await elect("second/2")
        assert time.monotonic() - started < 3
        assert second.fence() is None
        await second.release()

    asyncio.run(takeover())
    lease = cluster.kubectl_json("get", "lease", LEASE, "-n", namespace)
    spec = lease["spec"]
    assert isinstance(spec, dict)
    assert spec.get("holderIdentity") is None
    assert spec["leaseTransitions"] == 1


@pytest.mark.e2e
def test_a_standby_that_finds_the_log_damaged_refuses_to_take_over(
    tmp_path: Path, cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    keys = make_keys(tmp_path / "k")
    db = str(tmp_path / "l.db")
    lease = _lease_options(namespace)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with ledger_subprocess(keys, db, tmp_path / "a", *lease) as (a, url_a):
        with LedgerClient(url_a, verifier_key=keys.verifier_key, token=TOKEN) as c:
            for n in range(5):
                c.append(audit(n))
        store_sql(db, "UPDATE entries SET data = ? WHERE idx = ?", b"{}", 3)
        # B audits the log while it waits: it stops at once, naming the damage, and never
        # waits for (or takes) the Lease.
        with ledger_subprocess(keys, db, tmp_path / "b", *lease, wait=False) as (b, _):
            assert b.wait(timeout=60) == 1
        b_log = _log(tmp_path / "b")
        assert "refusing to take over" in b_log
        assert "entry 3" in b_log
        assert (lease_holder(cluster.kubeconfig, namespace, LEASE) or "").endswith(f"/{a.pid}")
