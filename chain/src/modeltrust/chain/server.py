"""The ledger's HTTP API (docs/ledger.md section 6) on aiohttp, with orjson for responses.

Why one long module: one handler per route over the same read-only store and verify-
on-read helpers; the routes are short and read best together.

Reads run on the event loop against a read-only SQLite connection (WAL readers never
wait for the writer, and a batched node read is tens of microseconds, less than a
thread hop). Writes go through the sequencer, which answers only once the entries
are durable and covered by a signed checkpoint. Only checkpointed entries are ever
served: every read is bounded by the latest checkpoint's size.

Bad input always gets a 4xx JSON ``{"error": ...}`` naming what was wrong.

What is served is checked on the way out, because the store is a file anyone with
access can damage: an entry's bytes must hash to its stored leaf hash and parse as
JSON, a page of entries must have no gap, and every inclusion or consistency proof
must verify against the signed root (or, for an older size, the root the stored
nodes give). A damaged store gets a 500 ``{"error": ..., "index": N}`` that names
what is wrong and what the ledger's operator should do; never a silent skip, never
invalid JSON, never a wrong proof.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from modeltrust.chain.auth import AuthError, PublisherSet, TokenAuthenticator
from modeltrust.chain.batch_proofs import BatchProver
from modeltrust.chain.canonical import parse_json_strict
from modeltrust.chain.digest import parse_digest
from modeltrust.chain.entries import AuditEntry, Entry, entry_from_json
from modeltrust.chain.errors import ChainError, InvalidArgumentError, MissingNodeError, ProofError
from modeltrust.chain.lookup import (
    AUDIT_OBJECT,
    AUDIT_UID,
    REGISTRATION_DIGEST,
    REVOCATION_DIGEST,
    REVOCATION_KEY,
    audit_object_key,
)
from modeltrust.chain.merkle import (
    CompactRange,
    NodeID,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from modeltrust.chain.metrics import CONTENT_TYPE, UNMATCHED_ROUTE, HttpMetrics
from modeltrust.chain.openapi import openapi_document
from modeltrust.chain.sequencer import (
    OPERATOR_ADVICE,
    AppendRejectedError,
    GroupReceipt,
    Receipt,
    Sequencer,
    SequencerUnavailableError,
    SignedCheckpoint,
    Submission,
)
from modeltrust.chain.storage import LedgerStore, StoredEntry

log = logging.getLogger("modeltrust.ledger")

_UINT = re.compile(r"[0-9]{1,18}")
_KEY_ID = re.compile(r"[0-9a-f]{64}")
_OFFLOAD_THRESHOLD = 8  # signed entries per request above which their checks leave the loop


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 8 << 20
    max_entries_per_request: int = 10_000
    max_range: int = 1000
    max_lookup: int = 1000
    default_lookup: int = 100


def b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


class APIError(ChainError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class StoreDamagedError(APIError):
    """What the store holds is not what the ledger wrote (HTTP 500, naming the index)."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(f"the ledger's store is damaged: {message}. {OPERATOR_ADVICE}", 500)
        self.index = index


class LogView(Protocol):
    """The log the read handlers serve: the sequencer, or a witness's verified copy of it.

    ``latest`` bounds what entries, blocks and proofs are served (every one of them is
    covered by a checkpoint the log signed); ``healthy`` and ``failure`` answer /readyz.
    """

    @property
    def latest(self) -> SignedCheckpoint: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def failure(self) -> BaseException | None: ...


class Cosigner(Protocol):
    """Where the checkpoint served to readers comes from when witnesses cosign it
    (cosigning.CosignatureCollector on the ledger, the witness's own state on a witness).

    ``published`` is what GET /v1/checkpoint and the lookups answer with: the newest
    checkpoint that went to the witnesses, with the cosignatures they returned.
    ``wait_published(size)`` waits (bounded) until a checkpoint of at least ``size`` is
    published; None when it was not in time.
    """

    @property
    def published(self) -> SignedCheckpoint: ...

    async def wait_published(self, size: int) -> SignedCheckpoint | None: ...


