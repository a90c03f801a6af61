"""Helpers for ledger tests: keys, entries, and a real ledger server on loopback.

``LedgerThread`` runs the real ``LedgerService`` (SQLite file, sequencer, aiohttp)
in a background thread with its own event loop, so blocking clients can talk to it.
``ledger_subprocess`` runs `modeltrust ledger serve` as a real process (for SIGKILL tests).
``LedgerProcess`` is that process with the keys and token of the e2e tests and benchmarks
(publishers registered by name, restartable on the same database and port).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.modeltrust_objects import TOKEN as E2E_TOKEN
from harness.modeltrust_objects import Publisher
from harness.nopasswd import env_without_home, without_passwd
from harness.processes import stop_process
from harness.waiting import wait_for
from modeltrust.chain.auth import PublisherSet, StaticTokens, TokenAuthenticator
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import AuditEntry, Registration
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.service import LedgerService, ServiceConfig
from modeltrust.chain.signatures import sign_registration, sign_revocation

ORIGIN = "ledger.test/modeltrust"
TOKEN = "test-audit-token"


@dataclass
class LedgerKeys:
    signer: NoteSigner
    publisher: Ed25519PrivateKey
    publishers_dir: Path
    tokens_file: Path

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key()


def make_keys(directory: Path, origin: str = ORIGIN) -> LedgerKeys:
    directory.mkdir(parents=True, exist_ok=True)
    publishers = directory / "publishers"
    publishers.mkdir(exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (publishers / "publisher.pem").write_bytes(pem)
    tokens = directory / "tokens"
    tokens.write_text(f"# audit writers\n{TOKEN}\n")
    return LedgerKeys(NoteSigner.generate(origin), key, publishers, tokens)


def registration(keys: LedgerKeys, i: int, *, name: str = "resnet") -> Registration:
    digest = "sha256:" + f"{i:064x}"
    return sign_registration(
        keys.publisher, name=name, version=f"v{i}", digest=digest, size=1000 + i
    )


def audit(i: int, *, key: str | None = None, name: str = "web", uid: str = "uid-1") -> AuditEntry:
    return AuditEntry(
        action="rollout",
        namespace="default",
        name=name,
        uid=uid,
        generation=i,
        digest="sha256:" + f"{i:064x}",
        decision="allowed",
        reasons=("signature verified",),
        actor="system:serviceaccount:modeltrust:operator",
        time="2025-01-31T12:00:00Z",
        idempotency_key=key or f"idem-{i}",
    )


def service_config(keys: LedgerKeys, db: str | Path, **overrides: object) -> ServiceConfig:
    """The service on ``db``: a SQLite file or a postgresql:// URL (the ``ledger_db`` fixture)."""
    tokens: TokenAuthenticator = StaticTokens([TOKEN])
    cfg = ServiceConfig(
        db=db,
        signer=keys.signer,
        origin=keys.signer.name,
        publishers=PublisherSet.load(keys.publishers_dir),
        tokens=tokens,
    )
    for name, value in overrides.items():
        setattr(cfg, name, value)
    return cfg


