"""Ledger storage: the narrow interface the sequencer and server use, and its SQLite backend.

Why one long module: the interface and its one file-based backend change together; the
SQL and the invariants it keeps (append-only rows, tree nodes, checkpoints) are read as
one. The PostgreSQL backend (``storage_postgres.py``) implements the same interface with
the same tables; :func:`open_store` picks one from the configured location (a file path,
or a ``postgresql://`` URL).

The interface (:class:`LedgerStore`) is deliberately small: one atomic ``append`` per
block, batched reads, and a handful of exact-match lookups. Nothing in it knows about
HTTP or about the entry schema; the sequencer derives lookup keys (see ``lookup.py``).

Who may sequence is an explicit decision made when a store is opened for writing: the
SQLite backend holds an exclusive ``flock`` on ``<db>.lock`` for the life of the
process, and every append checks, inside its transaction, that this process's writer
epoch (bumped at open) is still the current one. A second writer therefore fails to
open, and an old writer whose lock was somehow bypassed can no longer commit: the log
never forks. (PostgreSQL: an advisory lock held by the writer's session, and the same
epoch check.)

Durability: WAL with ``synchronous=FULL`` syncs the WAL at every commit, and the
sequencer acknowledges only after ``append`` returned, so a crash loses nothing that
was acknowledged. Group commit keeps this to one fsync per block.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modeltrust.chain.errors import ChainError, MissingNodeError
from modeltrust.chain.merkle import NodeID
from modeltrust.chain.wal_checkpoint import WRITER_AUTOCHECKPOINT_PAGES, WalCheckpointer

log = logging.getLogger("modeltrust.ledger.storage")


class StorageError(ChainError):
    """The store cannot be opened, read or written as asked."""


class WriterLockError(StorageError):
    """Another sequencer holds (or took over) this store: refusing to write."""


class StorageCorruptError(StorageError):
    """The store's contents are not what the ledger wrote (broken file, edited rows)."""


@dataclass(frozen=True, slots=True)
class NewEntry:
    """One leaf to append, with the exact-match lookup keys that should find it."""

    index: int
    leaf_hash: bytes
    leaf_data: bytes
    lookup_keys: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StoredEntry:
    index: int
    leaf_hash: bytes
    leaf_data: bytes