class LedgerAPI:
    """Route handlers; ``application()`` wires them into an aiohttp app.

    ``sequencer`` None makes a read-only API (a witness's copy of the log, ``view``):
    appends are refused with ``read_only`` as the reason.
    """

    def __init__(
        self,
        sequencer: Sequencer | None,
        reader: LedgerStore,
        *,
        publishers: PublisherSet,
        tokens: TokenAuthenticator | None,
        verifier_key: str,
        origin: str,
        metrics: HttpMetrics,
        limits: Limits | None = None,
        view: LogView | None = None,
        cosigner: Cosigner | None = None,
        read_only: str = "this ledger API is read-only",
    ) -> None:
        self.sequencer = sequencer
        shown = view if view is not None else sequencer
        if shown is None:
            raise InvalidArgumentError("LedgerAPI needs a sequencer or a view of the log to serve")
        self.view: LogView = shown
        self.cosigner = cosigner
        self.read_only = read_only
        self.reader = reader
        self.publishers = publishers
        self.tokens = tokens
        self.verifier_key = verifier_key
        self.origin = origin
        self.metrics = metrics
        self.limits = limits or Limits()
        self._provers: tuple[int, BatchProver] | None = None

    def published(self) -> SignedCheckpoint:
        """The checkpoint readers are given (with its cosignatures, when witnesses cosign)."""
        return self.view.latest if self.cosigner is None else self.cosigner.published

    def application(self) -> web.Application:
        app = web.Application(
            client_max_size=self.limits.max_body_bytes, middlewares=[self._errors_middleware]
        )
        r = app.router
        r.add_get("/v1/checkpoint", self.get_checkpoint)
        r.add_post("/v1/entries", self.post_entries)
        r.add_get("/v1/entries", self.get_entry_range)
        r.add_get("/v1/entries/{index}", self.get_entry)
        r.add_get("/v1/proofs/inclusion", self.get_inclusion_proof)
        r.add_get("/v1/proofs/consistency", self.get_consistency_proof)
        r.add_get("/v1/blocks", self.get_block_range)
        r.add_get("/v1/blocks/{height}", self.get_block)
        r.add_get("/v1/registrations", self.get_registrations)
        r.add_get("/v1/revocations", self.get_revocations)
        r.add_get("/v1/audit", self.get_audit)
        r.add_get("/v1/keys", self.get_keys)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.get_metrics)
        r.add_get("/openapi.json", self.get_openapi)
        return app

    # -- middleware --------------------------------------------------------------------------

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(exc.status, _http_error_message(exc))
            if exc.status == 405:
                response.headers["Allow"] = exc.headers.get("Allow", "")
        except StoreDamagedError as exc:
            log.error("serving %s %s: %s", request.method, request.path_qs, exc)
            response = _error(exc.status, str(exc), index=exc.index)
        except APIError as exc:
            response = _error(exc.status, str(exc))
        except AuthError as exc:
            response = _error(exc.status, str(exc))
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="modeltrust-ledger"'
        except AppendRejectedError as exc:
            if exc.index is None:
                response = _error(409, str(exc))
            else:
                response = _error(409, str(exc), index=exc.index)
        except SequencerUnavailableError as exc:
            response = _error(503, str(exc))
        except ChainError as exc:
            # Core validation errors (entries, digests, proofs): the client's input is bad.
            response = _error(400, str(exc))
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            response = _error(500, "internal error; see the ledger's log")
        resource = request.match_info.route.resource
        route = UNMATCHED_ROUTE if resource is None else resource.canonical
        self.metrics.request(route, request.method, response.status, time.perf_counter() - started)
        return response

    # -- writes ----------------------------------------------------------------------------------

    async def post_entries(self, request: web.Request) -> web.Response:
        if self.sequencer is None:
            raise APIError(self.read_only, 403)
        body = await request.read()
        try:
            doc = parse_json_strict(body)
        except ChainError as exc:
            raise APIError(f"request body is not acceptable JSON: {exc}") from None
        single = isinstance(doc, dict)
        if single:
            docs = [doc]
        elif isinstance(doc, list):
            docs = doc
        else:
            raise APIError(
                "request body must be one entry (a JSON object) or a JSON array of entries"
            )
        if not docs:
            raise APIError("the array of entries is empty")
        if len(docs) > self.limits.max_entries_per_request:
            raise APIError(
                f"{len(docs)} entries in one request; at most "
                f"{self.limits.max_entries_per_request} are accepted",
                413,
            )
        entries = [_parse_entry(d, i, single) for i, d in enumerate(docs)]
        if any(isinstance(e, AuditEntry) for e in entries):
            await self._authenticate(request)
        await self._check_publisher_signatures(entries)
        subs = [Submission.of(e) for e in entries]
        outcome = await self.sequencer.submit(subs)
        if self.cosigner is not None:
            outcome = await self._cosigned(outcome)
        created = any(not r.existing for r in outcome.receipts)
        return _json(_receipts_json(outcome, single), 201 if created else 200)

    async def _cosigned(self, outcome: GroupReceipt) -> GroupReceipt:
        """The receipts at a checkpoint the witnesses cosigned, once one covers them.

        The witnesses are asked about the newest checkpoint only (a round is one witness
        round trip, during which more blocks are sealed), so the published checkpoint can
        be newer than the block's: the receipts are then proven again at its size, from
        the stored nodes, and checked against its root. When no checkpoint was published
        in time (witnesses slow or down) the receipts keep the log's own checkpoint: the
        entries are durable either way, and clients that require cosignatures read them
        again later.
        """
        assert self.cosigner is not None
        size = outcome.checkpoint.size
        published = await self.cosigner.wait_published(size)
        if published is None:
            return outcome
        if published.size == size:
            return GroupReceipt(published, outcome.receipts)
        return GroupReceipt(published, self._prove_again(outcome.receipts, published))

    def _prover(self, at: SignedCheckpoint) -> BatchProver:
        """One prover per published checkpoint, shared by every request answered at it:
        the upper levels of their proofs are the same nodes, read once."""
        cached = self._provers
        if cached is not None and cached[0] == at.size:
            return cached[1]

        def perfect(level: int, index: int) -> bytes:
            try:
                return self.reader.get_nodes([NodeID(level, index)])[0]
            except MissingNodeError as exc:
                raise StoreDamagedError(str(exc), index << level) from None

        prover = BatchProver(at.size, perfect)
        self._provers = (at.size, prover)
        return prover

    def _prove_again(
        self, receipts: Sequence[Receipt], at: SignedCheckpoint
    ) -> tuple[Receipt, ...]:
        prover = self._prover(at)
        indexes = [r.index for r in receipts]
        first, end = min(indexes), max(indexes) + 1
        consecutive = end - first == len(set(indexes))
        walked = prover.proofs(first, end) if consecutive else None
        root = at.checkpoint.root_hash
        out = []
        for r in receipts:
            proof = walked[r.index - first] if walked is not None else prover.proof(r.index)
            try:
                verify_inclusion(r.leaf_hash, r.index, at.size, proof, root)
            except ProofError:
                raise StoreDamagedError(
                    f"the stored Merkle nodes give an inclusion proof of entry {r.index} at "
                    f"tree size {at.size} that does not verify against the cosigned root",
                    r.index,
                ) from None
            out.append(Receipt(r.index, r.leaf_hash, proof, r.existing))
        return tuple(out)

    async def _check_publisher_signatures(self, entries: Sequence[Entry]) -> None:
        """Refuse the request if a registration or revocation is not signed by a publisher.

        Audit entries need no signature check, and encoding them is cheaper than a thread
        hop, so only signature checks leave the event loop: cryptography releases the GIL
        while verifying, so a large batch is split over one thread per CPU. The first
        refused entry (lowest index) is named, as a serial check would.
        """
        signed = [(i, e) for i, e in enumerate(entries) if not isinstance(e, AuditEntry)]
        if len(signed) <= _OFFLOAD_THRESHOLD:
            self._check_signed(signed, len(entries))
            return
        loop = asyncio.get_running_loop()
        parts = max(1, min(os.cpu_count() or 1, 4))
        step = -(-len(signed) // parts)
        outcomes = await asyncio.gather(
            *(
                loop.run_in_executor(None, self._check_signed, signed[k : k + step], len(entries))
                for k in range(0, len(signed), step)
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:  # in entry order
            if isinstance(outcome, BaseException):
                raise outcome

    def _check_signed(self, signed: Sequence[tuple[int, Entry]], total: int) -> None:
        for i, e in signed:
            try:
                self.publishers.check(e)
            except AuthError as exc:
                if total > 1:
                    raise AuthError(f"entry {i}: {exc}", exc.status) from None
                raise

    async def _authenticate(self, request: web.Request) -> str:
        if self.tokens is None:
            raise AuthError("this ledger accepts no audit entries (no token authenticator)", 403)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("audit entries need an Authorization: Bearer <token> header", 401)
        return await self.tokens.authenticate(token.strip())

    # -- reads -------------------------------------------------------------------------------------

    async def get_checkpoint(self, request: web.Request) -> web.Response:
        return web.Response(text=self.published().note, content_type="text/plain")

    async def get_entry(self, request: web.Request) -> web.Response:
        index = _uint(request.match_info["index"], "entry index")
        size = self.view.latest.size
        if index >= size:
            raise APIError(f"no entry {index}: the tree size is {size}", 404)
        return _json(_entry_json(self._entries(index, index + 1)[0]))

    async def get_entry_range(self, request: web.Request) -> web.Response:
        size = self.view.latest.size
        start = _query_uint(request, "start")
        end = _query_uint(request, "end", default=start + self.limits.max_range)
        if end <= start:
            raise APIError(f"end {end} must be greater than start {start}")
        if start >= size:
            raise APIError(f"start {start} is not below the tree size {size}", 404)
        end = min(end, size, start + self.limits.max_range)
        rows = self._entries(start, end)
        return _json({"start": start, "end": end, "entries": [_entry_json(e) for e in rows]})

    async def get_inclusion_proof(self, request: web.Request) -> web.Response:
        index = _query_uint(request, "index")
        size = _query_uint(request, "size")
        self._check_size(size)
        if index >= size:
            raise APIError(f"index {index} is not below the tree size {size}")
        proof = self._inclusion_proof(index, size)
        return _json(
            {"index": index, "tree_size": size, "inclusion_proof": [b64(h) for h in proof]}
        )

    async def get_consistency_proof(self, request: web.Request) -> web.Response:
        first = _query_uint(request, "from")
        second = _query_uint(request, "to")
        if first == 0:
            raise APIError("a consistency proof from size 0 proves nothing; `from` must be >= 1")
        if first > second:
            raise APIError(f"from {first} is larger than to {second}")
        self._check_size(second)
        proof = self._consistency_proof(first, second)
        return _json({"from": first, "to": second, "consistency_proof": [b64(h) for h in proof]})

    # -- what the store says, checked before it is served --------------------------------

    def _entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries [start, end): all present, hashing to their leaf hashes, valid JSON."""
        rows = self.reader.get_entries(start, end)
        expected = start
        for e in rows:
            if e.index != expected:
                raise StoreDamagedError(f"entry {expected} is missing from the store", expected)
            data = e.leaf_data
            if not isinstance(data, bytes) or leaf_hash(data) != e.leaf_hash:
                raise StoreDamagedError(
                    f"the stored bytes of entry {e.index} do not hash to its stored leaf hash",
                    e.index,
                )
            try:
                orjson.loads(data)
            except orjson.JSONDecodeError:
                raise StoreDamagedError(
                    f"the stored bytes of entry {e.index} are not JSON", e.index
                ) from None
            expected += 1
        if expected != end:
            raise StoreDamagedError(f"entry {expected} is missing from the store", expected)
        return rows

    def _root_at(self, size: int, index: int) -> bytes:
        """The signed root at the latest size; else the root the stored nodes give."""
        for signed in (self.view.latest, self.published()):
            if size == signed.size:
                return signed.checkpoint.root_hash
        try:
            return CompactRange.load(size, self.reader).root()
        except MissingNodeError as exc:
            raise StoreDamagedError(str(exc), index) from None

    def _inclusion_proof(
        self, index: int, size: int, stored_hash: bytes | None = None
    ) -> list[bytes]:
        try:
            proof = inclusion_proof(index, size, self.reader)
        except MissingNodeError as exc:
            raise StoreDamagedError(f"{exc} (inclusion proof of entry {index})", index) from None
        if stored_hash is None:
            stored_hash = self._entries(index, index + 1)[0].leaf_hash
        try:
            verify_inclusion(stored_hash, index, size, proof, self._root_at(size, index))
        except ProofError:
            raise StoreDamagedError(
                f"the stored Merkle nodes give an inclusion proof of entry {index} at tree "
                f"size {size} that does not verify against the root",
                index,
            ) from None
        return proof

    def _consistency_proof(self, first: int, second: int) -> list[bytes]:
        try:
            proof = consistency_proof(first, second, self.reader)
        except MissingNodeError as exc:
            raise StoreDamagedError(
                f"{exc} (consistency proof {first} to {second})", first
            ) from None
        try:
            verify_consistency(
                first, second, proof, self._root_at(first, first), self._root_at(second, first)
            )
        except ProofError:
            raise StoreDamagedError(
                f"the stored Merkle nodes give a consistency proof from tree size {first} to "
                f"{second} that does not verify against the roots",
                first,
            ) from None
        return proof

    def _check_size(self, size: int) -> None:
        current = self.view.latest.size
        if size == 0 or size > current:
            raise APIError(f"tree size {size} is not between 1 and the current size {current}")

    async def get_block(self, request: web.Request) -> web.Response:
        height = _uint(request.match_info["height"], "block height")
        blocks = self._visible_blocks(height, height + 1)
        if not blocks:
            raise APIError(f"no block at height {height}", 404)
        return _json(blocks[0])

    async def get_block_range(self, request: web.Request) -> web.Response:
        start = _query_uint(request, "start")
        end = _query_uint(request, "end", default=start + self.limits.max_range)
        if end <= start:
            raise APIError(f"end {end} must be greater than start {start}")
        blocks = self._visible_blocks(start, min(end, start + self.limits.max_range))
        if not blocks:
            raise APIError(f"no block at height {start}", 404)
        return _json({"start": start, "end": start + len(blocks), "blocks": blocks})

    def _visible_blocks(self, start: int, end: int) -> list[dict[str, Any]]:
        size = self.view.latest.size
        return [
            {
                "height": b.height,
                "header": orjson.Fragment(b.header),
                "header_hash": b64(b.header_hash),
                "checkpoint": b.checkpoint,
            }
            for b in self.reader.get_blocks(start, end)
            if b.end_index <= size
        ]

    async def get_registrations(self, request: web.Request) -> web.Response:
        digest = _query(request, "digest")
        parse_digest(digest)
        return self._lookup(request, [(REGISTRATION_DIGEST, digest)])

    async def get_revocations(self, request: web.Request) -> web.Response:
        keys = []
        digest = request.query.get("digest")
        if digest is not None:
            parse_digest(digest)
            keys.append((REVOCATION_DIGEST, digest))
        key_id = request.query.get("key_id")
        if key_id is not None:
            if not _KEY_ID.fullmatch(key_id):
                raise APIError("key_id must be 64 lowercase hex digits (SHA-256 of the key's DER)")
            keys.append((REVOCATION_KEY, key_id))
        if not keys:
            raise APIError("give digest=sha256:<hex> and/or key_id=<hex>")
        return self._lookup(request, keys)

    async def get_audit(self, request: web.Request) -> web.Response:
        uid = request.query.get("uid")
        if uid is not None:
            if not uid:
                raise APIError("uid must not be empty")
            return self._lookup(request, [(AUDIT_UID, uid)])
        namespace, name = request.query.get("namespace"), request.query.get("name")
        if not namespace or not name:
            raise APIError("give uid=, or both namespace= and name=")
        return self._lookup(request, [(AUDIT_OBJECT, audit_object_key(namespace, name))])

    def _lookup(self, request: web.Request, keys: list[tuple[str, str]]) -> web.Response:
        after_raw = request.query.get("after")
        after = -1 if after_raw is None else _uint(after_raw, "after")
        limit = _query_uint(request, "limit", default=self.limits.default_lookup)
        if not 1 <= limit <= self.limits.max_lookup:
            raise APIError(f"limit must be between 1 and {self.limits.max_lookup}")
        latest = self.published()
        size = latest.size
        found: set[int] = set()
        for kind, key in keys:
            found.update(self.reader.lookup(kind, key, after=after, limit=limit))
        indexes = sorted(i for i in found if i < size)[:limit]
        results = []
        for index in indexes:
            stored = self._entries(index, index + 1)[0]
            item = _entry_json(stored)
            proof = self._inclusion_proof(index, size, stored.leaf_hash)
            item["inclusion_proof"] = [b64(h) for h in proof]
            results.append(item)
        more = len(indexes) == limit
        return _json(
            {
                "checkpoint": latest.note,
                "tree_size": size,
                "entries": results,
                "next_after": indexes[-1] if more else None,
            }
        )

    async def get_keys(self, request: web.Request) -> web.Response:
        identity = self.reader.identity()
        keys: dict[str, Any] = {
            "origin": self.origin,
            "checkpoint_verifier_key": self.verifier_key,
            "publisher_key_ids": self.publishers.key_ids,
        }
        if identity is not None:
            # The log's signed empty checkpoint: what a witness records as the genesis of
            # its copy of the log (no block carries it).
            keys["empty_checkpoint"] = identity.empty_checkpoint
        return _json(keys)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if not self.view.healthy:
            failure = self.view.failure
            what = "sequencer" if self.sequencer is not None else "log copy"
            return _error(503, f"{what} not running: {failure}" if failure else "starting")
        return _json({"status": "ready", "tree_size": self.view.latest.size})

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def get_openapi(self, request: web.Request) -> web.Response:
        return _json(openapi_document())


def _parse_entry(doc: object, i: int, single: bool) -> Entry:
    where = "" if single else f"entry {i}: "
    if not isinstance(doc, dict):
        raise APIError(f"{where}an entry must be a JSON object")
    try:
        return entry_from_json(doc)
    except ChainError as exc:
        raise APIError(f"{where}{exc}") from None


def _entry_json(e: StoredEntry) -> dict[str, Any]:
    return {"index": e.index, "leaf_hash": b64(e.leaf_hash), "entry": orjson.Fragment(e.leaf_data)}


def _receipts_json(outcome: GroupReceipt, single: bool) -> dict[str, Any]:
    # A block's proofs share most of their hashes: encode each distinct hash once.
    encoded = {h: b64(h) for h in set().union(*(r.inclusion_proof for r in outcome.receipts))}
    as_text = encoded.__getitem__
    receipts = [
        {
            "index": r.index,
            "leaf_hash": b64(r.leaf_hash),
            "inclusion_proof": list(map(as_text, r.inclusion_proof)),
            "existing": r.existing,
        }
        for r in outcome.receipts
    ]
    note = outcome.checkpoint.note
    if single:
        return {**receipts[0], "checkpoint": note, "tree_size": outcome.checkpoint.size}
    return {"checkpoint": note, "tree_size": outcome.checkpoint.size, "receipts": receipts}


def _uint(raw: str, what: str) -> int:
    if not _UINT.fullmatch(raw):
        raise APIError(f"{what} must be a non-negative decimal integer, got {raw[:40]!r}")
    return int(raw)


def _query(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if value is None:
        raise APIError(f"query parameter {name} is required")
    return value


def _query_uint(request: web.Request, name: str, *, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise APIError(f"query parameter {name} is required")
        return default
    return _uint(raw, name)


def _http_error_message(exc: web.HTTPException) -> str:
    if exc.status == 413:
        return f"request body too large: {exc.text or ''}".strip()
    if exc.status == 404:
        return "no such endpoint; see /openapi.json"
    if exc.status == 405:
        return "method not allowed for this endpoint; see /openapi.json"
    return exc.text or exc.reason
