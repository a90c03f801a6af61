"""What a verifying ledger client does, written once without I/O ("sans-IO").

Why one long module: every flow (append, checkpoint, proofs, range reads) shares the
same verification steps; splitting them would scatter the one place that decides what a
client believes.

Each operation is a generator that yields the I/O it needs (an HTTP request, or a
read / compare-and-swap of the trusted checkpoint) and receives the result; the sync
client (http.client) and the async client (aiohttp) only drive these generators.
So both clients verify exactly the same way:

- every checkpoint's signature and origin, against the pinned verifier key;
- every newer checkpoint is proven consistent with the last trusted one (an older
  one is a rollback, an inconsistent one a fork), and only then trusted;
- every entry's leaf hash is recomputed from its canonical JSON and its inclusion
  proof checked at the exact size of a verified checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import orjson

from modeltrust.chain.checkpoint import Checkpoint, verify_checkpoint
from modeltrust.chain.entries import Entry, entry_from_json, entry_to_json, leaf_data
from modeltrust.chain.errors import (
    ChainError,
    ConsistencyProofError,
    HashEncodingError,
    InvalidArgumentError,
    ProofError,
)
from modeltrust.chain.merkle import (
    hash_from_b64,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.trust_state import (
    LedgerEquivocationError,
    LedgerForkError,
    LedgerRollbackError,
    LedgerTrustError,
    TrustedCheckpoint,
)

MAX_LOOKUP_PAGES = 100
LOOKUP_PAGE_LIMIT = 1000

# Where the bearer token for writes comes from: a fixed string, or a function read on every
# request (projected service-account tokens rotate; a client must not outlive its token).
TokenSource = str | Callable[[], str | None] | None


class LedgerClientError(ChainError):
    """The ledger could not be asked (network) or refused the request."""


class LedgerUnavailableError(LedgerClientError):
    """No answer from the ledger (connection refused, timeout)."""


class LedgerHTTPError(LedgerClientError):
    def __init__(self, status: int, message: str, index: int | None = None) -> None:
        try:
            said = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            said = str(status)
        super().__init__(f"ledger answered {said}: {message}")
        self.status = status
        self.message = message
        self.index = index


class EntryExistsError(LedgerHTTPError):
    """409: a replay of an entry already in the ledger (``index``), or an idempotency conflict."""


class LedgerResponseError(LedgerTrustError):
    """The ledger's answer is malformed or does not verify."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    body: bytes | None = None
    bearer: str | None = None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes


@dataclass(frozen=True)
class LoadTrust:
    pass


@dataclass(frozen=True)
class SwapTrust:
    expected: TrustedCheckpoint | None
    new: TrustedCheckpoint


Op = HttpRequest | LoadTrust | SwapTrust
Flow = Generator[Op, Any, Any]


@dataclass(frozen=True)
class VerifiedCheckpoint:
    checkpoint: Checkpoint
    note: str

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True)
class VerifiedReceipt:
    index: int
    leaf_hash: bytes
    checkpoint: VerifiedCheckpoint
    existing: bool


@dataclass(frozen=True)
class VerifiedEntry:
    index: int
    entry: Entry
    leaf_hash: bytes
    checkpoint: VerifiedCheckpoint
    # The audit path that proved the entry at exactly ``checkpoint.size`` (leaf upwards):
    # kept so a caller can hand the proof on (e.g. to an offline verifier) without asking
    # the ledger again.
    inclusion_proof: tuple[bytes, ...] = ()


def _hashes(value: object, what: str) -> list[bytes]:
    if not isinstance(value, list):
        raise LedgerResponseError(f"{what} is not a list of hashes")
    try:
        return [hash_from_b64(item, f"{what}[{i}]") for i, item in enumerate(value)]
    except HashEncodingError as exc:
        raise LedgerResponseError(str(exc)) from None


def _field(doc: object, name: str, kind: type) -> Any:
    value = doc.get(name) if isinstance(doc, dict) else None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise LedgerResponseError(f"ledger answer lacks a valid {name!r}")
    return value


