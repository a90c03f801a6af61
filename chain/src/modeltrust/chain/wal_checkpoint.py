"""Background WAL checkpoints for the ledger's SQLite writer.

By default SQLite copies the write-ahead log back into the database file inside the
commit that pushes the WAL past 1000 pages: that commit then also writes and fsyncs
up to 4 MiB of random pages, and every append waiting on its block waits for that
too (the latency tail of appends under load). This checkpointer does that copying on
its own thread and connection instead, shortly after commits, while the sequencer
goes on committing: SQLite lets a PASSIVE checkpoint run beside a writer, and the
sqlite3 module releases the GIL while it works.

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
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` after commits, at most every ``min_gap`` s."""

    def __init__(self, path: Path, *, min_gap: float = 0.02) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._min_gap = min_gap
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.checkpoints = 0  # completed runs, for tests and curiosity
        self._thread = threading.Thread(target=self._run, name="ledger-wal-checkpoint", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A commit happened: checkpoint soon."""
        self._wake.set()

    def close(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join()
        self._db.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as exc:  # nothing is lost; the next commit tries again
                log.warning("background WAL checkpoint failed (will retry): %s", exc)
            # Let a few commits gather, so a hot page is copied once for all of them.
            if self._stopping.wait(self._min_gap):
                return
