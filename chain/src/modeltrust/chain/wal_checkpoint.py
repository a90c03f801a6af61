"""Background WAL checkpoints for the ledger's SQLite writer.

By default SQLite copies the write-ahead log back into the database file inside the
commit that pushes the WAL past 1000 pages: that commit then also writes and fsyncs
up to 4 MiB of random pages, and every append waiting on its block waits for that
too (the latency tail of appends under load). This checkpointer does that copying on
its own thread and connection instead, once commits have written about as much, while
the sequencer goes on committing: SQLite lets a PASSIVE checkpoint run beside a
writer, and the sqlite3 module releases the GIL while it works.

A checkpoint never decides durability (a commit is durable once its WAL frames are
synced), so a failed or skipped checkpoint loses nothing: the frames stay in the WAL,
and the writer's own, much larger autocheckpoint limit still bounds the WAL's size.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("modeltrust.ledger")

# The writer's own autocheckpoint, kept as a bound on the WAL should this thread fall
# behind (pages; 64 MiB at SQLite's default 4 KiB page size).
WRITER_AUTOCHECKPOINT_PAGES = 16384


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` once commits have written about
    ``rows_per_checkpoint`` rows, or ``idle`` seconds after the last commit.

    Waiting for SQLite's usual amount of WAL (1000 pages; a row dirties at most about
    one page) lets a page that many small commits touch be copied once, not per commit.
    """

    def __init__(self, path: Path, *, rows_per_checkpoint: int = 1000, idle: float = 1.0) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._rows_per_checkpoint = rows_per_checkpoint
        self._idle = idle
        self._pending_rows = 0  # updated under the GIL; a lost increment only delays a run
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.checkpoints = 0  # completed runs, for tests and curiosity
        self._thread = threading.Thread(target=self._run, name="ledger-wal-checkpoint", daemon=True)
        self._thread.start()

    def notify(self, rows: int) -> None:
        """A commit wrote ``rows`` rows."""
        self._pending_rows += rows
        if self._pending_rows >= self._rows_per_checkpoint:
            self._wake.set()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._idle)
            if self._stopping.is_set():
                return
            self._wake.clear()
            if not self._pending_rows:
                continue
            self._pending_rows = 0
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # nothing is lost; a later run tries again
                log.warning("background WAL checkpoint failed (will retry): %s", exc)