class Flows:
    """The verification logic; ``verifier`` and ``origin`` are pinned by the caller."""

    def __init__(
        self,
        verifier: NoteVerifier,
        origin: str,
        bearer: TokenSource = None,
        *,
        lookup_page_limit: int = LOOKUP_PAGE_LIMIT,
        max_lookup_pages: int = MAX_LOOKUP_PAGES,
    ) -> None:
        if not 1 <= lookup_page_limit <= LOOKUP_PAGE_LIMIT:
            raise InvalidArgumentError(f"lookup_page_limit must be 1..{LOOKUP_PAGE_LIMIT}")
        if max_lookup_pages < 1:
            raise InvalidArgumentError("max_lookup_pages must be at least 1")
        self.verifier = verifier
        self.origin = origin
        self.bearer = bearer
        self.lookup_page_limit = lookup_page_limit
        self.max_lookup_pages = max_lookup_pages

    def token(self) -> str | None:
        """The bearer token for this request (re-read each time when it is a function)."""
        return self.bearer() if callable(self.bearer) else self.bearer

    # -- plumbing ------------------------------------------------------------------------

    def _get_json(self, path: str) -> Flow:
        resp = yield HttpRequest("GET", path)
        return _decode(resp)

    def _open(self, note: str) -> Checkpoint:
        try:
            return verify_checkpoint(note, self.verifier, origin=self.origin)
        except ChainError as exc:
            raise LedgerTrustError(f"ledger checkpoint does not verify: {exc}") from exc

    # -- checkpoints and trust -----------------------------------------------------------

    def checkpoint(self) -> Flow:
        resp = yield HttpRequest("GET", "/v1/checkpoint")
        if resp.status != 200:
            raise _http_error(resp)
        try:
            note = resp.body.decode("utf-8")
        except UnicodeDecodeError:
            raise LedgerResponseError("checkpoint is not UTF-8") from None
        # The newest verified checkpoint, never an older one: a caller asking "what does the
        # log hold now" must not be held back by a stale (or replayed) answer.
        return (yield from self.reconcile(note, newest=True))

    def reconcile(self, note: str, *, newest: bool = False) -> Flow:
        """Verify ``note`` and bring it into agreement with the trusted checkpoint.

        Returns ``note`` verified; with ``newest``, the trusted checkpoint instead when
        ``note`` is an older (proven consistent) one.
        """
        cp = self._open(note)
        verified = VerifiedCheckpoint(cp, note)
        new = TrustedCheckpoint(cp.origin, cp.size, cp.root_hash, note)
        for _ in range(5):
            trusted = yield LoadTrust()
            if trusted is not None and trusted.origin != self.origin:
                raise LedgerTrustError(
                    f"the trusted checkpoint is for origin {trusted.origin!r}, not {self.origin!r}"
                )
            if trusted is None:
                if (yield SwapTrust(None, new)):
                    return verified
                continue
            if cp.size < trusted.size:
                # Older than what we trust. Concurrent requests make this normal: another
                # answer (an append's receipt) may have moved trust on while this one was on
                # its way. A stale answer is a prefix of the trusted tree and the ledger can
                # prove it; a ledger that was rolled back no longer holds the trusted tree
                # and cannot.
                yield from self._prove_older(cp, trusted)
                if newest:
                    return self._open_trusted(trusted)
                return verified
            if cp.size == trusted.size:
                if cp.root_hash != trusted.root_hash:
                    raise LedgerEquivocationError(
                        f"ledger fork: a checkpoint of size {cp.size} has a different root than "
                        "the verified checkpoint of the same size"
                    )
                return verified
            if trusted.size > 0:
                yield from self._prove_consistent(
                    trusted.size, trusted.root_hash, cp.size, cp.root_hash
                )
            if (yield SwapTrust(trusted, new)):
                return verified
        raise LedgerTrustError("the trusted checkpoint kept changing during verification; retry")

    def _open_trusted(self, trusted: TrustedCheckpoint) -> VerifiedCheckpoint:
        cp = self._open(trusted.note)
        if (cp.size, cp.root_hash) != (trusted.size, trusted.root_hash):
            raise LedgerTrustError(
                f"the trusted checkpoint record of size {trusted.size} holds a note of another "
                "tree; repair the trust store"
            )
        return VerifiedCheckpoint(cp, trusted.note)

    def _prove_older(self, cp: Checkpoint, trusted: TrustedCheckpoint) -> Flow:
        rollback = (
            f"ledger rollback: it presents a checkpoint of size {cp.size}, older than the "
            f"verified checkpoint of size {trusted.size}"
        )
        if cp.size == 0:
            raise LedgerRollbackError(f"{rollback}; refusing to trust it")
        resp = yield HttpRequest(
            "GET", "/v1/proofs/consistency?" + urlencode({"from": cp.size, "to": trusted.size})
        )
        if resp.status != 200:
            raise LedgerRollbackError(
                f"{rollback}, and cannot prove it a prefix of that one "
                f"({_http_error(resp)}); refusing to trust it"
            )
        proof = _hashes(_field(_decode(resp), "consistency_proof", list), "consistency proof")
        try:
            verify_consistency(cp.size, trusted.size, proof, cp.root_hash, trusted.root_hash)
        except ConsistencyProofError as exc:
            raise LedgerForkError(
                f"ledger fork: checkpoint {cp.size} is not a prefix of the verified checkpoint "
                f"{trusted.size}: {exc}"
            ) from exc

    def _prove_consistent(self, size1: int, root1: bytes, size2: int, root2: bytes) -> Flow:
        resp = yield HttpRequest(
            "GET", "/v1/proofs/consistency?" + urlencode({"from": size1, "to": size2})
        )
        if resp.status != 200:
            raise LedgerTrustError(
                f"cannot prove checkpoint {size2} consistent with verified checkpoint {size1}: "
                f"{_http_error(resp)}"
            )
        proof = _hashes(_field(_decode(resp), "consistency_proof", list), "consistency proof")
        try:
            verify_consistency(size1, size2, proof, root1, root2)
        except ConsistencyProofError as exc:
            raise LedgerForkError(
                f"ledger fork: checkpoint {size2} is not consistent with the verified checkpoint "
                f"{size1}: {exc}"
            ) from exc

    # -- writes --------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry], single: bool) -> Flow:
        docs = [entry_to_json(e) for e in entries]
        body = orjson.dumps(docs[0] if single else docs)
        resp = yield HttpRequest("POST", "/v1/entries", body, self.token())
        if resp.status not in (200, 201):
            raise _http_error(resp)
        doc = _decode(resp)
        vcp = yield from self.reconcile(_field(doc, "checkpoint", str))
        items = [doc] if single else _field(doc, "receipts", list)
        if len(items) != len(entries):
            raise LedgerResponseError(
                f"ledger returned {len(items)} receipts for {len(entries)} entries"
            )
        receipts = []
        for entry, item in zip(entries, items, strict=True):
            index = _field(item, "index", int)
            lh = leaf_hash(leaf_data(entry))
            proof = _hashes(_field(item, "inclusion_proof", list), "inclusion proof")
            self._check_inclusion(lh, index, proof, vcp)
            receipts.append(VerifiedReceipt(index, lh, vcp, bool(_field(item, "existing", bool))))
        return receipts

    # -- reads ---------------------------------------------------------------------------

    def entry(self, index: int) -> Flow:
        vcp = yield from self.checkpoint()
        if index >= vcp.size:
            raise LedgerClientError(f"entry {index} is not in the verified tree of size {vcp.size}")
        doc = yield from self._get_json(f"/v1/entries/{index}")
        proof_doc = yield from self._get_json(
            "/v1/proofs/inclusion?" + urlencode({"index": index, "size": vcp.size})
        )
        proof = _hashes(_field(proof_doc, "inclusion_proof", list), "inclusion proof")
        return self._verified_entry(doc, index, proof, vcp)

    def lookup(self, path: str, params: dict[str, str], accept: Callable[[Entry], bool]) -> Flow:
        """Follow a lookup's pages; every entry is proven and must match what was asked."""
        found, _ = yield from self.lookup_at(path, params, accept)
        return found

    def lookup_at(self, path: str, params: dict[str, str], accept: Callable[[Entry], bool]) -> Flow:
        """Like ``lookup``, also returning the oldest checkpoint a page was answered at: the
        answer claims to list every match in that tree (a claim only the whole log can
        check, see log_tail)."""
        found: list[VerifiedEntry] = []
        oldest: VerifiedCheckpoint | None = None
        after: int | None = None
        limit = str(self.lookup_page_limit)
        for _ in range(self.max_lookup_pages):
            query = dict(params, limit=limit)
            if after is not None:
                query["after"] = str(after)
            doc = yield from self._get_json(f"{path}?{urlencode(query)}")
            vcp = yield from self.reconcile(_field(doc, "checkpoint", str))
            if oldest is None or vcp.size < oldest.size:
                oldest = vcp
            for item in _field(doc, "entries", list):
                index = _field(item, "index", int)
                proof = _hashes(_field(item, "inclusion_proof", list), "inclusion proof")
                ve = self._verified_entry(item, index, proof, vcp)
                if not accept(ve.entry):
                    raise LedgerResponseError(
                        f"ledger answered {path} with unrelated entry {index}"
                    )
                found.append(ve)
            next_after = doc.get("next_after")
            if next_after is None:
                return found, oldest
            if type(next_after) is not int or (after is not None and next_after <= after):
                # A cursor that does not advance would page forever.
                raise LedgerResponseError("next_after is not an index past the previous page")
            after = next_after
        raise LedgerClientError(
            f"{path} has more than {self.max_lookup_pages} pages of results; refusing to read more"
        )

    def _verified_entry(
        self, doc: object, index: int, proof: list[bytes], vcp: VerifiedCheckpoint
    ) -> VerifiedEntry:
        if _field(doc, "index", int) != index:
            raise LedgerResponseError(f"asked for entry {index}, got another")
        try:
            entry = entry_from_json(_field(doc, "entry", dict))
        except ChainError as exc:
            raise LedgerResponseError(f"entry {index} is malformed: {exc}") from exc
        lh = leaf_hash(leaf_data(entry))
        self._check_inclusion(lh, index, proof, vcp)
        return VerifiedEntry(index, entry, lh, vcp, tuple(proof))

    @staticmethod
    def _check_inclusion(
        lh: bytes, index: int, proof: list[bytes], vcp: VerifiedCheckpoint
    ) -> None:
        try:
            verify_inclusion(lh, index, vcp.size, proof, vcp.checkpoint.root_hash)
        except ProofError as exc:
            raise LedgerResponseError(
                f"entry {index} is not proven in the verified checkpoint of size {vcp.size}: {exc}"
            ) from exc


def _decode(resp: HttpResponse) -> Any:
    if resp.status != 200 and resp.status != 201:
        raise _http_error(resp)
    try:
        return orjson.loads(resp.body)
    except orjson.JSONDecodeError as exc:
        raise LedgerResponseError(f"ledger answer is not JSON: {exc}") from None


def _http_error(resp: HttpResponse) -> LedgerHTTPError:
    # Not the ledger's JSON error (a proxy's HTML page, say): its first words, on one line.
    text = " ".join(resp.body[:2000].decode("utf-8", "replace").split())
    message = (text[:200] + "...") if len(text) > 200 else (text or "no error message")
    index = None
    try:
        doc = orjson.loads(resp.body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            message = doc["error"]
            index = doc.get("index") if isinstance(doc.get("index"), int) else None
    except orjson.JSONDecodeError:
        pass
    cls = EntryExistsError if resp.status == 409 else LedgerHTTPError
    return cls(resp.status, message, index)