@dataclass(frozen=True, slots=True)
class StoredBlock:
    """A block header as stored: its canonical bytes, their hash and the block's checkpoint."""

    height: int
    header: bytes
    header_hash: bytes
    checkpoint: str
    end_index: int


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Everything one block adds; a store writes it all or nothing."""

    entries: Sequence[NewEntry]
    nodes: Sequence[tuple[NodeID, bytes]]
    block: StoredBlock


@dataclass(frozen=True, slots=True)
class LedgerIdentity:
    """What a store was created for; a server refuses to sign for another origin or key."""

    origin: str
    verifier_key: str
    empty_checkpoint: str


class LedgerStore(Protocol):
    """The storage a ledger needs: SQLiteLedgerStore and PostgresLedgerStore.

    Open one with :func:`open_store`. Writers hold the writer lock from open to close.
    """

    @property
    def location(self) -> str:
        """Where the store is, for messages: a file path, or a database URL without its
        password."""
        ...

    def identity(self) -> LedgerIdentity | None: ...

    def initialize(self, identity: LedgerIdentity) -> None:
        """Record the origin, key and signed empty checkpoint of a new ledger (writer only)."""
        ...

    def tree_size(self) -> int: ...

    def latest_block(self) -> StoredBlock | None: ...

    def append(self, batch: AppendBatch) -> None:
        """Write a block's entries, nodes, header and checkpoint atomically and durably."""
        ...

    def get_nodes(self, ids: Sequence[NodeID]) -> list[bytes]: ...

    def get_entries(self, start: int, end: int) -> list[StoredEntry]: ...

    def get_blocks(self, start: int, end: int) -> list[StoredBlock]: ...

    def find_leaf_hashes(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        """Which of ``hashes`` are already leaves, and at which index."""
        ...

    def find_key_owners(self, kind: str, keys: Sequence[str]) -> dict[str, int]:
        """For unique lookup kinds (idempotency keys): the first index holding each key."""
        ...

    def lookup(self, kind: str, key: str, *, after: int, limit: int) -> list[int]:
        """Indexes of entries recorded under (kind, key), ascending, greater than ``after``."""
        ...

    def iter_node_chunks(
        self, start_pos: int = 0, chunk: int = 65536
    ) -> Iterator[list[tuple[int, bytes]]]:
        """Stored (position, hash) rows in post-order, a chunk at a time (for audits)."""
        ...

    def iter_entry_rows(
        self, start: int = 0, chunk: int = 65536
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """Raw (index, leaf hash, data) rows in index order, a chunk at a time (for audits)."""
        ...

    def lost_writer_lock(self) -> str | None:
        """Why this writer may no longer append (it lost the writer lock), else None.

        Answers from what the store already knows, without I/O: a long-running writer
        polls it so that it stops (and exits) as soon as another writer may take over,
        not only at its next append, which the epoch check would refuse anyway.
        """
        ...

    def close(self) -> None: ...


def node_position(node: NodeID) -> int:
    """Post-order position of a perfect subtree: the order in which appends complete nodes.

    Leaves ``[0, a)`` complete ``2a - popcount(a)`` nodes; the root of a perfect subtree
    of ``2**level`` leaves is the last of its ``2**(level+1) - 1`` nodes. Keying nodes by
    this position makes every block's nodes one sequential run of the table, and lets
    an audit stream stored nodes in exactly the order it recomputes them.
    """
    first_leaf = node.index << node.level
    return 2 * first_leaf - first_leaf.bit_count() + (2 << node.level) - 2


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_by_leaf_hash ON entries (leaf_hash);
CREATE TABLE IF NOT EXISTS nodes (pos INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    header BLOB NOT NULL,
    header_hash BLOB NOT NULL,
    checkpoint TEXT NOT NULL,
    end_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS lookup (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (kind, key, idx)
) WITHOUT ROWID;
"""

_MAX_SQL_VARS = 500  # stay far below SQLITE_MAX_VARIABLE_NUMBER on old builds


class SQLiteLedgerStore:
    """SQLite (WAL) ledger storage. One connection per object; use it from one thread at a time.

    Open with ``writer=True`` for the sequencer (takes the writer lock) and with
    ``writer=False`` for readers such as HTTP handlers and audits (read-only connection).
    A long-running writer should pass ``background_checkpoints=True``: WAL checkpoints
    then run on their own thread (see ``wal_checkpoint.py``) instead of inside commits.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        writer: bool,
        background_checkpoints: bool = False,
        writer_wait: float | None = 0.0,
        leased: bool = False,
    ) -> None:
        self.path = Path(path)
        self.writer = writer
        self.leased = leased
        self._lock_fd: int | None = None
        self._epoch = 0
        self._checkpointer: WalCheckpointer | None = None
        if writer:
            self._lock_fd = _take_writer_lock(self.path, writer_wait, shared=leased)
        try:
            self._db = self._connect()
            if writer:
                self._epoch = (
                    self._claim_writer_epoch_when_free() if leased else (self._claim_writer_epoch())
                )
                if background_checkpoints:
                    self._db.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
                    self._checkpointer = WalCheckpointer(self.path)
        except BaseException:
            self._db_close_quietly()
            self._release_lock()
            raise

    def _connect(self) -> sqlite3.Connection:
        if self.writer:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(_SCHEMA)
            except sqlite3.DatabaseError as exc:
                db.close()
                raise StorageCorruptError(
                    f"cannot open ledger database {self.path}: {exc}"
                ) from exc
        else:
            if not self.path.exists():
                raise StorageError(f"ledger database {self.path} does not exist")
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA cache_size=-65536")  # 64 MiB: proof reads hit upper tree levels often
        return db

    def _claim_writer_epoch(self) -> int:
        with _transaction(self._db):
            row = self._db.execute("SELECT value FROM meta WHERE key='writer_epoch'").fetchone()
            epoch = int(row[0]) + 1 if row else 1
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('writer_epoch', ?)", (str(epoch),)
            )
        return epoch

    def _claim_writer_epoch_when_free(self) -> int:
        """Leased writers: the old holder may be stopped inside a commit, holding SQLite's
        write lock; wait for it to finish (or die) rather than fail the takeover."""
        waited = 0.0
        while True:
            try:
                return self._claim_writer_epoch()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                waited += 5.0  # sqlite3's default busy timeout
                log.warning(
                    "waiting for the previous writer's unfinished commit on %s (%.0f s so far)",
                    self.path,
                    waited,
                )

    @property
    def location(self) -> str:
        return str(self.path)

    def lost_writer_lock(self) -> str | None:
        return None  # the flock is held until close: a live process cannot lose it

    # -- identity -----------------------------------------------------------------------

    def identity(self) -> LedgerIdentity | None:
        rows = dict(
            self._query(
                "SELECT key, value FROM meta WHERE key IN "
                "('origin', 'verifier_key', 'empty_checkpoint')",
                (),
            )
        )
        if not rows:
            return None
        try:
            return LedgerIdentity(
                origin=rows["origin"],
                verifier_key=rows["verifier_key"],
                empty_checkpoint=rows["empty_checkpoint"],
            )
        except KeyError as exc:
            raise StorageCorruptError(f"ledger database lacks its {exc.args[0]} record") from None

    def initialize(self, identity: LedgerIdentity) -> None:
        self._require_writer()
        with _transaction(self._db):
            self._check_epoch()
            self._db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [
                    ("origin", identity.origin),
                    ("verifier_key", identity.verifier_key),
                    ("empty_checkpoint", identity.empty_checkpoint),
                ],
            )

    # -- writes ---------------------------------------------------------------------------

    def append(self, batch: AppendBatch) -> None:
        self._require_writer()
        db = self._db
        try:
            with _transaction(db):
                self._check_epoch()
                db.executemany(
                    "INSERT INTO entries (idx, leaf_hash, data) VALUES (?, ?, ?)",
                    [(e.index, e.leaf_hash, e.leaf_data) for e in batch.entries],
                )
                db.executemany(
                    "INSERT INTO nodes (pos, hash) VALUES (?, ?)",
                    [(node_position(n), h) for n, h in batch.nodes],
                )
                db.executemany(
                    "INSERT INTO lookup (kind, key, idx) VALUES (?, ?, ?)",
                    [(k, v, e.index) for e in batch.entries for k, v in e.lookup_keys],
                )
                b = batch.block
                db.execute(
                    "INSERT INTO blocks (height, header, header_hash, checkpoint, end_index) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (b.height, b.header, b.header_hash, b.checkpoint, b.end_index),
                )
        except sqlite3.IntegrityError as exc:
            # The sequencer checks duplicates first; reaching this means state diverged.
            raise StorageError(f"append rejected by the database: {exc}") from exc
        if self._checkpointer is not None:
            nodes, keys = len(batch.nodes), sum(len(e.lookup_keys) for e in batch.entries)
            self._checkpointer.notify(len(batch.entries) + nodes + keys + 1)

    def _check_epoch(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key='writer_epoch'").fetchone()
        if row is None or int(row[0]) != self._epoch:
            raise WriterLockError(
                f"another sequencer took over {self.path} (writer epoch {row and row[0]}, "
                f"ours {self._epoch}); this process must stop writing"
            )

    # -- reads ------------------------------------------------------------------------------

    def tree_size(self) -> int:
        row = self._query_one("SELECT MAX(idx) FROM entries", ())
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def latest_block(self) -> StoredBlock | None:
        row = self._query_one(
            "SELECT height, header, header_hash, checkpoint, end_index FROM blocks "
            "ORDER BY height DESC LIMIT 1",
            (),
        )
        return block_from_row(row) if row else None

    def get_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        positions = [node_position(i) for i in ids]
        found: dict[int, bytes] = {}
        for chunk in _chunks(sorted(set(positions))):
            marks = ",".join("?" * len(chunk))
            found.update(self._query(f"SELECT pos, hash FROM nodes WHERE pos IN ({marks})", chunk))  # noqa: S608
        return nodes_in_order(ids, positions, found)

    def iter_node_chunks(
        self, start_pos: int = 0, chunk: int = 65536
    ) -> Iterator[list[tuple[int, bytes]]]:
        """Stored (position, hash) rows in post-order, a chunk at a time (for audits)."""
        sql = "SELECT pos, hash FROM nodes WHERE pos >= ? ORDER BY pos LIMIT ?"
        return keyset_pages(lambda pos: self._query(sql, (pos, chunk)), start_pos)

    def get_entries(self, start: int, end: int) -> list[StoredEntry]:
        rows = self._query(
            "SELECT idx, leaf_hash, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [StoredEntry(i, h, d) for i, h, d in rows]

    def iter_entry_rows(
        self, start: int = 0, chunk: int = 65536
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """Raw (index, leaf hash, data) rows in index order, a chunk at a time (for audits)."""
        sql = "SELECT idx, leaf_hash, data FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?"
        return keyset_pages(lambda idx: self._query(sql, (idx, chunk)), start)

    def get_blocks(self, start: int, end: int) -> list[StoredBlock]:
        rows = self._query(
            "SELECT height, header, header_hash, checkpoint, end_index FROM blocks "
            "WHERE height >= ? AND height < ? ORDER BY height",
            (start, end),
        )
        return [block_from_row(r) for r in rows]

    def block_count(self) -> int:
        row = self._query_one("SELECT MAX(height) FROM blocks", ())
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def find_leaf_hashes(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        found: dict[bytes, int] = {}
        for chunk in _chunks(list(hashes)):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT leaf_hash, idx FROM entries WHERE leaf_hash IN ({marks})"  # noqa: S608
            found.update(self._query(sql, chunk))
        return found

    def find_key_owners(self, kind: str, keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            sql = (
                f"SELECT key, MIN(idx) FROM lookup WHERE kind = ? AND key IN ({marks}) "  # noqa: S608
                "GROUP BY key"
            )
            found.update(self._query(sql, [kind, *chunk]))
        return found

    def lookup(self, kind: str, key: str, *, after: int, limit: int) -> list[int]:
        rows = self._query(
            "SELECT idx FROM lookup WHERE kind = ? AND key = ? AND idx > ? ORDER BY idx LIMIT ?",
            (kind, key, after, limit),
        )
        return [r[0] for r in rows]

    def close(self) -> None:
        try:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            self._db.close()
        finally:
            self._release_lock()

    def _db_close_quietly(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()

    # -- helpers ----------------------------------------------------------------------------

    def _require_writer(self) -> None:
        if not self.writer:
            raise StorageError(f"{self.path} was opened read-only")

    def _query(self, sql: str, params: Sequence[object]) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StorageCorruptError(f"reading {self.path} failed: {exc}") from exc

    def _query_one(self, sql: str, params: Sequence[object]) -> Any:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


# -- choosing a backend -------------------------------------------------------------------

# How long a PostgreSQL writer's session may stay silent (a paused or cut-off writer)
# before the server ends it and with it the writer lock; docs/ledger.md section 8.
DEFAULT_WRITER_LEASE = 10.0

_DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a PostgreSQL database (a URL) rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(_DATABASE_URL_SCHEMES)


def database_url_has_password(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    in_query = any(p.split("=", 1)[0] == "password" for p in parts.query.split("&"))
    return parts.password is not None or in_query


def redact_database_url(url: str) -> str:
    """``url`` with its password (user part or ``password=`` parameter) shown as ``***``:
    what messages and logs may say about a database URL."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}{':***' if colon else ''}@{hosts}"
    query = "&".join(
        "password=***" if p.split("=", 1)[0] == "password" else p for p in parts.query.split("&")
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def open_store(
    location: str | os.PathLike[str],
    *,
    writer: bool,
    background_checkpoints: bool = False,
    writer_wait: float | None = 0.0,
    writer_lease: float = DEFAULT_WRITER_LEASE,
    leased: bool = False,
) -> LedgerStore:
    """The ledger store at ``location``: PostgreSQL for a ``postgresql://`` URL, else the
    SQLite file at that path.

    ``writer=True`` takes the writer lock, waiting up to ``writer_wait`` seconds (None:
    as long as it takes, a standby) while another writer holds it, then fails with
    :class:`WriterLockError`. ``background_checkpoints`` is SQLite's (WAL checkpoints
    on their own thread); ``writer_lease`` PostgreSQL's (a silent writer's session ends
    after that many seconds, releasing the lock). ``leased`` (SQLite): the writer was
    elected by a Kubernetes Lease (k8s_lease.py), so the file lock is taken shared and
    the writer epoch claimed even if the previous holder's last commit must be waited for.
    """
    if is_database_url(location):
        try:
            from modeltrust.chain.storage_postgres import PostgresLedgerStore
        except ImportError as exc:  # psycopg comes with the optional [postgres] extra
            raise StorageError(
                "PostgreSQL storage needs psycopg: pip install 'modeltrust-chain[postgres]' "
                f"(or 'modeltrust-cli[postgres]') ({exc})"
            ) from exc
        return PostgresLedgerStore(
            str(location), writer=writer, writer_wait=writer_wait, lease=writer_lease
        )
    return SQLiteLedgerStore(
        location,
        writer=writer,
        background_checkpoints=background_checkpoints,
        writer_wait=writer_wait,
        leased=leased,
    )


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def _take_writer_lock(db_path: Path, wait: float | None, *, shared: bool = False) -> int:
    """The flock on ``<db>.lock``; waits up to ``wait`` seconds (None: for as long as it
    takes) while another process holds it.

    Exclusive for a writer that decides alone; shared for writers elected by a Lease
    (``shared``): they may all open the file, the Lease picks the one that writes, and
    the shared lock still keeps out any writer that is not under the Lease (and them
    out while such a writer runs)."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = None if wait is None else time.monotonic() + wait
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if deadline is not None and time.monotonic() >= deadline:
                os.close(fd)
                if shared:
                    raise WriterLockError(
                        f"a sequencer that is not elected by the writer Lease holds {lock_path}: "
                        "stop that `modeltrust ledger serve` (started without "
                        "--writer-lease-name) first"
                    ) from None
                raise WriterLockError(
                    f"another sequencer process holds {lock_path}: only one writer may use a "
                    "ledger database at a time (stop the other `modeltrust ledger serve` first, "
                    "or elect the writer with a Lease: --writer-lease-name)"
                ) from None
            # Polled, not a blocking flock: a blocked flock cannot be interrupted by a
            # deadline, and a takeover a quarter second late costs nothing.
            time.sleep(0.25)
    if not shared:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def keyset_pages(page: Callable[[int], list[Any]], start: int) -> Iterator[list[Any]]:
    """Rows a page at a time, each page starting after the last row's key (column 0):
    how both backends walk a table for audits without OFFSET scans."""
    key = start
    while True:
        rows = page(key)
        if not rows:
            return
        yield rows
        key = rows[-1][0] + 1


def nodes_in_order(
    ids: Sequence[NodeID], positions: Sequence[int], found: dict[int, bytes]
) -> list[bytes]:
    """The hashes of `ids` (at `positions`) from a lookup; a missing one is named."""
    try:
        return [found[p] for p in positions]
    except KeyError:
        missing = next(i for i, p in zip(ids, positions, strict=True) if p not in found)
        raise MissingNodeError(f"ledger database lacks Merkle node {missing}") from None


def block_from_row(row: tuple[object, ...]) -> StoredBlock:
    """A blocks row (height, header, header_hash, checkpoint, end_index), type-checked."""
    height, header, header_hash, checkpoint, end_index = row
    if not (
        isinstance(height, int)
        and isinstance(end_index, int)
        and isinstance(header, bytes)
        and isinstance(header_hash, bytes)
        and isinstance(checkpoint, str)
    ):
        raise StorageCorruptError(f"block row {height!r} has columns of the wrong type")
    return StoredBlock(height, header, header_hash, checkpoint, end_index)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), _MAX_SQL_VARS):
        yield items[i : i + _MAX_SQL_VARS]
