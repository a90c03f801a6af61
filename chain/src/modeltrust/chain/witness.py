"""A witness: a verified copy of a ledger that cosigns only what it checked itself.

Why one long module: the cosigned state, the checks before a cosignature and the
split-view evidence are one safety argument (the witness cosigns a checkpoint only when its
own copy of the log gives that root and the checkpoint extends everything it cosigned
before); split up, no file would show it. The copy itself is witness_copy.py.

`modeltrust ledger witness` runs one (docs/ledger.md, section 13). It

- copies the log (witness_copy.py): every block and entry the ledger serves (/v1/blocks,
  /v1/entries) is checked before it is stored (the header links to the previous one, each
  entry hashes to its leaf hash, the entries give the header's root, the block's
  checkpoint is signed by the log's key over exactly that tree), so its store is a ledger
  store like the ledger's own, audited the same way (`ledger_verify.verify_sqlite`) at
  start and every ``audit_interval``;
- speaks C2SP tlog-witness: POST /add-checkpoint cosigns (C2SP tlog-cosignature, with a
  timestamp) a checkpoint that is consistent with the last one it cosigned (the proof
  sent with it) AND whose root its own copy of the log gives at that size; the log's
  pushes are what keep its cosignatures fresh;
- serves the ledger's read API over its copy (the same handlers, server.LedgerAPI), so
  the operator and auditors can read from it; GET /v1/checkpoint gives the latest
  checkpoint it cosigned, with its own cosignature and the other witnesses' ones the
  ledger published for the same checkpoint;
- keeps split-view evidence: a checkpoint signed by the log's key that contradicts its
  copy (same size, another root; or a root at a size the copy proves wrong with a
  consistency proof anyone can check) is written to ``evidence/`` with both signed
  checkpoints, served at GET /v1/witness/evidence, counted in
  ``modeltrust_witness_split_view``, and from then on the witness cosigns nothing until its
  operator has reviewed it and run `modeltrust ledger witness-acknowledge`.

Before evidence is recorded the witness audits its own store: a copy damaged on disk is
reported as damage (and nothing is cosigned until it is repaired), never as the log's
misbehaviour.

State directory: ``copy.db`` (the log copy, SQLite), ``witness.json`` (the latest cosigned
checkpoint, persisted before a cosignature is returned), ``evidence/`` (and
``evidence/acknowledged/``), ``witness.lock`` (held while the witness runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import Counter, Gauge

from modeltrust.chain.auth import PublisherSet
from modeltrust.chain.checkpoint import Checkpoint, verify_checkpoint
from modeltrust.chain.client import no_answer
from modeltrust.chain.errors import ChainError, ConfigError, NoteError, ProofError
from modeltrust.chain.merkle import (
    empty_root,
    hash_from_b64,
    hash_to_b64,
    verify_consistency,
)
from modeltrust.chain.metrics import HttpMetrics
from modeltrust.chain.note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    parse_note,
    parse_signature_lines,
    with_signatures,
)
from modeltrust.chain.sequencer import SignedCheckpoint
from modeltrust.chain.server import LedgerAPI, Limits
from modeltrust.chain.storage import (
    SQLiteLedgerStore,
)
from modeltrust.chain.tlog_witness import (
    ADD_CHECKPOINT_PATH,
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    encode_size,
)
from modeltrust.chain.witness_copy import (
    LogCopy,
    LogFetchError,
    WitnessError,
    WitnessStoreDamagedError,
    fetched_block,
)

__all__ = [
    "CosignedState",
    "LogCopy",
    "LogFetchError",
    "WitnessConfig",
    "WitnessError",
    "WitnessLockedError",
    "WitnessMetrics",
    "WitnessService",
    "WitnessStoreDamagedError",
    "acknowledge_evidence",
    "evidence_paths",
]

log = logging.getLogger("modeltrust.witness")

COPY_DB = "copy.db"
STATE_FILE = "witness.json"
EVIDENCE_DIR = "evidence"
ACKNOWLEDGED_DIR = "acknowledged"
LOCK_FILE = "witness.lock"
_BLOCK_PAGE = 100
_ENTRY_PAGE = 1000  # the ledger's range-read cap
_MAX_REQUEST = 1 << 20
_PEER_DELAY = 0.3  # seconds after a cosignature before the ledger's checkpoint is read again

WITNESS_ADVICE = (
    "Operator of this witness: review the evidence (GET /v1/witness/evidence, or the files "
    "in {dir}), tell the ledger's operators and everyone who relies on this log, and only "
    "then run `modeltrust ledger witness-acknowledge --state {state}` to let the witness "
    "cosign again"
)


class WitnessLockedError(WitnessError):
    """Another process holds the witness's state directory."""


