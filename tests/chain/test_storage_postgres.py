"""PostgreSQL storage's own concerns, on a real server: the writer's session and lease, a
paused or stalled writer and the standby that takes over (fencing), readers that
reconnect, append-only tables, and passwords kept out of messages.

The behaviour both backends share is tested in test_storage.py (once per backend).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from harness.postgres import PostgresServer
from harness.waiting import wait_for
from modeltrust.chain.merkle import CompactRange, leaf_hash
from modeltrust.chain.storage import (
    AppendBatch,
    LedgerIdentity,
    LedgerStore,
    NewEntry,
    StorageError,
    StoredBlock,
    WriterLockError,
    open_store,
    redact_database_url,
)
from modeltrust.chain.storage_postgres import LOCK_KEYS, WRITER_APPLICATION

pytestmark = pytest.mark.integration


def _batch(rng: CompactRange, height: int, datas: list[bytes]) -> AppendBatch:
    entries, nodes = [], []
    for data in datas:
        h = leaf_hash(data)
        entries.append(NewEntry(rng.size, h, data, ()))
        nodes.extend(rng.append(h))
    block = StoredBlock(height, b"{}", bytes(32), f"checkpoint {rng.size}\n", rng.size)
    return AppendBatch(entries, nodes, block)


@pytest.fixture
def writer(postgres_url: str) -> Iterator[LedgerStore]:
    store = open_store(postgres_url, writer=True, writer_lease=1.0)
    store.initialize(LedgerIdentity("origin", "vkey", "empty\n"))
    yield store
    store.close()


def _backend_pids(url: str, application_prefix: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s "
            "AND datname = current_database()",
            (application_prefix + "%",),
        ).fetchall()
    return [r[0] for r in rows]


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_the_log_tables_are_append_only_in_the_database(
    postgres_url: str, writer: LedgerStore
) -> None:
    writer.append(_batch(CompactRange.empty(), 0, [b"a", b"b"]))
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("SET search_path = modeltrust_ledger")
        for sql in (
            "UPDATE entries SET data = 'x' WHERE idx = 0",
            "DELETE FROM nodes",
            "TRUNCATE blocks",
            "DELETE FROM lookup",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                db.execute(sql)
    assert [e.leaf_data for e in writer.get_entries(0, 2)] == [b"a", b"b"]


def test_an_idle_writer_keeps_its_lock_past_the_lease(
    postgres_url: str, writer: LedgerStore
) -> None:
    time.sleep(3.0)  # three leases without an append: the heartbeat keeps the session
    assert writer.lost_writer_lock() is None
    writer.append(_batch(CompactRange.empty(), 0, [b"a"]))
    with pytest.raises(WriterLockError, match="holds the writer lock"):
        open_store(postgres_url, writer=True)


def test_a_writer_whose_session_was_ended_stops_and_says_why(
    postgres_url: str, writer: LedgerStore
) -> None:
    (pid,) = _backend_pids(postgres_url, f"{WRITER_APPLICATION} pid {os.getpid()}")
    _terminate(postgres_url, pid)
    # The heartbeat notices within a fifth of the lease; no append is needed to stop.
    wait_for("the writer to notice", lambda: writer.lost_writer_lock() is not None, timeout=10)
    assert "must stop writing" in str(writer.lost_writer_lock())
    with pytest.raises(WriterLockError, match=r"session .* ended"):
        writer.append(_batch(CompactRange.empty(), 0, [b"a"]))
    # The lock went with the session: another writer takes over at once.
    open_store(postgres_url, writer=True).close()


# A writer in a child process, for SIGSTOP: it appends block 0, says "ready", then appends
# block 1 for each line it reads, printing what happened.
_CHILD_WRITER = textwrap.dedent(
    """
    import sys
    from modeltrust.chain.merkle import CompactRange, leaf_hash
    from modeltrust.chain.storage import (
        AppendBatch, LedgerIdentity, NewEntry, StoredBlock, WriterLockError, open_store)

    store = open_store(sys.argv[1], writer=True, writer_lease=1.0)
    store.initialize(LedgerIdentity("origin", "vkey", "empty\\n"))
    rng = CompactRange.empty()
    def append(height, data):
        h = leaf_hash(data)
        entry = NewEntry(rng.size, h, data, ())
        nodes = list(rng.append(h))
        block = StoredBlock(height, b"{}", bytes(32), f"checkpoint {rng.size}\\n", rng.size)
        store.append(AppendBatch([entry], nodes, block))
    append(0, b"from A, 0")
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            append(1, b"from A, 1")
            print("appended", flush=True)
        except WriterLockError as exc:
            print(f"refused: {exc}", flush=True)
    """
)


def test_a_paused_writer_loses_the_lock_and_never_commits_again(postgres_url: str) -> None:
    a = subprocess.Popen(
        [sys.executable, "-c", _CHILD_WRITER, postgres_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert a.stdout is not None
        assert a.stdin is not None
        assert a.stdout.readline() == "ready\n"
        a.send_signal(signal.SIGSTOP)
        # B waits as a standby; the server ends A's silent session after one lease.
        started = time.monotonic()
        b = open_store(postgres_url, writer=True, writer_wait=30, writer_lease=1.0)
        took = time.monotonic() - started
        assert took < 10, f"the takeover took {took:.1f} s with a 1 s lease"
        assert b.tree_size() == 1  # the log continues from A's last committed block
        rng = CompactRange.load(1, b)
        b.append(_batch(rng, 1, [b"from B, 1"]))
        a.send_signal(signal.SIGCONT)
        a.stdin.write("append\n")
        a.stdin.flush()
        answer = a.stdout.readline()
        assert answer.startswith("refused: "), answer
        assert "must stop writing" in answer
        # Nothing forked: one block per height, B's entry at index 1.
        assert [blk.end_index for blk in b.get_blocks(0, 10)] == [1, 2]
        assert [e.leaf_data for e in b.get_entries(0, 10)] == [b"from A, 0", b"from B, 1"]
        b.close()
    finally:
        a.send_signal(signal.SIGCONT)
        a.kill()
        a.wait()


def test_a_standby_ends_a_stalled_writer_session(postgres_url: str) -> None:
    # A session that took the lock as a ledger writer and then went silent without the
    # server's idle timeouts (as a writer stopped half-way through a request looks).
    stalled = psycopg.connect(
        postgres_url, autocommit=True, application_name=f"{WRITER_APPLICATION} stalled"
    )
    stalled.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEYS)
    started = time.monotonic()
    b = open_store(postgres_url, writer=True, writer_wait=30, writer_lease=1.0)
    # Ended after twice the lease of silence, not before.
    assert 2.0 <= time.monotonic() - started < 15
    with pytest.raises(psycopg.OperationalError):
        stalled.execute("SELECT 1")
    b.close()
    stalled.close()


def test_a_standby_leaves_sessions_that_are_not_ledger_writers_alone(postgres_url: str) -> None:
    # An operator holding the lock by hand (psql) is waited for, never ended.
    other = psycopg.connect(postgres_url, autocommit=True, application_name="psql")
    other.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEYS)
    with pytest.raises(WriterLockError, match=r"waited 3 s\): psql \(server pid"):
        open_store(postgres_url, writer=True, writer_wait=3, writer_lease=1.0)
    assert other.execute("SELECT 1").fetchone() == (1,)
    other.close()


def test_a_reader_reconnects_after_its_session_ends(postgres_url: str, writer: LedgerStore) -> None:
    writer.append(_batch(CompactRange.empty(), 0, [b"a"]))
    reader = open_store(postgres_url, writer=False)
    assert reader.tree_size() == 1
    for pid in _backend_pids(postgres_url, "modeltrust-ledger reader"):
        _terminate(postgres_url, pid)
    assert reader.tree_size() == 1
    reader.close()


def test_a_reader_of_a_database_without_a_ledger_is_told_so(postgres_url: str) -> None:
    with pytest.raises(StorageError, match="holds no ledger"):
        open_store(postgres_url, writer=False)


def test_writers_wait_for_each_other_without_interleaving(postgres_url: str) -> None:
    # Many would-be writers racing for the lock: at most one holds it at any time.
    holding, most = [0], [0]
    guard = threading.Lock()

    def write_once() -> None:
        store = open_store(postgres_url, writer=True, writer_wait=60)
        with guard:
            holding[0] += 1
            most[0] = max(most[0], holding[0])
        time.sleep(0.05)
        with guard:
            holding[0] -= 1
        store.close()

    threads = [threading.Thread(target=write_once) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert most[0] == 1


def test_passwords_stay_out_of_messages(postgres_server: PostgresServer) -> None:
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{postgres_server.port}/no_such_db"
    with pytest.raises(StorageError) as failure:
        open_store(url, writer=False)
    assert "s3cret-pw" not in str(failure.value)
    assert "postgres:***@127.0.0.1" in str(failure.value)
    assert "no_such_db" in str(failure.value)


@pytest.mark.unit
def test_database_urls_are_shown_without_their_password() -> None:
    assert redact_database_url("postgresql://ledger:pw@db:5432/l") == (
        "postgresql://ledger:***@db:5432/l"
    )
    assert redact_database_url("postgresql://db/l?sslmode=require&password=pw") == (
        "postgresql://db/l?sslmode=require&password=***"
    )
    assert redact_database_url("postgresql://ledger@db/l") == "postgresql://ledger@db/l"


def test_a_role_without_create_needs_the_schema_made_for_it(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE ROLE ledger_nocreate LOGIN")
    url = postgres_url.replace("postgres@", "ledger_nocreate@")
    try:
        # It may not create the schema: told so, naming the store, no driver traceback.
        with pytest.raises(StorageError, match=r"opening the ledger database .* failed: .*perm"):
            open_store(url, writer=True)
        # A DBA makes the schema for it (docs/ledger.md): the role creates its tables there.
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("CREATE SCHEMA modeltrust_ledger AUTHORIZATION ledger_nocreate")
        store = open_store(url, writer=True)
        store.initialize(LedgerIdentity("origin", "vkey", "empty\n"))
        store.append(_batch(CompactRange.empty(), 0, [b"a"]))
        store.close()
        reader = open_store(postgres_url, writer=False)
        assert reader.tree_size() == 1
        reader.close()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute("DROP SCHEMA IF EXISTS modeltrust_ledger CASCADE")
            db.execute("DROP ROLE ledger_nocreate")
