"""PostgreSQL ledger storage: the ``LedgerStore`` interface over the same tables as SQLite's,
and the writer lock as an advisory lock with fencing, so writers on several pods can share
one database and take over from each other.

Tables live in the schema ``modeltrust_ledger`` (one ledger per database): ``meta``,
``entries``, ``nodes``, ``blocks`` and ``lookup``, with the columns and keys of the SQLite
backend (``storage.py``); text keys compare bytewise (``COLLATE "C"``), as SQLite's do, and
a locale's collation would only make the lookup index slower. Parameters go in binary
(``%b``): hex-encoding bytea arrays cost more than the rest of an append. Statement
triggers refuse UPDATE, DELETE and TRUNCATE on all but ``meta``: the log is append-only
in the database itself, not only in this code.

The writer lock. A writer uses one session for everything:

* it holds a session-level advisory lock (``pg_try_advisory_lock``) from open to close, so
  the lock goes away exactly when the session does;
* after taking it, it bumps the writer epoch in ``meta``, and every append transaction
  reads the epoch row ``FOR UPDATE`` and compares: a writer whose place was taken can
  never commit again (fencing), even if it somehow still had a session;
* the session runs with ``idle_session_timeout`` and ``idle_in_transaction_session_timeout``
  set to the lease, and a heartbeat thread queries every lease/5 while nothing else does.
  A writer that stops talking (paused with SIGSTOP, cut off, its node gone) loses its
  session after one lease, by the server's clock, not the stalled writer's; a standby
  waiting in ``pg_try_advisory_lock`` then takes over and continues the log from the last
  committed block. A writer never reconnects: when its session is gone, its next append
  fails with :class:`WriterLockError` and ``modeltrust ledger serve`` exits.
* The idle timeouts do not cover a writer stopped half-way through sending a statement
  (the server is then neither idle nor running anything). A standby ends the session of
  a lock holder that has been waiting on its client that long for twice the lease
  (``pg_terminate_backend``; same database role, or ``pg_signal_backend``).

Durability: a block is one transaction, committed with ``synchronous_commit`` at least
``on`` (raised from ``off`` for the writer's session); a server with ``fsync=off`` is
reported when the writer opens.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from modeltrust.chain.merkle import NodeID
from modeltrust.chain.storage import (
    AppendBatch,
    LedgerIdentity,
    StorageCorruptError,
    StorageError,
    StoredBlock,
    StoredEntry,
    WriterLockError,
    block_from_row,
    keyset_pages,
    node_position,
    nodes_in_order,
    redact_database_url,
)

log = logging.getLogger("modeltrust.ledger")

SCHEMA = "modeltrust_ledger"
# pg_try_advisory_lock(int4, int4): 'mtrl' (modeltrust ledger), then 1: the writer.
LOCK_KEYS = (0x6D74726C, 1)
# application_name of the sessions; a standby recognises a stalled writer by it.
WRITER_APPLICATION = "modeltrust-ledger writer"
READER_APPLICATION = "modeltrust-ledger reader"
MIN_SERVER_VERSION = 140000  # idle_session_timeout appeared in PostgreSQL 14
POLL_SECONDS = 0.25  # how often a standby tries the lock
WAIT_REPORT_SECONDS = 30.0  # how often a waiting standby says whom it waits for

_TABLES_DDL: LiteralString = """
CREATE TABLE modeltrust_ledger.meta (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE modeltrust_ledger.entries (
    idx BIGINT PRIMARY KEY,
    leaf_hash BYTEA NOT NULL UNIQUE,
    data BYTEA NOT NULL
);
CREATE TABLE modeltrust_ledger.nodes (pos BIGINT PRIMARY KEY, hash BYTEA NOT NULL);
CREATE TABLE modeltrust_ledger.blocks (
    height BIGINT PRIMARY KEY,
    header BYTEA NOT NULL,
    header_hash BYTEA NOT NULL,
    checkpoint TEXT NOT NULL,
    end_index BIGINT NOT NULL
);
CREATE TABLE modeltrust_ledger.lookup (
    kind TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    idx BIGINT NOT NULL,
    PRIMARY KEY (kind, key, idx)
);
CREATE FUNCTION modeltrust_ledger.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the modeltrust ledger is append-only: % on %.% refused',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME;
END $$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON modeltrust_ledger.entries
    FOR EACH STATEMENT EXECUTE FUNCTION modeltrust_ledger.refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON modeltrust_ledger.nodes
    FOR EACH STATEMENT EXECUTE FUNCTION modeltrust_ledger.refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON modeltrust_ledger.blocks
    FOR EACH STATEMENT EXECUTE FUNCTION modeltrust_ledger.refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON modeltrust_ledger.lookup
    FOR EACH STATEMENT EXECUTE FUNCTION modeltrust_ledger.refuse_change();
"""

_LOCK_HOLDER: LiteralString = """
SELECT a.pid, a.application_name, host(a.client_addr), a.state, a.wait_event,
       EXTRACT(EPOCH FROM clock_timestamp() - a.state_change)::float8
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
  AND l.classid = %s::oid AND l.objid = %s::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class LockHolder:
    """The session holding the writer lock, as pg_stat_activity shows it."""

    pid: int
    application: str | None
    client: str | None
    state: str | None
    wait_event: str | None
    silent_seconds: float | None  # since its state last changed

    def __str__(self) -> str:
        who = self.application or "a session that did not name itself"
        where = f" from {self.client}" if self.client else ""
        return f"{who} (server pid {self.pid}{where}, {self.state or 'state unknown'})"

    def stalled(self, lease: float) -> bool:
        """A ledger writer waiting on its client for twice the lease: stopped mid-request,
        where the server's idle timeouts do not end its session."""
        return (
            (self.application or "").startswith(WRITER_APPLICATION)
            and self.wait_event == "ClientRead"
            and self.silent_seconds is not None
            and self.silent_seconds > 2 * lease
        )


class PostgresLedgerStore:
    """Ledger storage in a PostgreSQL database. One session per object; thread-safe.

    ``writer=True`` takes the writer lock, waiting up to ``writer_wait`` seconds (None:
    until it gets it) while another writer holds it; ``lease`` is how long the writer's
    session may stay silent before the server ends it (see the module docstring).
    Readers (``writer=False``) use a read-only session and reconnect if it breaks.
    """

    def __init__(
        self,
        url: str,
        *,
        writer: bool,
        writer_wait: float | None = 0.0,
        lease: float = 10.0,
    ) -> None:
        if lease <= 0:
            raise StorageError("the writer lease must be a positive number of seconds")
        self._url = url
        password = conninfo_to_dict(url).get("password")
        self._password = str(password) if password else None
        self.writer = writer
        self._lease = lease
        self._epoch = 0
        self._lock = threading.Lock()  # one statement or transaction on the session at a time
        self._last_used = time.monotonic()
        self._lost: str | None = None
        self._closing = threading.Event()
        self._heartbeat: threading.Thread | None = None
        # Named so that operators (pg_stat_activity) and standbys can tell who holds the lock.
        self._application = (
            f"{WRITER_APPLICATION} pid {os.getpid()} on {socket.gethostname()}"
            if writer
            else READER_APPLICATION
        )
        self._db = self._connect()
        try:
            if writer:
                self._prepare_writer_session()
                self._take_writer_lock(writer_wait)
                self._create_schema()
                self._epoch = self._claim_writer_epoch()
                self._heartbeat = threading.Thread(
                    target=self._beat, name="ledger-writer-heartbeat", daemon=True
                )
                self._heartbeat.start()
            else:
                self._check_schema()
        except psycopg.Error as exc:  # the server went away, a privilege is missing, ...
            self._db.close()
            raise StorageError(
                f"opening the ledger database {self.location} failed: {self._scrub(exc)}"
            ) from exc
        except BaseException:
            self._db.close()
            raise

    @property
    def location(self) -> str:
        return redact_database_url(self._url)

    # -- sessions ---------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Row]:
        try:
            db = psycopg.connect(
                self._url, autocommit=True, application_name=self._application, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot connect to the ledger database {self.location}: {self._scrub(exc)}"
            ) from exc
        try:
            # The tables' schema only, so the SQL below reads like the SQLite backend's
            # (pg_catalog is still searched first, as always).
            db.execute("SELECT set_config('search_path', %s, false)", (SCHEMA,))
            # psycopg prepares repeated statements, and after five runs PostgreSQL may plan
            # them once for any parameters: `kind = $1 AND key = ANY($2)` then scans every
            # lookup row of the kind (a third of the table) instead of seeking each key;
            # at 230k entries that query took 126 ms per block instead of 0.6 ms. Plan each run.
            db.execute("SET plan_cache_mode = force_custom_plan")
            if not self.writer:
                db.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            db.close()
            raise StorageError(f"setting up a session on {self.location}: {exc}") from exc
        return db

    def _prepare_writer_session(self) -> None:
        db = self._db
        version = db.info.server_version
        if version < MIN_SERVER_VERSION:
            raise StorageError(
                f"the ledger needs PostgreSQL 14 or later (idle_session_timeout); "
                f"{self.location} runs {version // 10000}"
            )
        timeout = f"{round(self._lease * 1000)}ms"
        db.execute(
            "SELECT set_config('idle_session_timeout', %s, false), "
            "set_config('idle_in_transaction_session_timeout', %s, false)",
            (timeout, timeout),
        )
        if _setting(db, "synchronous_commit") == "off":
            # An acknowledged entry must survive a crash of the server: commit durably.
            db.execute("SET synchronous_commit = on")
        if _setting(db, "fsync") == "off":
            log.warning(
                "the ledger database server runs with fsync=off: a crash of it can lose "
                "acknowledged entries and leave a log that no longer matches signed checkpoints"
            )

    def _take_writer_lock(self, wait: float | None) -> None:
        deadline = None if wait is None else time.monotonic() + wait
        reported_at: float | None = None
        told_termination_failed = False
        while True:
            row = self._db.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS).fetchone()
            if row is not None and row[0]:
                if reported_at is not None:
                    log.info("took the writer lock of %s", self.location)
                return
            holder = self._lock_holder()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                waited = f" (waited {wait:g} s)" if wait else ""
                raise WriterLockError(
                    f"another ledger writer holds the writer lock of {self.location}{waited}: "
                    f"{holder or 'a session that just ended'}. Only one writer may append at "
                    "a time; a standby waits for the lock instead (--writer-wait)"
                )
            if reported_at is None or now - reported_at >= WAIT_REPORT_SECONDS:
                log.info(
                    "standby: waiting for the writer lock of %s, held by %s",
                    self.location,
                    holder or "a session that just ended",
                )
                reported_at = now
            if holder is not None and holder.stalled(self._lease):
                try:
                    self._db.execute("SELECT pg_terminate_backend(%s)", (holder.pid,))
                    log.warning(
                        "ended the session of the stalled writer %s: it had been waiting on "
                        "its client for %.0f s, over twice the %.0f s lease",
                        holder,
                        holder.silent_seconds,
                        self._lease,
                    )
                except pg_errors.InsufficientPrivilege as exc:
                    if not told_termination_failed:
                        log.warning(
                            "cannot end the session of the stalled writer %s (%s): waiting "
                            "for it to resume or its connection to drop",
                            holder,
                            exc,
                        )
                        told_termination_failed = True
            time.sleep(POLL_SECONDS)

    def _lock_holder(self) -> LockHolder | None:
        row = self._db.execute(_LOCK_HOLDER, LOCK_KEYS).fetchone()
        if row is None:
            return None
        return LockHolder(*row)

    def _create_schema(self) -> None:
        """Create the tables on first use; in one transaction, so never half of them."""
        db = self._db
        with db.transaction():
            if db.execute("SELECT to_regclass('modeltrust_ledger.meta')").fetchone() != (None,):
                return
            # Only when missing: CREATE SCHEMA needs CREATE on the database even with IF NOT
            # EXISTS, and a DBA may have made the schema for a role that lacks it.
            if db.execute("SELECT to_regnamespace(%s)", (SCHEMA,)).fetchone() == (None,):
                db.execute("CREATE SCHEMA modeltrust_ledger")
            db.execute(_TABLES_DDL)

    def _check_schema(self) -> None:
        if self._db.execute("SELECT to_regclass('modeltrust_ledger.meta')").fetchone() == (None,):
            self._db.close()
            raise StorageError(
                f"the database {self.location} holds no ledger (no {SCHEMA} schema): its "
                "writer (`modeltrust ledger serve`) creates it"
            )

    def _claim_writer_epoch(self) -> int:
        row = self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('writer_epoch', '1') "
            "ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + 1)::text "
            "RETURNING value"
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _beat(self) -> None:
        """Keeps an idle writer's session from reaching idle_session_timeout; notices
        when the session has ended (the lock with it)."""
        interval = self._lease / 5
        while not self._closing.wait(interval):
            with self._lock:
                if self._lost is not None:
                    return
                if time.monotonic() - self._last_used < interval:
                    continue
                try:
                    self._db.execute("SELECT 1")
                    self._last_used = time.monotonic()
                except psycopg.Error as exc:
                    self._lost = self._session_lost_message(exc)
                    log.error("%s", self._lost)
                    return

    def lost_writer_lock(self) -> str | None:
        return self._lost

    def _session_lost_message(self, exc: BaseException) -> str:
        return (
            f"the ledger writer's session on {self.location} ended ({self._scrub(exc)}); the "
            "writer lock went with it and another writer may have taken over, so this process "
            "must stop writing"
        )

    def _failure(self, exc: psycopg.Error, doing: str) -> StorageError:
        """What a failed statement means: a writer whose session broke lost the lock."""
        if self.writer and (self._db.broken or self._db.closed):
            self._lost = self._lost or self._session_lost_message(exc)
            return WriterLockError(self._lost)
        return StorageError(f"{doing} {self.location} failed: {self._scrub(exc)}")

    def _scrub(self, exc: BaseException) -> str:
        """An error's text without the password, should a driver message ever echo it."""
        text = " ".join(str(exc).split())  # libpq's messages span lines; a log line should not
        return text.replace(self._password, "***") if self._password else text

    # -- identity -----------------------------------------------------------------------------

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
        self._write(
            lambda cur: cur.execute(
                "INSERT INTO meta (key, value) VALUES "
                "('origin', %s), ('verifier_key', %s), ('empty_checkpoint', %s)",
                (identity.origin, identity.verifier_key, identity.empty_checkpoint),
            )
        )

    # -- writes -------------------------------------------------------------------------------

    def append(self, batch: AppendBatch) -> None:
        self._require_writer()
        entries = batch.entries
        lookups = [(k, v, e.index) for e in entries for k, v in e.lookup_keys]
        b = batch.block

        def insert(cur: psycopg.Cursor[Row]) -> None:
            # One statement per table, the rows as arrays: a block of 2048 entries is five
            # round trips, not thousands.
            if entries:
                cur.execute(
                    "INSERT INTO entries (idx, leaf_hash, data) "
                    "SELECT * FROM unnest(%b::int8[], %b::bytea[], %b::bytea[])",
                    (
                        [e.index for e in entries],
                        [e.leaf_hash for e in entries],
                        [e.leaf_data for e in entries],
                    ),
                )
            if batch.nodes:
                cur.execute(
                    "INSERT INTO nodes (pos, hash) SELECT * FROM unnest(%b::int8[], %b::bytea[])",
                    ([node_position(n) for n, _ in batch.nodes], [h for _, h in batch.nodes]),
                )
            if lookups:
                cur.execute(
                    "INSERT INTO lookup (kind, key, idx) "
                    "SELECT * FROM unnest(%b::text[], %b::text[], %b::int8[])",
                    (
                        [k for k, _, _ in lookups],
                        [v for _, v, _ in lookups],
                        [i for *_, i in lookups],
                    ),
                )
            cur.execute(
                "INSERT INTO blocks (height, header, header_hash, checkpoint, end_index) "
                "VALUES (%s, %s, %s, %s, %s)",
                (b.height, b.header, b.header_hash, b.checkpoint, b.end_index),
            )

        self._write(insert)

    def _write(self, statements: Callable[[psycopg.Cursor[Row]], object]) -> None:
        """Run ``statements(cursor)`` in one transaction that first checks the writer epoch."""
        with self._lock:
            if self._lost is not None:
                raise WriterLockError(self._lost)
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    self._check_epoch(cur)
                    statements(cur)
                self._last_used = time.monotonic()
            except pg_errors.IntegrityError as exc:
                # The sequencer checks duplicates first; reaching this means state diverged.
                raise StorageError(f"append rejected by the database: {exc}") from exc
            except psycopg.Error as exc:
                raise self._failure(exc, "writing to") from exc

    def _check_epoch(self, cur: psycopg.Cursor[Row]) -> None:
        # FOR UPDATE: a writer taking over bumps this row, so it waits for this transaction
        # to end, and this transaction sees any bump that committed before it.
        row = cur.execute("SELECT value FROM meta WHERE key = 'writer_epoch' FOR UPDATE").fetchone()
        if row is None or int(row[0]) != self._epoch:
            raise WriterLockError(
                f"another sequencer took over {self.location} (writer epoch {row and row[0]}, "
                f"ours {self._epoch}); this process must stop writing"
            )

    # -- reads ----------------------------------------------------------------------------------

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
        found: dict[int, bytes] = dict(
            self._query(
                "SELECT pos, hash FROM nodes WHERE pos = ANY(%s::int8[])", (sorted(set(positions)),)
            )
        )
        return nodes_in_order(ids, positions, found)

    def iter_node_chunks(
        self, start_pos: int = 0, chunk: int = 65536
    ) -> Iterator[list[tuple[int, bytes]]]:
        sql = "SELECT pos, hash FROM nodes WHERE pos >= %s ORDER BY pos LIMIT %s"
        return keyset_pages(lambda pos: self._query(sql, (pos, chunk)), start_pos)

    def get_entries(self, start: int, end: int) -> list[StoredEntry]:
        rows = self._query(
            "SELECT idx, leaf_hash, data FROM entries WHERE idx >= %s AND idx < %s ORDER BY idx",
            (start, end),
        )
        return [StoredEntry(i, h, d) for i, h, d in rows]

    def iter_entry_rows(
        self, start: int = 0, chunk: int = 65536
    ) -> Iterator[list[tuple[int, bytes, bytes]]]:
        sql = "SELECT idx, leaf_hash, data FROM entries WHERE idx >= %s ORDER BY idx LIMIT %s"
        return keyset_pages(lambda idx: self._query(sql, (idx, chunk)), start)

    def get_blocks(self, start: int, end: int) -> list[StoredBlock]:
        rows = self._query(
            "SELECT height, header, header_hash, checkpoint, end_index FROM blocks "
            "WHERE height >= %s AND height < %s ORDER BY height",
            (start, end),
        )
        return [block_from_row(r) for r in rows]

    def block_count(self) -> int:
        row = self._query_one("SELECT MAX(height) FROM blocks", ())
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def find_leaf_hashes(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        if not hashes:
            return {}
        rows = self._query(
            "SELECT leaf_hash, idx FROM entries WHERE leaf_hash = ANY(%b::bytea[])", (list(hashes),)
        )
        return dict(rows)

    def find_key_owners(self, kind: str, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        rows = self._query(
            "SELECT key, MIN(idx) FROM lookup WHERE kind = %s AND key = ANY(%b::text[]) "
            "GROUP BY key",
            (kind, list(keys)),
        )
        return dict(rows)

    def lookup(self, kind: str, key: str, *, after: int, limit: int) -> list[int]:
        rows = self._query(
            "SELECT idx FROM lookup WHERE kind = %s AND key = %s AND idx > %s "
            "ORDER BY idx LIMIT %s",
            (kind, key, after, limit),
        )
        return [r[0] for r in rows]

    def close(self) -> None:
        self._closing.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        with self._lock:
            self._db.close()  # ends the session: the server releases the writer lock

    # -- helpers ----------------------------------------------------------------------------------

    def _require_writer(self) -> None:
        if not self.writer:
            raise StorageError(f"{self.location} was opened read-only")

    def _query(self, sql: LiteralString, params: Sequence[object]) -> list[Any]:
        for attempt in (1, 2):
            with self._lock:
                if self.writer and self._lost is not None:
                    raise WriterLockError(self._lost)
                try:
                    rows = self._db.execute(sql, params).fetchall()
                    self._last_used = time.monotonic()
                    return rows
                except psycopg.Error as exc:
                    failure = self._failure(exc, "reading")
                    # A reader holds nothing: after its session broke (a database restart,
                    # a dropped connection) it reconnects once and asks again.
                    if self.writer or attempt == 2 or not self._db.broken:
                        raise failure from exc
                    self._db.close()
                    self._db = self._connect()
        raise AssertionError("unreachable")

    def _query_one(self, sql: LiteralString, params: Sequence[object]) -> Any:
        rows = self._query(sql, params)
        return rows[0] if rows else None


def _setting(db: psycopg.Connection[Row], name: str) -> str:
    row = db.execute("SELECT current_setting(%s)", (name,)).fetchone()
    return str(row[0]) if row else ""
