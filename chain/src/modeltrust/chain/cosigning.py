"""The ledger's side of witnessing: each new checkpoint goes to the witnesses, and what
readers get is the checkpoint with the cosignatures they returned.

`modeltrust ledger serve --witness URL KEY ...` runs a ``CosignatureCollector``. After every
block the sequencer seals, it sends the newest checkpoint to every witness with C2SP
tlog-witness add-checkpoint (the old size being what the witness last cosigned for this
log, with a consistency proof from it computed from the ledger's own nodes; a witness
whose size is unknown, after a restart, is asked with old size 0 and answers 409 with
its size), verifies each cosignature that comes back with the witness's pinned key, and
*publishes* the checkpoint with those cosignatures: GET /v1/checkpoint, the lookups and
the append receipts use the published checkpoint (server.LedgerAPI, ``Cosigner``).

Rules that keep the ledger available whatever the witnesses do:

- a witness that is down, slow (``timeout`` per request) or refuses only contributes no
  cosignature to that round; the sequencer never waits for witnesses, and an append's
  answer waits at most two rounds for a published checkpoint covering it (then it carries
  the log's own signature only);
- a round always takes the newest checkpoint: blocks sealed during a round are covered by
  the next one (their receipts are proven again at its size);
- every ``refresh`` seconds the current checkpoint is sent again, also when nothing was
  appended: each witness cosigns it again with a new time, which is what lets a client
  with a maximum cosignature age tell a live log from a frozen view; a witness missing
  from the current checkpoint is asked again sooner (``RETRY_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from modeltrust.chain.client import no_answer
from modeltrust.chain.errors import ChainError, ConfigError
from modeltrust.chain.merkle import NodeReader, consistency_proof
from modeltrust.chain.metrics import LedgerMetrics
from modeltrust.chain.note import (
    ALG_COSIGNATURE_V1,
    NoteSignature,
    NoteVerifier,
    cosignature_time,
    parse_signature_lines,
    with_signatures,
)
from modeltrust.chain.sequencer import SignedCheckpoint
from modeltrust.chain.tlog_witness import (
    ADD_CHECKPOINT_PATH,
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    parse_size,
)

log = logging.getLogger("modeltrust.ledger.witnesses")

RETRY_SECONDS = 5.0  # how soon a witness missing from the current checkpoint is asked again


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness the ledger sends its checkpoints to: where it listens, and its key."""

    url: str
    verifier: NoteVerifier

    @classmethod
    def parse(cls, url: str, key: str) -> WitnessEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"witness URL {url!r} must be http(s)://host[:port][/prefix]")
        try:
            verifier = NoteVerifier.from_verifier_key(key)
        except ChainError as exc:
            raise ConfigError(f"the key of witness {url}: {exc}") from None
        if verifier.alg != ALG_COSIGNATURE_V1:
            raise ConfigError(
                f"witness key {verifier.name} is not a timestamped cosignature key (type 0x04, "
                "C2SP tlog-cosignature): without a time in its cosignatures nobody can tell a "
                "frozen view from a live one"
            )
        return cls(url.rstrip("/"), verifier)

    @property
    def name(self) -> str:
        return self.verifier.name


class _Witness:
    """What the ledger knows of one witness."""

    def __init__(self, endpoint: WitnessEndpoint) -> None:
        self.endpoint = endpoint
        self.known_size: int | None = None  # what it last cosigned for this log, if known
        self.text: str | None = None  # the checkpoint body its newest cosignature is on
        self.line: NoteSignature | None = None
        self.problem: str | None = None  # why the last request got no cosignature

    def failed(self, problem: str) -> None:
        if problem != self.problem:
            log.warning("witness %s (%s): %s", self.endpoint.name, self.endpoint.url, problem)
        self.problem = problem