class _Refusal(WitnessError):
    """An add-checkpoint refused with ``status`` (and, for 409, the size the witness holds)."""

    def __init__(self, status: int, message: str, reason: str, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.size = size


@dataclass
class WitnessConfig:
    state_dir: Path
    signer: NoteSigner  # the witness's own key, type 0x04 (timestamped cosignatures)
    log_url: str
    log_verifier: NoteVerifier
    origin: str
    host: str = "127.0.0.1"
    port: int = 0
    poll_interval: float = 2.0
    # A full audit of the copy every this many seconds (None: only at start).
    audit_interval: float | None = 3600.0
    fetch_timeout: float = 30.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.signer.alg != ALG_COSIGNATURE_V1:
            raise ConfigError(
                "the witness key must be a timestamped cosignature key (type 0x04, C2SP "
                "tlog-cosignature); create one with `modeltrust ledger keygen --witness`"
            )
        if self.signer.name == self.log_verifier.name:
            raise ConfigError(
                f"the witness key is named {self.signer.name!r} like the log's key; a witness "
                "needs its own name"
            )
        if self.log_verifier.name != self.origin:
            raise ConfigError(
                f"the log's verifier key is named {self.log_verifier.name!r} but the origin is "
                f"{self.origin!r}; a ledger's key is named after its origin"
            )


@dataclass(frozen=True)
class CosignedState:
    """The latest checkpoint this witness cosigned for the log (tlog-witness's state)."""

    size: int
    root_hash: bytes
    note: str  # the checkpoint as the log signed it (its own signature line only)
    line: NoteSignature | None  # this witness's newest cosignature on it

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root_hash": hash_to_b64(self.root_hash),
            "note": self.note,
            "cosignature": self.line.line() if self.line is not None else None,
        }


class WitnessMetrics(HttpMetrics):
    def __init__(self) -> None:
        super().__init__("witness")
        r = self.registry
        self.split_view = Gauge(
            "modeltrust_witness_split_view",
            "1 while the witness holds split-view evidence it has not been told to "
            "acknowledge (it cosigns nothing meanwhile), else 0.",
            registry=r,
        )
        self.copy_size = Gauge(
            "modeltrust_witness_copy_tree_size",
            "Entries in the witness's verified copy of the log.",
            registry=r,
        )
        self.cosigned_size = Gauge(
            "modeltrust_witness_cosigned_tree_size",
            "Tree size of the latest checkpoint the witness cosigned.",
            registry=r,
        )
        self.cosigned_at = Gauge(
            "modeltrust_witness_last_cosignature_timestamp_seconds",
            "Time of the witness's newest cosignature (0 before the first).",
            registry=r,
        )
        self.store_ok = Gauge(
            "modeltrust_witness_store_verified",
            "1 while the witness's copy passed its last audit; 0 when it is damaged.",
            registry=r,
        )
        self.cosignatures = Counter(
            "modeltrust_witness_cosignatures", "Cosignatures made.", registry=r
        )
        self.refusals = Counter(
            "modeltrust_witness_refusals",
            "add-checkpoint requests refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.sync_failures = Counter(
            "modeltrust_witness_sync_failures",
            "Attempts to copy the log's new blocks that failed (unreachable, or blocks "
            "that did not verify).",
            registry=r,
        )


