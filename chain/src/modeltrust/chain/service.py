"""Assembles a running ledger: stores, sequencer, HTTP API; what `modeltrust ledger serve` runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from modeltrust.chain.auth import PublisherSet, TokenAuthenticator, TokenReviewAuthenticator
from modeltrust.chain.cosigning import CosignatureCollector, WitnessEndpoint
from modeltrust.chain.errors import ConfigError
from modeltrust.chain.metrics import LedgerMetrics
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.sequencer import Sequencer
from modeltrust.chain.server import LedgerAPI, Limits
from modeltrust.chain.storage import SQLiteLedgerStore

log = logging.getLogger("modeltrust.ledger")


@dataclass
class ServiceConfig:
    db: Path
    signer: NoteSigner
    origin: str
    publishers: PublisherSet
    tokens: TokenAuthenticator | None = None
    host: str = "127.0.0.1"
    port: int = 0
    max_batch: int = 2048
    limits: Limits = field(default_factory=Limits)
    # Recompute the whole tree at start and refuse a store that disagrees with its last
    # signed checkpoint (about 3 s per million entries; see docs/ledger.md).
    audit_on_start: bool = True
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
        self._writer: SQLiteLedgerStore | None = None
        self._reader: SQLiteLedgerStore | None = None
        self._runner: web.AppRunner | None = None
        self.sequencer: Sequencer | None = None
        self.collector: CosignatureCollector | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        cfg = self.config
        self._writer = SQLiteLedgerStore(cfg.db, writer=True, background_checkpoints=True)
        try:
            self.sequencer = Sequencer(
                self._writer,
                cfg.signer,
                origin=cfg.origin,
                max_batch=cfg.max_batch,
                metrics=self.metrics,
                audit_on_start=cfg.audit_on_start,
            )
            await self.sequencer.start()
            self._reader = SQLiteLedgerStore(cfg.db, writer=False)
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
            "ledger %s listening on %s (tree size %d)",
            cfg.origin,
            self.url,
            self.sequencer.latest.size,
        )

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

    async def run_until_stopped(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0) or a sequencer failure (exit 1)."""
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
            return 0
        finally:
            await self.stop()
