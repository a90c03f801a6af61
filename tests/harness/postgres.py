"""A real PostgreSQL server for tests: Debian's binaries, a cluster made with `initdb` in a
temporary directory, `postgres` on a free loopback port with its unix socket in that
directory. No system service, nothing outside the directory; stopped and removed at the end.

PostgreSQL refuses to run as root: when the tests run as root, the server runs as `nobody`
(Popen's user/group), and the directory is handed to it. Clients connect over TCP to
127.0.0.1 as the superuser `postgres`, with `trust` authentication (loopback only).

    python -m harness.postgres     # start one and print its URL until Ctrl-C (debugging)
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import LiteralString

import psycopg
import psycopg.sql

from harness.ledger import free_port
from modeltrust.chain.storage import is_database_url

SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The PostgreSQL server for the tests could not be set up."""


def postgres_bin_dir() -> Path:
    """Where initdb and postgres are: $MODELTRUST_POSTGRES_BIN, else the newest
    /usr/lib/postgresql/<version>/bin (Debian's `postgresql` package)."""
    named = os.environ.get("MODELTRUST_POSTGRES_BIN")
    if named:
        return Path(named)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p)],
    )
    if not found:
        raise PostgresError(
            "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install Debian's "
            "`postgresql` package (tests/cluster/install-node-deps.sh does), or name the "
            "directory in MODELTRUST_POSTGRES_BIN"
        )
    return Path(found[-1]).parent


class PostgresServer:
    """One server; `start()`, `create_database()` per test, `stop()`."""

    def __init__(
        self,
        workdir: Path,
        *,
        listen: Sequence[str] = ("127.0.0.1",),
        password_from: Sequence[str] = (),
    ) -> None:
        """`listen`: the addresses it listens on (pods reach the host at another one);
        `password_from`: CIDRs from which roles may log in with a password (scram-sha-256),
        besides the superuser's trusted loopback."""
        self.workdir = workdir
        self.listen = tuple(listen)
        self.password_from = tuple(password_from)
        self.data = workdir / "data"
        self.log = workdir / "postgres.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()
        self.bin = postgres_bin_dir()
        # Run as `nobody` when we are root: postgres will not run as root.
        self._user = "nobody" if os.geteuid() == 0 else None
        entry = pwd.getpwnam(self._user) if self._user else None
        self._uid = entry.pw_uid if entry else None
        self._gid = entry.pw_gid if entry else None
        self._groups: list[int] | None = [] if entry else None  # nobody's own group only

    def start(self) -> None:
        if self._uid is not None and self._gid is not None:
            os.chown(self.workdir, self._uid, self._gid)
        argv = [str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]  # fmt: skip
        initdb = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if initdb.returncode != 0:
            raise PostgresError(f"initdb failed ({initdb.returncode}): {initdb.stderr[-2000:]}")
        if self.password_from:
            with (self.data / "pg_hba.conf").open("a") as hba:
                for cidr in self.password_from:
                    hba.write(f"host all all {cidr} scram-sha-256\n")
        self.port = free_port()
        log = self.log.open("wb")
        # fsync stays on (the default): the ledger's durability is part of what is tested.
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", f"listen_addresses={','.join(self.listen)}",
                "-c", f"unix_socket_directories={self.workdir}",
                "-c", "max_connections=200"]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise PostgresError(
                    f"postgres exited with {self.proc.returncode}: {self._log_tail()}"
                )
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(
                        f"postgres did not accept connections in 60 s ({exc}): {self._log_tail()}"
                    ) from exc
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def server_version(self) -> str:
        """The server's version, e.g. "15.18"."""
        with psycopg.connect(self.url("postgres")) as db:
            row = db.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"ledger_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drops it, ending any session still connected (a killed test process's)."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url("postgres"), autocommit=True) as db:
            db.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    psycopg.sql.Identifier(name)
                )
            )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is postgres's "fast" shutdown: it ends the sessions still open (a test's
            # leftover, a killed ledger's) instead of waiting for them, as SIGTERM would.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A started server in a fresh temporary directory, stopped and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="mt-pg-"))
    server = PostgresServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def store_sql(db: str | os.PathLike[str], sql: LiteralString, *params: object) -> int:
    """Run one statement (``?`` placeholders) on a ledger store's tables, a SQLite file or
    a PostgreSQL database: how tests damage a store, or fake a takeover, on purpose.
    Returns the number of rows it touched."""
    if is_database_url(db):
        return ledger_sql(str(db), sql.replace("?", "%s"), params)
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).rowcount


def ledger_sql(url: str, sql: LiteralString, params: Sequence[object] = ()) -> int:
    """Run one statement on the ledger's tables as the superuser, bypassing their
    append-only triggers (session_replication_role): how tests damage a store on purpose.
    Returns the number of rows it touched."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SET session_replication_role = replica")
        db.execute("SET search_path = modeltrust_ledger")
        return db.execute(sql, params).rowcount


if __name__ == "__main__":
    with running_postgres() as pg:
        print(pg.url("postgres"), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
