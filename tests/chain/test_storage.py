"""Ledger storage, on SQLite and on PostgreSQL: atomic appends, batched reads, lookups, and
the single-writer rule (the writer lock and the epoch that fences a writer that lost it).

Tests taking ``store`` or ``ledger_db`` run once per backend; the SQLite file's own
concerns (a garbage file, WAL checkpoints) and PostgreSQL's (sessions, the lease, the
append-only triggers, passwords in URLs) have tests of their own.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.postgres import store_sql
from modeltrust.chain.merkle import CompactRange, NodeID, inclusion_proof, leaf_hash
from modeltrust.chain.storage import (
    AppendBatch,
    LedgerIdentity,
    LedgerStore,
    NewEntry,
    SQLiteLedgerStore,
    StorageCorruptError,
    StorageError,
    StoredBlock,
    WriterLockError,
    is_database_url,
    node_position,
    open_store,
)

pytestmark = pytest.mark.integration


def _batch(rng: CompactRange, height: int, datas: list[bytes]) -> AppendBatch:
    entries, nodes = [], []
    for data in datas:
        h = leaf_hash(data)
        entries.append(NewEntry(rng.size, h, data, (("test.key", data.decode()),)))
        nodes.extend(rng.append(h))
    block = StoredBlock(height, b"{}", bytes(32), f"checkpoint {rng.size}\n", rng.size)
    return AppendBatch(entries, nodes, block)


@pytest.fixture
def store(ledger_db: str) -> Iterator[LedgerStore]:
    s = open_store(ledger_db, writer=True)
    s.initialize(LedgerIdentity("origin", "vkey", "empty\n"))
    yield s
    s.close()


@pytest.mark.unit
@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=300))
def test_node_positions_follow_append_order(n: int) -> None:
    rng = CompactRange.empty()
    positions: list[int] = []
    for i in range(n):
        positions.extend(node_position(node) for node, _ in rng.append(leaf_hash(b"%d" % i)))
    assert positions == list(range(len(positions)))


def test_appended_block_reads_back_and_serves_proofs(store: LedgerStore) -> None:
    rng = CompactRange.empty()
    datas = [b"e%d" % i for i in range(13)]
    store.append(_batch(rng, 0, datas[:5]))
    store.append(_batch(rng, 1, datas[5:]))
    assert store.tree_size() == 13
    assert [e.leaf_data for e in store.get_entries(3, 7)] == datas[3:7]
    latest = store.latest_block()
    assert latest is not None
    assert (latest.height, latest.end_index) == (1, 13)
    assert [b.height for b in store.get_blocks(0, 10)] == [0, 1]
    # Proofs built from stored nodes verify against the root computed in memory.
    want_root = rng.root()
    from modeltrust.chain.merkle import verify_inclusion

    for i in range(13):
        verify_inclusion(leaf_hash(datas[i]), i, 13, inclusion_proof(i, 13, store), want_root)
    assert CompactRange.load(13, store).root() == want_root
    assert store.find_leaf_hashes([leaf_hash(b"e4"), leaf_hash(b"nope")]) == {leaf_hash(b"e4"): 4}
    assert store.lookup("test.key", "e9", after=-1, limit=10) == [9]
    assert store.find_key_owners("test.key", ["e2", "zz"]) == {"e2": 2}


def test_a_failed_append_writes_nothing(store: LedgerStore) -> None:
    rng = CompactRange.empty()
    store.append(_batch(rng, 0, [b"a", b"b"]))
    bad = _batch(rng, 0, [b"c"])  # height 0 again: the block insert fails after entries went in
    with pytest.raises(StorageError, match="append rejected by the database"):
        store.append(bad)
    assert store.tree_size() == 2
    assert store.get_entries(2, 3) == []


def test_missing_node_is_a_clear_error(store: LedgerStore) -> None:
    with pytest.raises(KeyError, match="lacks Merkle node"):
        store.get_nodes([NodeID(3, 7)])


def test_second_writer_in_another_process_fails_clearly(ledger_db: str, store: LedgerStore) -> None:
    code = (
        "import sys\n"
        "from modeltrust.chain.storage import WriterLockError, open_store\n"
        "try:\n"
        f"    open_store({ledger_db!r}, writer=True)\n"
        "except WriterLockError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    if is_database_url(ledger_db):
        # It names the holder, as the server sees it: this test process.
        assert "another ledger writer holds the writer lock" in out.stdout
        assert f"modeltrust-ledger writer pid {os.getpid()}" in out.stdout
    else:
        assert "another sequencer process holds" in out.stdout


def test_writer_that_lost_its_epoch_cannot_commit(ledger_db: str, store: LedgerStore) -> None:
    # Simulate a takeover that bypassed the writer lock: the epoch check still refuses.
    assert store_sql(ledger_db, "UPDATE meta SET value = '99' WHERE key = 'writer_epoch'") == 1
    with pytest.raises(WriterLockError, match="took over"):
        store.append(_batch(CompactRange.empty(), 0, [b"x"]))
    assert store.tree_size() == 0


def test_reader_sees_writes_and_cannot_write(ledger_db: str, store: LedgerStore) -> None:
    reader = open_store(ledger_db, writer=False)
    store.append(_batch(CompactRange.empty(), 0, [b"x"]))
    assert reader.tree_size() == 1
    assert reader.identity() == LedgerIdentity("origin", "vkey", "empty\n")
    with pytest.raises(StorageError, match="read-only"):
        reader.append(_batch(CompactRange.empty(), 0, [b"y"]))
    reader.close()


def test_lock_is_released_on_close(ledger_db: str) -> None:
    first = open_store(ledger_db, writer=True)
    with pytest.raises(WriterLockError):
        open_store(ledger_db, writer=True)
    first.close()
    open_store(ledger_db, writer=True).close()


def test_a_waiting_writer_takes_over_and_continues_the_log(ledger_db: str) -> None:
    first = open_store(ledger_db, writer=True)
    first.initialize(LedgerIdentity("origin", "vkey", "empty\n"))
    rng = CompactRange.empty()
    first.append(_batch(rng, 0, [b"a", b"b"]))
    took_over: list[LedgerStore] = []
    waiter = threading.Thread(
        target=lambda: took_over.append(open_store(ledger_db, writer=True, writer_wait=30))
    )
    waiter.start()
    time.sleep(1.0)
    assert not took_over, "the second writer did not wait for the lock"
    first.close()
    waiter.join(timeout=30)
    (second,) = took_over
    # It sees the committed log and continues it; the old writer is gone for good.
    assert second.tree_size() == 2
    second.append(_batch(rng, 1, [b"c"]))
    assert [e.leaf_data for e in second.get_entries(0, 3)] == [b"a", b"b", b"c"]
    assert CompactRange.load(3, second).root() == rng.root()
    second.close()


def test_garbage_file_is_reported_not_crashed(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageCorruptError, match="cannot open ledger database"):
        SQLiteLedgerStore(path, writer=True)


def test_background_checkpoints_copy_the_wal_while_the_writer_keeps_writing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    store = SQLiteLedgerStore(path, writer=True, background_checkpoints=True)
    store.initialize(LedgerIdentity("origin", "vkey", "empty\n"))
    rng = CompactRange.empty()
    for height in range(5):
        store.append(_batch(rng, height, [b"h%d-%d" % (height, i) for i in range(20)]))

    def rows_in_main_file() -> int:
        # immutable=1 reads the database file alone, ignoring the WAL.
        uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
        with sqlite3.connect(uri, uri=True) as db:
            try:
                return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
            except sqlite3.OperationalError:  # the schema itself is not copied yet
                return 0

    deadline = time.monotonic() + 10
    while rows_in_main_file() < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rows_in_main_file() == 100
    # The writer goes on appending after checkpoints, and everything reads back.
    store.append(_batch(rng, 5, [b"last"]))
    assert store.tree_size() == 101
    store.close()
    assert not [t for t in threading.enumerate() if t.name == "ledger-wal-checkpoint"]
    reader = SQLiteLedgerStore(path, writer=False)
    assert reader.tree_size() == 101
    assert CompactRange.load(101, reader).root() == rng.root()
    reader.close()