class LedgerThread:
    """A real ledger server in a background thread; use as a context manager."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.service = LedgerService(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> LedgerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        return self.service.url


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def write_signer_key(keys: LedgerKeys, directory: Path) -> Path:
    path = directory / "checkpoint.key"
    path.write_text(keys.signer.signer_key() + "\n")
    path.chmod(0o600)
    return path


@contextmanager
def ledger_subprocess(
    keys: LedgerKeys,
    db: str | Path,
    workdir: Path,
    *options: str,
    ready_timeout: float = 30,
    wait: bool = True,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`modeltrust ledger serve` on ``db`` (a file or a postgresql:// URL) as a real process,
    with more ``options``; yields (process, url) once it is ready (``wait=False``: at once,
    e.g. a standby that serves only once it holds the writer lock). Its output goes to
    ``workdir/ledger-<port>.log``."""
    port = free_port()
    key_file = write_signer_key(keys, workdir)
    cmd = [
        sys.executable,
        "-c",
        "from modeltrust.cli.main import main; main()",
        "ledger",
        "serve",
        "--db",
        str(db),
        "--key",
        str(key_file),
        "--origin",
        keys.signer.name,
        "--publishers",
        str(keys.publishers_dir),
        "--static-tokens",
        str(keys.tokens_file),
        "--listen",
        f"127.0.0.1:{port}",
        *options,
    ]
    log = open(workdir / f"ledger-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        if wait:
            wait_ready(url, proc, timeout=ready_timeout)
        yield proc, url
    finally:
        stop_process(proc, timeout=10)
        log.close()


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"ledger process exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"ledger at {url} not ready after {timeout}s")


# The `modeltrust` console script of this interpreter's environment.
MODELTRUST = Path(sys.executable).with_name("modeltrust")


@dataclass
class LedgerProcess:
    """`modeltrust ledger serve` as a real process with its own signer key, the given
    publishers' keys and the audit token e2e operators present; stop()/start() keep its
    database and port, snapshot()/restore() copy the database while it is stopped.
    `no_passwd=True` runs it as a uid with no passwd entry and no HOME, as in a pod.
    `host` is the address it listens on: loopback unless pods must reach it (then the
    cluster's `host_address`)."""

    workdir: Path
    publishers: list[Publisher]
    origin: str = "ledger.e2e.modeltrust.dev"
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port on `host`, chosen once (restarts keep it)
    no_passwd: bool = False
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()  # more `ledger serve` options (e.g. --witness URL KEY)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
        self.signer = NoteSigner.generate(self.origin)
        (self.workdir / "publishers").mkdir(parents=True, exist_ok=True)
        for p in self.publishers:
            (self.workdir / "publishers" / f"{p.name}.pem").write_text(p.pem)
        (self.workdir / "signer.key").write_text(self.signer.signer_key() + "\n")
        (self.workdir / "tokens").write_text(E2E_TOKEN + "\n")
        self.db = self.workdir / "ledger.db"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key()

    def start(self) -> None:
        log = (self.workdir / "ledger.log").open("ab")
        argv = [str(MODELTRUST), "ledger", "serve", "--db", str(self.db),
                "--key", str(self.workdir / "signer.key"), "--origin", self.origin,
                "--publishers", str(self.workdir / "publishers"),
                "--listen", f"{self.host}:{self.port}",
                "--static-tokens", str(self.workdir / "tokens"), "--max-batch", "256",
                *self.extra_args]  # fmt: skip
        env = dict(os.environ)
        if self.no_passwd:
            argv, env = without_passwd(argv), env_without_home(env)
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child has its own copy

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ledger exited: {(self.workdir / 'ledger.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v1/checkpoint", timeout=2) as r:  # noqa: S310
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the ledger to serve", up, timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
        self.proc = None

    def snapshot(self, name: str) -> None:
        """Copy the database files (call while stopped)."""
        for f in self.workdir.glob("ledger.db*"):
            shutil.copy2(f, self.workdir / f"{name}.{f.name}")

    def restore(self, name: str) -> None:
        for f in self.workdir.glob("ledger.db*"):
            f.unlink()
        for f in self.workdir.glob(f"{name}.ledger.db*"):
            shutil.copy2(f, self.workdir / f.name.removeprefix(f"{name}."))

    def client(self) -> LedgerClient:
        return LedgerClient(self.url, verifier_key=self.verifier_key, token=E2E_TOKEN)

    def register(self, publisher: Publisher, model: Path, name: str, version: str) -> int:
        data = model.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        reg = sign_registration(
            publisher.key, name=name, version=version, digest=digest, size=len(data)
        )
        with self.client() as c:
            return c.append(reg).index

    def revoke_digest(self, publisher: Publisher, digest: str, reason: str) -> int:
        rev = sign_revocation(publisher.key, target_kind="digest", target=digest, reason=reason)
        with self.client() as c:
            return c.append(rev).index

    def audits(self, uid: str) -> list[AuditEntry]:
        with self.client() as c:
            found: list[VerifiedEntry] = c.audit_trail(uid=uid)
        return [ve.entry for ve in found if isinstance(ve.entry, AuditEntry)]