# -- the witness ---------------------------------------------------------------------------


def log_only(note: str, log: NoteVerifier) -> str:
    """The note with the log's own signature line only (what a witness stores)."""
    text, signatures = parse_note(note)
    mine = [s for s in signatures if (s.name, s.key_id) == (log.name, log.key_id)]
    return text + "\n" + "".join(s.line() for s in mine)


def evidence_paths(state_dir: Path) -> list[Path]:
    """Split-view evidence not acknowledged yet, oldest first."""
    directory = state_dir / EVIDENCE_DIR
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def acknowledge_evidence(state_dir: Path, ids: Sequence[str] = ()) -> list[Path]:
    """Move evidence (all, or the files named by ``ids``) to ``evidence/acknowledged/``.

    Only while the witness is stopped (WitnessLockedError otherwise): a running witness
    would not notice. Returns where the files went.
    """
    fd = _lock(state_dir)
    try:
        pending = evidence_paths(state_dir)
        if ids:
            known = {p.stem: p for p in pending}
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise WitnessError(
                    f"no unacknowledged evidence {', '.join(unknown)} in {state_dir}; "
                    f"there is: {', '.join(known) or 'none'}"
                )
            pending = [known[i] for i in ids]
        target = state_dir / EVIDENCE_DIR / ACKNOWLEDGED_DIR
        target.mkdir(parents=True, exist_ok=True)
        moved = []
        for path in pending:
            dest = target / path.name
            os.replace(path, dest)
            moved.append(dest)
        _fsync_dir(target)
        _fsync_dir(state_dir / EVIDENCE_DIR)
        return moved
    finally:
        os.close(fd)