class CosignatureCollector:
    """Create, ``await start()``, ``notify()`` on every new checkpoint, ``await stop()``."""

    def __init__(
        self,
        witnesses: Sequence[WitnessEndpoint],
        latest: Callable[[], SignedCheckpoint],
        nodes: NodeReader,
        *,
        timeout: float = 3.0,
        refresh: float = 30.0,
        metrics: LedgerMetrics | None = None,
    ) -> None:
        names = [w.verifier.verifier_key() for w in witnesses]
        if len(set(names)) != len(names):
            raise ConfigError("the same witness key is given twice")
        self._witnesses = [_Witness(w) for w in witnesses]
        self._latest = latest
        self._nodes = nodes
        self._timeout = timeout
        self._refresh = refresh
        self._metrics = metrics or LedgerMetrics()
        self._published = latest()
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._round_note: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def published(self) -> SignedCheckpoint:
        return self._published

    @property
    def witnesses(self) -> list[tuple[WitnessEndpoint, str | None]]:
        """Each witness and why it is missing from the published checkpoint (None: it is on)."""
        text = self._published.checkpoint.to_text()
        return [
            (w.endpoint, None if w.text == text else (w.problem or "not asked yet"))
            for w in self._witnesses
        ]

    def notify(self, _checkpoint: SignedCheckpoint | None = None) -> None:
        """A new checkpoint was signed (Sequencer.on_checkpoint)."""
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        self._task = asyncio.create_task(self._run(), name="ledger-witnesses")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def wait_published(self, size: int) -> SignedCheckpoint | None:
        """The published checkpoint once it covers ``size`` entries; None after two rounds'
        time (the round in flight, then the one that takes the new checkpoint)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self._timeout + 1.0
        while self._published.size < size:
            changed = self._changed
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return None
        return self._published

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            self._wake.clear()
            target = self._latest()
            if target.note != self._round_note or loop.time() >= next_round:
                try:
                    await self._round(target)
                except Exception:  # a bug must not end witnessing: log it, try next time
                    log.exception("asking the witnesses to cosign checkpoint %d", target.size)
                complete = all(w.problem is None for w in self._witnesses)
                next_round = loop.time() + (
                    self._refresh if complete else min(self._refresh, RETRY_SECONDS)
                )
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_round - loop.time()))

    async def _round(self, target: SignedCheckpoint) -> None:
        self._round_note = target.note
        text = target.checkpoint.to_text()
        started = time.perf_counter()
        await asyncio.gather(*(self._ask(w, target, text) for w in self._witnesses))
        self._metrics.witness_round_seconds.observe(time.perf_counter() - started)
        lines = [w.line for w in self._witnesses if w.text == text and w.line is not None]
        note = with_signatures(target.note, lines) if lines else target.note
        self._published = SignedCheckpoint(target.checkpoint, note)
        self._metrics.cosigned_tree_size.set(target.size)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _ask(self, w: _Witness, target: SignedCheckpoint, text: str) -> None:
        name = w.endpoint.name
        for _ in range(3):  # a 409 teaches the witness's size: ask again with it
            outcome = await self._request(w, target, text)
            self._metrics.witness_requests.labels(name, outcome).inc()
            if outcome != "retry":
                return
        w.failed("kept answering 409 with changing sizes; asked again next round")

    async def _request(self, w: _Witness, target: SignedCheckpoint, text: str) -> str:
        size = target.size
        old = w.known_size if w.known_size is not None and w.known_size <= size else 0
        proof = consistency_proof(old, size, self._nodes) if 0 < old < size else []
        body = AddCheckpoint(old, tuple(proof), target.note).encode()
        assert self._session is not None
        url = w.endpoint.url + ADD_CHECKPOINT_PATH
        try:
            async with self._session.post(url, data=body) as resp:
                answer = await resp.read()
                status, ctype = resp.status, resp.content_type
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            w.failed(no_answer(w.endpoint.url, exc, self._timeout).replace("ledger", "witness"))
            return "unreachable"
        if status == 409 and ctype == SIZE_CONTENT_TYPE:
            return self._conflict(w, old, size, answer)
        if status != 200:
            said = " ".join(answer[:300].decode("utf-8", "replace").split())
            w.failed(f"refused checkpoint {size} with {status}: {said}")
            return "refused"
        try:
            sig = self._cosignature(w, text, answer)
        except ChainError as exc:
            w.failed(f"answered checkpoint {size} with no valid cosignature: {exc}")
            return "invalid"
        if w.problem is not None:
            log.info("witness %s cosigns again (checkpoint %d)", w.endpoint.name, size)
        w.known_size, w.text, w.line, w.problem = size, text, sig, None
        stamp = cosignature_time(sig)
        self._metrics.witness_cosigned_at.labels(w.endpoint.name).set(stamp or time.time())
        return "cosigned"

    def _conflict(self, w: _Witness, old: int, size: int, answer: bytes) -> str:
        try:
            theirs = parse_size(answer)
        except ChainError as exc:
            w.failed(f"answered 409 without a valid size: {exc}")
            return "invalid"
        if theirs == old:
            # Its size is the one sent, so it holds another tree at that size or refuses this
            # checkpoint as a split view: its /v1/witness/evidence says which.
            w.failed(
                f"refuses checkpoint {size}: it holds another tree at size {theirs} (a split "
                f"view? see {w.endpoint.url}/v1/witness/evidence)"
            )
            return "conflict"
        w.known_size = theirs
        if theirs > size:
            w.failed(
                f"has cosigned a tree of size {theirs}, larger than this ledger's latest "
                f"checkpoint ({size}): this ledger's store is older than a checkpoint its key "
                "signed (restored from a backup?), or another ledger signs with its key"
            )
            return "conflict"
        return "retry"

    def _cosignature(self, w: _Witness, text: str, answer: bytes) -> NoteSignature:
        verifier = w.endpoint.verifier
        for sig in parse_signature_lines(answer.decode("utf-8")):
            if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
                continue  # other keys of the witness: not the one this ledger pins
            if not verifier.verify(text, sig.signature):
                raise ChainError(f"the cosignature by {verifier.name} does not verify")
            return sig
        raise ChainError(f"no line by the pinned key {verifier.verifier_key()}")
