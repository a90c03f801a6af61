"""Assembles a running ledger: stores, sequencer, HTTP API; what `modeltrust ledger serve` runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from aiohttp import web

from modeltrust.chain.auth import PublisherSet, TokenAuthenticator, TokenReviewAuthenticator
from modeltrust.chain.cosigning import CosignatureCollector, WitnessEndpoint
from modeltrust.chain.errors import ConfigError
from modeltrust.chain.k8s_lease import LeaseConfig, LeaseElector
from modeltrust.chain.ledger_verify import AuditPoint, LedgerVerificationError, verify_store
from modeltrust.chain.metrics import LedgerMetrics
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.sequencer import OPERATOR_ADVICE, Sequencer
from modeltrust.chain.server import LedgerAPI, Limits
from modeltrust.chain.storage import (
    DEFAULT_WRITER_LEASE,
    LedgerStore,
    StorageCorruptError,
    open_store,
)

log = logging.getLogger("modeltrust.ledger")

# A standby (writer Lease) audits what was appended since its last look this often.
STANDBY_AUDIT_EVERY = 5.0


@dataclass
class ServiceConfig:
    # A SQLite file, or a postgresql:// URL (storage.open_store).
    db: str | os.PathLike[str]
    signer: NoteSigner
    origin: str
    publishers: PublisherSet
    tokens: TokenAuthenticator | None = None
    host: str = "127.0.0.1"
    port: int = 0
    max_batch: int = 2048
    limits: Limits = field(default_factory=Limits)
    # Recompute the whole tree at start and refuse a store that disagrees with its last
    # signed checkpoint (about 4 s per million entries on SQLite, 6.6 s on PostgreSQL;
    # see docs/ledger.md).
    audit_on_start: bool = True
    # How long to wait for the writer lock while another writer holds it (None: as long
    # as it takes, a standby), and PostgreSQL's writer lease (storage.open_store).
    writer_wait: float | None = 0.0
    writer_lease: float = DEFAULT_WRITER_LEASE
    # SQLite: the Kubernetes Lease that elects the writer among processes sharing the
    # file (k8s_lease.py); None: the file lock alone decides.
    lease: LeaseConfig | None = None
    # Witnesses each new checkpoint is sent to (cosigning.py); none: readers get the
    # checkpoints as the ledger signs them.
    witnesses: tuple[WitnessEndpoint, ...] = ()
    witness_timeout: float = 3.0  # per add-checkpoint request
    witness_refresh: float = 30.0  # the current checkpoint is cosigned again this often


class LedgerService:
    """Start with ``await start()``; ``url`` is then where it listens."""

    def __init__(self, config: ServiceConfig) -> None:
        if config.signer.name != config.origin:
            # C2SP convention, and what lets a verifier key name the log it checks.
            raise ConfigError(
                f"the checkpoint key is named {config.signer.name!r} but the origin is "
                f"{config.origin!r}; generate the key with `modeltrust ledger keygen --origin`"
            )
        self.config = config
        self.metrics = LedgerMetrics()
        self._writer: LedgerStore | None = None
        self._reader: LedgerStore | None = None
        self._runner: web.AppRunner | None = None
        self.elector: LeaseElector | None = None
        self.sequencer: Sequencer | None = None
        self.collector: CosignatureCollector | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        audited: AuditPoint | None = None
        if cfg.lease is not None:
            # A standby waits here for the Lease, then renews it for as long as it runs.
            self.elector = LeaseElector(cfg.lease)
            try:
                audited = await self._standby()
            except BaseException:
                await self.elector.release()
                self.elector = None
                raise
        try:
            # On a thread: a standby may wait here for minutes, and the loop stays responsive.
            self._writer = await asyncio.to_thread(
                open_store,
                cfg.db,
                writer=True,
                background_checkpoints=True,
                writer_wait=cfg.writer_wait,
                writer_lease=cfg.writer_lease,
                leased=cfg.lease is not None,
            )
        except BaseException:
            await self.stop()
            raise
        try:
            self.sequencer = Sequencer(
                self._writer,
                cfg.signer,
                origin=cfg.origin,
                max_batch=cfg.max_batch,
                metrics=self.metrics,
                audit_on_start=cfg.audit_on_start,
                fence=self.elector.fence if self.elector is not None else None,
                audited=audited,
            )
            await self.sequencer.start()
            self._reader = open_store(cfg.db, writer=False)
            sequencer = self.sequencer
            if cfg.witnesses:
                self.collector = CosignatureCollector(
                    cfg.witnesses,
                    lambda: sequencer.latest,
                    self._reader,
                    timeout=cfg.witness_timeout,
                    refresh=cfg.witness_refresh,
                    metrics=self.metrics,
                )
                sequencer.on_checkpoint(self.collector.notify)
                await self.collector.start()
            else:
                self.metrics.cosigned_tree_size.set_function(lambda: sequencer.latest.size)
            api = LedgerAPI(
                self.sequencer,
                self._reader,
                publishers=cfg.publishers,
                tokens=cfg.tokens,
                verifier_key=cfg.signer.verifier_key(),
                origin=cfg.origin,
                metrics=self.metrics,
                limits=cfg.limits,
                cosigner=self.collector,
            )
            self._runner = web.AppRunner(api.application(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, cfg.host, cfg.port, backlog=1024)
            await site.start()
            server = getattr(site, "_server", None)
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else cfg.port
        except BaseException:
            await self.stop()
            raise
        log.info(
            "ledger %s listening on %s (tree size %d, store %s)",
            cfg.origin,
            self.url,
            self.sequencer.latest.size,
            self._writer.location,
        )

    async def _standby(self) -> AuditPoint | None:
        """Wait for the writer Lease; meanwhile audit the log as it grows, so that the
        start-up audit after taking over only checks what was added since (failover time
        does not grow with the log). Returns how far the audit got."""
        assert self.elector is not None
        cfg = self.config
        if not cfg.audit_on_start or not await asyncio.to_thread(os.path.exists, cfg.db):
            await self.elector.acquire()
            return None
        point: AuditPoint | None = None
        done = asyncio.Event()

        def audit(reader: LedgerStore, since: AuditPoint | None) -> AuditPoint | None:
            if reader.identity() is None:
                return None  # a new ledger: nothing to audit yet
            report = verify_store(
                reader, cfg.signer.verifier(), origin=cfg.origin, resume=since, complete=False
            )
            return report.point

        async def keep_audited() -> None:
            nonlocal point
            reader = await asyncio.to_thread(open_store, cfg.db, writer=False)
            try:
                started = time.monotonic()
                point = await asyncio.to_thread(audit, reader, point)
                if point is not None:
                    # Until here a takeover would wait for this audit: the standby is warm now.
                    log.info(
                        "standby: audited the log up to block %d (tree size %d) in %.1f s; "
                        "from now on only what is appended",
                        point.height,
                        point.size,
                        time.monotonic() - started,
                    )
                while not done.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(done.wait(), timeout=STANDBY_AUDIT_EVERY)
                    if done.is_set():
                        break
                    point = await asyncio.to_thread(audit, reader, point)
            finally:
                reader.close()

        auditor = asyncio.create_task(keep_audited(), name="standby-audit")
        acquiring = asyncio.create_task(self.elector.acquire(), name="writer-lease")
        try:
            await asyncio.wait({auditor, acquiring}, return_when=asyncio.FIRST_COMPLETED)
            if acquiring.done():
                acquiring.result()  # a refusal (no RBAC) ends the wait
        finally:
            done.set()
            if not acquiring.done():  # the audit failed: stop waiting for the Lease
                acquiring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acquiring
            try:
                await auditor
            except LedgerVerificationError as exc:
                raise StorageCorruptError(
                    f"refusing to take over: the ledger database {cfg.db} does not match its "
                    f"signed checkpoints: {exc}. {OPERATOR_ADVICE}"
                ) from exc
        if point is not None:
            log.info(
                "audited up to block %d (tree size %d) while waiting", point.height, point.size
            )
        return point

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.collector is not None:
            await self.collector.stop()
            self.collector = None
        if self.sequencer is not None:
            await self.sequencer.stop()
            self.sequencer = None
        if isinstance(self.config.tokens, TokenReviewAuthenticator):
            await self.config.tokens.close()
        for store in (self._reader, self._writer):
            if store is not None:
                store.close()
        self._reader = self._writer = None
        if self.elector is not None:
            # After the sequencer stopped: hand the Lease back so a standby takes over now.
            await self.elector.release()
            self.elector = None

    async def run_until_stopped(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0), a sequencer failure or the loss of the
        writer lock or Lease (exit 1: another writer may be appending now)."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            while not stop.is_set():
                assert self.sequencer is not None
                if self.sequencer.failure is not None:
                    log.error("sequencer failed, exiting: %s", self.sequencer.failure)
                    return 1
                lost = self._writer.lost_writer_lock() if self._writer is not None else None
                if lost is None and self.elector is not None:
                    lost = self.elector.fence()
                if lost is not None:
                    log.error("exiting: %s", lost)
                    return 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
            return 0
        finally:
            await self.stop()