class WitnessService:
    """Start with ``await start()``; ``url`` is then where it listens."""

    def __init__(self, config: WitnessConfig) -> None:
        self.config = config
        self.metrics = WitnessMetrics()
        self.copy = LogCopy(config.state_dir / COPY_DB, config.log_verifier, config.origin)
        self.state: CosignedState | None = None
        # Other witnesses' cosignatures on the cosigned checkpoint, as the log published them.
        self._peer_lines: tuple[NoteSignature, ...] = ()
        self._lock_fd: int | None = None
        self._reader: SQLiteLedgerStore | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._state_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        self._last_sync_error: str | None = None
        self._cosigned = asyncio.Event()  # wakes the poll: the ledger publishes peers soon
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(cfg.state_dir)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "witness %s of %s listening on %s (copy %d entries, cosigned %d)",
            cfg.signer.name, cfg.origin, self.url, self.copy.size,
            self.state.size if self.state else 0,
        )  # fmt: skip

    async def _start(self) -> None:
        cfg = self.config
        self.copy.open()
        try:
            await self.copy.run(self.copy.load, True)
        except WitnessStoreDamagedError:
            self.metrics.store_ok.set(0)
            raise
        self.metrics.store_ok.set(1)
        self.state = self._load_state()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=cfg.fetch_timeout)
        )
        if not self.copy.initialized:
            try:
                await self._initialize_copy()
            except LogFetchError as exc:  # the poll loop tries again: the log may start later
                log.warning("cannot start the copy of the log yet: %s", exc)
        if self.state is not None and self.state.size <= self.copy.size:
            await self._check_state_in_copy()
        self._update_gauges()
        self._reader = SQLiteLedgerStore(self.copy.path, writer=False)
        api = LedgerAPI(
            None,
            self._reader,
            publishers=PublisherSet({}),
            tokens=None,
            verifier_key=cfg.log_verifier.verifier_key(),
            origin=cfg.origin,
            metrics=self.metrics,
            limits=cfg.limits,
            view=self,
            cosigner=self,
            read_only=(
                f"this is witness {cfg.signer.name}'s read-only copy of {cfg.origin}; append "
                f"at the ledger ({cfg.log_url})"
            ),
        )
        app = api.application()
        app.router.add_post(ADD_CHECKPOINT_PATH, self.add_checkpoint)
        app.router.add_get("/v1/witness", self.get_status)
        app.router.add_get("/v1/witness/evidence", self.get_evidence)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else cfg.port
        self._tasks.append(asyncio.create_task(self._poll(), name="witness-poll"))
        if cfg.audit_interval:
            self._tasks.append(asyncio.create_task(self._audits(), name="witness-audit"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.copy.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def run_until_stopped(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0)."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
            return 0
        finally:
            await self.stop()

    # -- what the read API serves (server.LogView and server.Cosigner) ---------------------

    @property
    def latest(self) -> SignedCheckpoint:
        return self.copy.latest

    @property
    def healthy(self) -> bool:
        return self.copy.damage is None and bool(self._tasks) and not self._tasks[0].done()

    @property
    def failure(self) -> BaseException | None:
        return self.copy.damage

    @property
    def published(self) -> SignedCheckpoint:
        """The latest checkpoint this witness cosigned, with its cosignature and the other
        witnesses' ones the log published for it (the genesis before the first)."""
        state = self.state
        if state is None or state.line is None:
            genesis = self.copy.store.identity() if self.copy.initialized else None
            note = genesis.empty_checkpoint if genesis is not None else ""
            return SignedCheckpoint(Checkpoint(self.config.origin, 0, empty_root()), note)
        cp = Checkpoint(self.config.origin, state.size, state.root_hash)
        return SignedCheckpoint(cp, with_signatures(state.note, [*self._peer_lines, state.line]))

    async def wait_published(self, size: int) -> SignedCheckpoint | None:
        return self.published if self.published.size >= size else None

    @property
    def split_view(self) -> bool:
        return bool(evidence_paths(self.config.state_dir))

    # -- the tlog-witness API ---------------------------------------------------------------

    async def add_checkpoint(self, request: web.Request) -> web.Response:
        body = await request.content.read(_MAX_REQUEST + 1)
        try:
            if len(body) > _MAX_REQUEST:
                raise _Refusal(413, "the request is larger than 1 MiB", "too-large")
            line = await self._add_checkpoint(body)
        except _Refusal as exc:
            self.metrics.refusals.labels(exc.reason).inc()
            if exc.status >= 500 or exc.reason in ("split-view", "evidence-held"):
                log.warning("add-checkpoint refused (%d): %s", exc.status, exc)
            if exc.size is not None:
                return web.Response(
                    status=exc.status,
                    body=encode_size(exc.size),
                    headers={"Content-Type": SIZE_CONTENT_TYPE},
                )
            return web.Response(status=exc.status, text=str(exc) + "\n")
        return web.Response(text=line.line(), content_type="text/plain")

    async def _add_checkpoint(self, body: bytes) -> NoteSignature:
        cfg = self.config
        try:
            req = AddCheckpoint.parse(body)
            text, _ = parse_note(req.note)
            cp = Checkpoint.from_text(text)
        except ChainError as exc:  # WitnessProtocolError, NoteError, CheckpointError
            raise _Refusal(400, f"malformed request: {exc}", "malformed") from None
        if cp.origin != cfg.origin:
            raise _Refusal(404, f"this witness follows only {cfg.origin!r}", "unknown-origin")
        try:
            verify_checkpoint(req.note, cfg.log_verifier, origin=cfg.origin)
        except ChainError as exc:
            raise _Refusal(
                403, f"no signature by the log's key verifies: {exc}", "bad-signature"
            ) from None
        if req.old_size > cp.size:
            raise _Refusal(
                400,
                f"old size {req.old_size} is larger than the checkpoint's {cp.size}",
                "old-size",
            )
        self._refuse_if_cannot_cosign()
        note = log_only(req.note, cfg.log_verifier)
        if cp.size <= self.copy.size:
            await self._judge(cp, note)  # a split view is caught whatever else the request says
        async with self._state_lock:
            self._refuse_if_cannot_cosign()
            state = self.state
            size, root = (state.size, state.root_hash) if state else (0, empty_root())
            if req.old_size != size:
                raise _Refusal(
                    409, f"this witness last cosigned size {size}", "old-size-mismatch", size
                )
            if cp.size == size:
                if cp.root_hash != root:
                    assert state is not None  # size 0 has one root, the empty tree's
                    raise await self._split_view(
                        state.note, note, f"two checkpoints of size {size} with different roots"
                    )
            elif size > 0:
                try:
                    verify_consistency(size, cp.size, list(req.proof), root, cp.root_hash)
                except ProofError as exc:
                    raise _Refusal(
                        422,
                        f"the consistency proof from size {size} does not verify: {exc}",
                        "bad-proof",
                    ) from None
            if cp.size > self.copy.size:
                with contextlib.suppress(LogFetchError):  # kept in _last_sync_error, said below
                    await self._sync(until=cp.size)
            if cp.size > self.copy.size:
                raise _Refusal(
                    503,
                    f"this witness's copy of the log holds {self.copy.size} entries and the log "
                    f"did not serve the blocks up to {cp.size}"
                    + (f" ({self._last_sync_error})" if self._last_sync_error else "")
                    + "; try again",
                    "not-copied",
                )
            await self._judge(cp, note)
            return await self._cosign(cp, note)

    def _refuse_if_cannot_cosign(self) -> None:
        if self.copy.damage is not None:
            raise _Refusal(503, str(self.copy.damage), "store-damaged")
        held = evidence_paths(self.config.state_dir)
        if held:
            raise _Refusal(
                403,
                f"this witness holds split-view evidence for {self.config.origin} "
                f"({', '.join(p.stem for p in held)}) and cosigns nothing for it until its "
                "operator acknowledges the evidence",
                "evidence-held",
            )

    async def _cosign(self, cp: Checkpoint, note: str) -> NoteSignature:
        text, _ = parse_note(note)
        raw = self.config.signer.sign(text)
        line = NoteSignature(self.config.signer.name, self.config.signer.key_id, raw)
        new = CosignedState(cp.size, cp.root_hash, note, line)
        same = self.state is not None and self.state.size == cp.size
        if not same:
            self._peer_lines = ()
            # Persisted before it is answered (tlog-witness): a restart never cosigns below it.
            await self.copy.run(self._save_state, new)
        # The same checkpoint cosigned again (the ledger's refresh) changes no state worth a
        # disk write: after a restart the older cosignature is served until the next one.
        self.state = new
        self.metrics.cosignatures.inc()
        self.metrics.cosigned_at.set(time.time())
        self._cosigned.set()
        self._update_gauges()
        return line

    # -- judging checkpoints against the copy ----------------------------------------------

    async def _judge(self, cp: Checkpoint, note: str) -> None:
        """Record evidence and refuse (409) when the copy shows ``cp`` (signed by the log,
        at most the copy's size) to be another tree than the log's."""
        root = await self.copy.run(self.copy.root_at, cp.size)
        if root == cp.root_hash:
            return
        head = self.copy.latest
        if cp.size == 0:
            genesis = self.copy.store.identity()
            assert genesis is not None
            raise await self._split_view(
                genesis.empty_checkpoint, note, "a checkpoint of size 0 with another root than "
                "the empty tree's",
            )  # fmt: skip
        if cp.size == head.size:
            raise await self._split_view(
                head.note, note, f"two checkpoints of size {cp.size} with different roots"
            )
        same = await self.copy.run(self.copy.note_at, cp.size)
        if same is not None:
            raise await self._split_view(
                same, note, f"two checkpoints of size {cp.size} with different roots"
            )
        proof = await self.copy.run(self.copy.proof, cp.size, head.size)
        raise await self._split_view(
            head.note,
            note,
            f"a checkpoint of size {cp.size} whose root is not the root at that size of the "
            f"log's tree of size {head.size} (shown by a consistency proof)",
            proof={
                "from": cp.size,
                "to": head.size,
                "root_at_from": hash_to_b64(root),
                "consistency_proof": [hash_to_b64(h) for h in proof],
            },
        )

    async def _split_view(
        self, ours: str, theirs: str, what: str, proof: dict[str, Any] | None = None
    ) -> _Refusal:
        """Write the evidence (after checking the copy is not simply damaged) and the refusal."""
        try:
            await self.copy.run(self.copy.audit)
        except WitnessStoreDamagedError as exc:
            self.metrics.store_ok.set(0)
            log.error("%s", exc)
            return _Refusal(503, str(exc), "store-damaged")
        path = self._write_evidence(ours, theirs, what, proof)
        self.metrics.split_view.set(1)
        cfg = self.config
        advice = WITNESS_ADVICE.format(dir=path.parent, state=cfg.state_dir)
        log.error(
            "SPLIT VIEW of %s: the log's key signed %s; evidence in %s. This witness cosigns "
            "nothing for the log from now on. %s",
            cfg.origin, what, path, advice,
        )  # fmt: skip
        size = self.state.size if self.state is not None else 0
        return _Refusal(
            409, f"split view: the log signed {what}; evidence {path.stem}", "split-view", size
        )

    def _write_evidence(
        self, ours: str, theirs: str, what: str, proof: dict[str, Any] | None
    ) -> Path:
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "origin": self.config.origin,
            "log_key": self.config.log_verifier.verifier_key(),
            "witness": self.config.signer.verifier_key(),
            "recorded_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "what": f"the log signed {what}",
            # Both carry the log's signature: verify them with log_key.
            "checkpoints": [ours, theirs],
        }
        if proof is not None:
            body["proof"] = proof
            body["how_to_check"] = (
                "both checkpoints verify with log_key; the consistency proof verifies from "
                "(proof.from, proof.root_at_from) to the first checkpoint, so the log's tree "
                "has root_at_from at size proof.from, not the second checkpoint's root"
            )
        else:
            body["how_to_check"] = (
                "both checkpoints verify with log_key and have the same size but different roots"
            )
        directory = self.config.state_dir / EVIDENCE_DIR
        directory.mkdir(exist_ok=True)
        digest = hashlib.sha256(theirs.encode()).hexdigest()[:12]
        path = directory / f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest}.json"
        _write_atomically(path, json.dumps(body, indent=2).encode() + b"\n")
        return path

    async def _check_state_in_copy(self) -> None:
        """The cosigned checkpoint must be in the copy (it was, when it was cosigned)."""
        state = self.state
        assert state is not None
        root = await self.copy.run(self.copy.root_at, state.size)
        if root != state.root_hash:
            self.copy.damage = WitnessStoreDamagedError(
                f"this witness's copy of the log has another root at size {state.size} than the "
                f"checkpoint it cosigned ({STATE_FILE}); the copy or the state file was changed "
                "outside the witness. Start it on an empty state directory"
            )
            self.metrics.store_ok.set(0)
            raise self.copy.damage

    # -- copying the log ---------------------------------------------------------------------

    async def _initialize_copy(self) -> None:
        doc = await self._get_json("/v1/keys")
        note = doc.get("empty_checkpoint") if isinstance(doc, dict) else None
        if not isinstance(note, str):
            raise LogFetchError(
                f"the log at {self.config.log_url} does not serve its empty checkpoint in "
                "/v1/keys (a ledger older than witnesses?)"
            )
        try:
            await self.copy.run(self.copy.initialize, note)
        except ChainError as exc:
            raise LogFetchError(f"the log's empty checkpoint does not verify: {exc}") from exc

    async def _sync(self, until: int | None = None) -> None:
        """Copy the log's new blocks (all of them, or until the copy holds ``until`` entries)."""
        async with self._sync_lock:
            try:
                if not self.copy.initialized:
                    await self._initialize_copy()
                while until is None or self.copy.size < until:
                    if not await self._copy_blocks(until):
                        break
                self._last_sync_error = None
            except LogFetchError as exc:
                self._last_sync_error = str(exc)
                self.metrics.sync_failures.inc()
                raise
            finally:
                self._update_gauges()

    async def _copy_blocks(self, until: int | None) -> bool:
        """One page of blocks; False when the log has no block after the copy's last."""
        start = self.copy.height
        path = "/v1/blocks?" + urlencode({"start": start, "end": start + _BLOCK_PAGE})
        doc = await self._get_json(path, missing_ok=True)
        if doc is None:
            return False
        items = doc.get("blocks") if isinstance(doc, dict) else None
        if not isinstance(items, list) or not items:
            return False
        blocks = [fetched_block(item, start + i) for i, item in enumerate(items)]
        first, end = blocks[0].header.first_index, blocks[-1].header.end_index
        if until is not None:
            # Only the blocks needed: a long catch-up answers the waiting request sooner.
            needed = next((i for i, b in enumerate(blocks) if b.header.end_index >= until), None)
            if needed is not None:
                blocks = blocks[: needed + 1]
                end = blocks[-1].header.end_index
        entries = await self._entries(first, end)
        await self.copy.run(self.copy.append_all, blocks, entries, first)  # one thread hop
        return True

    async def _entries(self, start: int, end: int) -> list[Any]:
        out: list[Any] = []
        while start + len(out) < end:
            first = start + len(out)
            page_end = min(end, first + _ENTRY_PAGE)
            doc = await self._get_json(
                "/v1/entries?" + urlencode({"start": first, "end": page_end})
            )
            items = doc.get("entries") if isinstance(doc, dict) else None
            if not isinstance(items, list) or not items or doc.get("start") != first:
                raise LogFetchError(f"the log served no entries from index {first}")
            out.extend(items[: end - first])
        return out

    async def _get_json(self, path: str, *, missing_ok: bool = False) -> Any:
        assert self._session is not None
        url = self.config.log_url.rstrip("/") + path
        try:
            async with self._session.get(url) as resp:
                body = await resp.read()
                if resp.status == 404 and missing_ok:
                    return None
                if resp.status != 200:
                    text = body[:300].decode("utf-8", "replace")
                    raise LogFetchError(f"the log answered GET {path} with {resp.status}: {text}")
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            timeout = self.config.fetch_timeout
            raise LogFetchError(no_answer(self.config.log_url, exc, timeout)) from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise LogFetchError(f"the log's answer to GET {path} is not JSON: {exc}") from None

    async def _check_log_checkpoint(self) -> None:
        """The log's published checkpoint: a split view is judged against the copy; the
        other witnesses' cosignatures on the checkpoint this witness cosigned are kept."""
        assert self._session is not None
        url = self.config.log_url.rstrip("/") + "/v1/checkpoint"
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    raise LogFetchError(f"the log answered GET /v1/checkpoint with {resp.status}")
                note = (await resp.read()).decode("utf-8", "replace")
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            timeout = self.config.fetch_timeout
            raise LogFetchError(no_answer(self.config.log_url, exc, timeout)) from None
        try:
            cp = verify_checkpoint(note, self.config.log_verifier, origin=self.config.origin)
        except ChainError as exc:
            raise LogFetchError(f"the log's checkpoint does not verify: {exc}") from exc
        if cp.size <= self.copy.size:
            await self._judge(cp, log_only(note, self.config.log_verifier))
        state = self.state
        if state is not None and (cp.size, cp.root_hash) == (state.size, state.root_hash):
            me = (self.config.signer.name, self.config.signer.key_id)
            logs = (self.config.log_verifier.name, self.config.log_verifier.key_id)
            _, signatures = parse_note(note)
            self._peer_lines = tuple(s for s in signatures if (s.name, s.key_id) not in (me, logs))

    async def _poll(self) -> None:
        failures = 0
        while True:
            try:
                await self._sync()
                await self._check_log_checkpoint()
                failures = 0
            except _Refusal:
                pass  # a split view or damage found: already logged and recorded
            except (WitnessError, NoteError) as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("copying the log from %s: %s", self.config.log_url, exc)
            except Exception:
                log.exception("copying the log from %s failed", self.config.log_url)
            # Right after a cosignature the ledger publishes the checkpoint with the other
            # witnesses' ones: read it again soon, so readers of this copy get them too.
            self._cosigned.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cosigned.wait(), self.config.poll_interval)
                await asyncio.sleep(min(_PEER_DELAY, self.config.poll_interval))

    async def _audits(self) -> None:
        interval = self.config.audit_interval
        assert interval
        while True:
            await asyncio.sleep(interval)
            # On the copy's one worker thread: no block is added while the audit reads.
            try:
                await self.copy.run(self.copy.audit)
                if self.state is not None and self.state.size <= self.copy.size:
                    await self._check_state_in_copy()
            except WitnessStoreDamagedError as exc:
                self.metrics.store_ok.set(0)
                log.error("%s", exc)
                return

    # -- state, status, evidence ------------------------------------------------------------

    def _load_state(self) -> CosignedState | None:
        path = self.config.state_dir / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise WitnessError(f"cannot read {path}: {exc}") from exc
        try:
            cp = verify_checkpoint(doc["note"], self.config.log_verifier, origin=self.config.origin)
            root = hash_from_b64(doc["root_hash"], "root_hash")
            line = doc.get("cosignature")
            signature = None
            if isinstance(line, str):
                (signature,) = parse_signature_lines(line)
        except (KeyError, TypeError, ValueError, ChainError) as exc:
            raise WitnessError(f"{path} is not a witness state file: {exc}") from exc
        if (cp.size, cp.root_hash) != (doc.get("size"), root):
            raise WitnessError(f"{path}: its size and root are not its checkpoint's")
        text, _ = parse_note(doc["note"])
        me = self.config.signer.verifier()
        if signature is not None and not (
            (signature.name, signature.key_id) == (me.name, me.key_id)
            and me.verify(text, signature.signature)
        ):
            raise WitnessError(f"{path}: its cosignature is not this witness's on its checkpoint")
        return CosignedState(cp.size, root, doc["note"], signature)

    def _save_state(self, state: CosignedState) -> None:
        doc = {"origin": self.config.origin, **state.to_json()}
        _write_atomically(
            self.config.state_dir / STATE_FILE, json.dumps(doc, indent=2).encode() + b"\n"
        )

    def _update_gauges(self) -> None:
        self.metrics.copy_size.set(self.copy.size)
        self.metrics.cosigned_size.set(self.state.size if self.state else 0)
        self.metrics.split_view.set(1 if self.split_view else 0)

    async def get_status(self, request: web.Request) -> web.Response:
        state = self.state
        body = {
            "origin": self.config.origin,
            "witness_key": self.config.signer.verifier_key(),
            "log_url": self.config.log_url,
            "copy_tree_size": self.copy.size,
            "cosigned": None
            if state is None
            else {"tree_size": state.size, "root_hash": hash_to_b64(state.root_hash)},
            "split_view": self.split_view,
            "store": "ok" if self.copy.damage is None else str(self.copy.damage),
            "last_sync_error": self._last_sync_error,
        }
        return web.json_response(body)

    async def get_evidence(self, request: web.Request) -> web.Response:
        items = []
        for path in evidence_paths(self.config.state_dir):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                doc = {"error": f"cannot read {path.name}: {exc}"}
            items.append({"id": path.stem, **doc})
        return web.json_response(
            {"origin": self.config.origin, "split_view": bool(items), "evidence": items}
        )


def _lock(state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WitnessLockedError(
            f"another process holds {path}: a witness is running on {state_dir} (stop it first)"
        ) from None
    return fd


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
