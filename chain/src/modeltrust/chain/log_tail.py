"""Read the log itself, not an index of it: every entry between two verified checkpoints.

A lookup (``/v1/revocations?digest=``) proves that what it returns is in the log, but
not that nothing was left out, so "no revocation" can never be proven that way. A
client that reads *every* entry of ``[a, b)`` through the range read and checks that
they extend the tree it already verified at size ``a`` to exactly the root of a
verified checkpoint at size ``b`` knows the complete content of the log up to ``b``:
a dropped, added, reordered or altered entry changes the root.

``tail_flow`` is sans-IO like ``client_flows``: it yields ``HttpRequest``s and the
clients (``LedgerClient.tail``, ``AsyncLedgerClient.tail``) drive it. State between
calls is a ``CompactRange`` (one hash per set bit of the size, RFC 9162 perfect
subtrees); starting from ``CompactRange.empty()`` reads the log from entry 0.

Cost: one ``GET /v1/entries?start=&end=`` per ``page_size`` entries, and per entry
one SHA-256 plus on average one interior hash. Entries of the kinds the caller keeps
are parsed strictly (``entry_from_json``) and re-encoded canonically before hashing;
the others are only re-encoded (orjson, sorted keys, compact: the canonical form of
every valid entry) and hashed, which is 5-10x cheaper than validating them, and
discarded, so memory stays O(log n + kept entries). Their content is never
interpreted, and the root check proves that the bytes hashed are exactly the log's
leaves, so skipping their validation loses nothing (auditing entry schemas is
``modeltrust ledger verify --check-entries``' job).
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from modeltrust.chain.client_flows import (
    HttpRequest,
    HttpResponse,
    LedgerClientError,
    LedgerResponseError,
    VerifiedCheckpoint,
)
from modeltrust.chain.entries import Entry, entry_from_json, leaf_data
from modeltrust.chain.errors import ChainError, InvalidArgumentError
from modeltrust.chain.merkle import CompactRange, leaf_hash

PAGE_SIZE = 1000  # the ledger's range-read cap (server Limits.max_range)


class LogTailError(LedgerResponseError):
    """The entries the ledger served do not make up the verified tree."""


@dataclass(frozen=True)
class LoggedEntry:
    """An entry read from the log between two verified checkpoints.

    It is known to be the entry at ``index`` because all entries around it, hashed
    together, give the verified root; no per-entry inclusion proof exists or is needed.
    """

    index: int
    entry: Entry
    leaf_hash: bytes


@dataclass(frozen=True)
class TailResult:
    """The log read up to ``checkpoint``: its right edge, and the entries kept on the way."""

    checkpoint: VerifiedCheckpoint
    compact_range: CompactRange  # a fresh object; the caller's start range is never touched
    entries: tuple[LoggedEntry, ...]  # kept kinds, index order, from start.size to the end

    @property
    def size(self) -> int:
        return self.compact_range.size


def tail_flow(
    start: CompactRange,
    to: VerifiedCheckpoint,
    *,
    keep: Collection[str] = ("revocation",),
    page_size: int = PAGE_SIZE,
) -> Generator[HttpRequest, HttpResponse, TailResult]:
    """Read entries ``[start.size, to.size)`` and prove they extend ``start`` to ``to``.

    ``start`` must be the compact range of a tree the caller verified (the empty range,
    or a previous ``TailResult.compact_range``): the proof is only as good as it.
    ``to`` must be a checkpoint the client verified (signature, and consistency with the
    trusted one). Entries of a kind in ``keep`` are parsed strictly and returned; what is
    returned is exactly what the verified root commits to.

    Raises LogTailError (a LedgerTrustError) when the entries do not give ``to``'s root
    or are malformed, LedgerClientError when ``to`` is older than ``start`` or the ledger
    refuses the read. Nothing is returned, and no state changes, unless the root matches.
    """
    if not 1 <= page_size <= PAGE_SIZE:
        raise InvalidArgumentError(f"page_size must be 1..{PAGE_SIZE}")
    if to.size < start.size:
        raise LedgerClientError(
            f"cannot read the log back from size {start.size} to an older checkpoint {to.size}"
        )
    cr = CompactRange(start.size, start.hashes)
    kept: list[LoggedEntry] = []
    wanted = frozenset(keep)
    while cr.size < to.size:
        first = cr.size
        end = min(first + page_size, to.size)
        resp = yield HttpRequest("GET", "/v1/entries?" + urlencode({"start": first, "end": end}))
        items = _page_items(resp, first)
        if not items:
            raise LogTailError(f"the ledger served no entries from index {first}")
        if len(items) > end - first:
            raise LogTailError(f"the ledger served more entries than asked from index {first}")
        for offset, item in enumerate(items):
            index = first + offset
            doc = _entry_doc(item, index)
            if doc.get("kind") in wanted:
                entry = _entry(doc, index)
                lh = leaf_hash(leaf_data(entry))
                kept.append(LoggedEntry(index, entry, lh))
            else:
                lh = leaf_hash(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
            cr.push(lh)
    if cr.root() != to.checkpoint.root_hash:
        raise LogTailError(
            f"entries {start.size}..{to.size - 1} served by the ledger do not hash to the root "
            f"of the verified checkpoint of size {to.size}: an entry was dropped, added or altered"
        )
    return TailResult(to, cr, tuple(kept))


def _page_items(resp: HttpResponse, first: int) -> list[Any]:
    if resp.status != 200:
        message = resp.body[:300].decode("utf-8", "replace")
        raise LedgerClientError(
            f"the ledger refused the range read from index {first}: {resp.status} {message}"
        )
    try:
        doc = orjson.loads(resp.body)
    except orjson.JSONDecodeError as exc:
        raise LogTailError(f"the range read from index {first} is not JSON: {exc}") from None
    items = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(items, list) or (isinstance(doc, dict) and doc.get("start") != first):
        raise LogTailError(f"the range read from index {first} has no entries list for it")
    return items


def _entry_doc(item: object, index: int) -> dict[str, Any]:
    if not isinstance(item, dict) or type(item.get("index")) is not int or item["index"] != index:
        raise LogTailError(f"the ledger served another entry where entry {index} belongs")
    doc = item.get("entry")
    if not isinstance(doc, dict):
        raise LogTailError(f"entry {index} served by the ledger is not a JSON object")
    return doc


def _entry(doc: dict[str, Any], index: int) -> Entry:
    try:
        return entry_from_json(doc)
    except ChainError as exc:
        # A leaf of a kept kind that does not parse cannot be judged (it might be a
        # revocation), so the whole read fails rather than skip it.
        raise LogTailError(f"entry {index} served by the ledger is malformed: {exc}") from None
