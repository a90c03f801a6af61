"""Every revocation on a ledger, known from reading the log itself (not from its lookups).

"Nothing revoked this model" cannot be proven with the ledger's lookup endpoints: each
returned entry carries an inclusion proof, but a ledger (or anyone on the path, or anyone
who can edit the ledger's lookup table) can leave entries out. So a verifier reads every
entry of the log through the range read (``log_tail``), checks that together they hash
to the root of the verified checkpoint, and keeps what it needs from them:

- every revocation entry (by digest and by key id), which is what revocation verdicts
  are made from (``trust.evaluate``);
- the ledger index of every registration, by digest, to check that the registration
  lookup returned all of them (who registered a digest decides whose digest revocation
  counts, so an omitted registration must not go unnoticed).

The index lives in memory: only the right edge of the tree (O(log n) hashes) and those
two tables are kept, but reading the log costs time proportional to its size the first
time (the operator keeps one index per ledger and reads only new entries afterwards; a
one-shot ``modeltrust verify`` reads the whole log once). It is never persisted: a stored
revocation list could be edited, and nothing in the log's hashes would show it.

``read_ledger`` / ``read_ledger_async`` are the one way the operator and ``modeltrust
verify`` gather a model's materials: verify the ledger's checkpoint, read the log up to
it, look up the digest's registrations and check the lookup left none out.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modeltrust.chain.client import (
    AsyncLedgerClient,
    LedgerClient,
    LoggedEntry,
    TailResult,
    VerifiedCheckpoint,
)
from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import Registration, Revocation
from modeltrust.chain.merkle import CompactRange
from modeltrust.chain.trust_state import LedgerForkError, LedgerTrustError

log = logging.getLogger("modeltrust.chain.revocations")

KEEP = ("revocation", "registration")


class IncompleteLookup(LedgerTrustError):
    """The ledger's lookup left out an entry that the verified log holds."""


class RevocationIndex:
    """The revocations and registration indices of one ledger up to a verified checkpoint."""

    def __init__(self, name: str = "ledger") -> None:
        self.name = name
        self._range = CompactRange.empty()
        self._checkpoint: VerifiedCheckpoint | None = None
        self._by_digest: dict[str, list[LoggedEntry]] = {}
        self._by_key: dict[str, list[LoggedEntry]] = {}
        self._registrations: dict[str, list[int]] = {}
        self._revocations: list[LoggedEntry] = []  # every revocation, in ledger order
        self._lock = asyncio.Lock()

    @property
    def size(self) -> int:
        """How many log entries the index covers (entries [0, size))."""
        return self._range.size

    def _needs_read(self, to: VerifiedCheckpoint) -> bool:
        if to.size < self._range.size:
            return False  # already past it: a newer verified checkpoint was read meanwhile
        if to.size == self._range.size:
            if self._range.root() != to.checkpoint.root_hash:
                raise LedgerForkError(
                    f"ledger fork: a checkpoint of size {to.size} has another root than the "
                    "tree of that size read entry by entry"
                )
            self._checkpoint = to
            return False
        return True

    def _apply(self, result: TailResult, started: float, first: int) -> None:
        self._add(result.entries)
        self._range, self._checkpoint = result.compact_range, result.checkpoint
        if first == 0:
            log.info(
                "%s: read all %d ledger entries in %.2f s; every revocation is known",
                self.name, result.size, time.monotonic() - started,
            )  # fmt: skip

    async def advance(self, client: AsyncLedgerClient, to: VerifiedCheckpoint) -> None:
        """Read the entries up to the verified checkpoint ``to`` (only those not read yet).

        On any failure the index stays where it was. Raises LogTailError (a
        LedgerTrustError) when the served entries do not make up ``to``'s tree,
        LedgerForkError when ``to`` has the size of the covered tree but another root.
        """
        async with self._lock:
            if not self._needs_read(to):
                return
            started, first = time.monotonic(), self._range.size
            self._apply(await client.tail(self._range, to, keep=KEEP), started, first)

    def advance_sync(self, client: LedgerClient, to: VerifiedCheckpoint) -> None:
        """``advance`` for the blocking client (one thread)."""
        if not self._needs_read(to):
            return
        started, first = time.monotonic(), self._range.size
        self._apply(client.tail(self._range, to, keep=KEEP), started, first)

    def _add(self, entries: Iterable[LoggedEntry]) -> None:
        for le in entries:
            e = le.entry
            if isinstance(e, Revocation):
                table = self._by_digest if e.target_kind == "digest" else self._by_key
                table.setdefault(e.target, []).append(le)
                self._revocations.append(le)
            elif isinstance(e, Registration):
                self._registrations.setdefault(e.digest, []).append(le.index)

    def revocations(self, digest: str, key_ids: Sequence[str]) -> list[LoggedEntry]:
        """Every revocation entry naming ``digest`` or one of ``key_ids``, by ledger index.

        Signatures and authority are not checked here (``trust`` does).
        """
        found = {le.index: le for le in self._by_digest.get(digest, ())}
        for k in key_ids:
            found.update((le.index, le) for le in self._by_key.get(k, ()))
        return [found[i] for i in sorted(found)]

    def revocations_since(self, start: int) -> tuple[list[LoggedEntry], int]:
        """Every revocation entry at ledger index ``start`` or later that the index holds, and
        the size it covers: a follower passes that size as ``start`` next time and so sees
        each revocation once, whoever advanced the index (signatures are not checked here)."""
        first = bisect.bisect_left(self._revocations, start, key=lambda le: le.index)
        return self._revocations[first:], self._range.size

    def require_all_registrations(
        self, digest: str, returned: Iterable[VerifiedEntry], below: int
    ) -> None:
        """Raise IncompleteLookup unless ``returned`` (a verified registration lookup made
        at a checkpoint of size >= ``below``) holds every registration of ``digest`` at
        an index below ``below`` that the index read from the log."""
        got = {ve.index for ve in returned}
        missing = [i for i in self._registrations.get(digest, ()) if i < below and i not in got]
        if missing:
            raise IncompleteLookup(
                f"the ledger's registration lookup for {digest} left out the registration(s) "
                f"at index {', '.join(map(str, missing[:5]))}, which the log holds"
            )


@dataclass(frozen=True)
class LedgerRead:
    """A model's materials as read from one ledger: every registration of the digest
    (inclusion-proven, checked complete against the log), and every revocation naming the
    digest or one of those registrations' signer keys (from the complete log)."""

    registrations: tuple[VerifiedEntry, ...]
    revocations: tuple[LoggedEntry, ...]
    checkpoint: VerifiedCheckpoint  # the newest checkpoint the answer was proven against


def _assemble(
    index: RevocationIndex, digest: str, found: list[VerifiedEntry], at: VerifiedCheckpoint
) -> LedgerRead:
    index.require_all_registrations(digest, found, below=at.size)
    signer_ids = sorted(
        {ve.entry.signer_key_id for ve in found if isinstance(ve.entry, Registration)}
    )
    newest = max((ve.checkpoint for ve in found), key=lambda c: c.size, default=at)
    return LedgerRead(tuple(found), tuple(index.revocations(digest, signer_ids)), newest)


def read_ledger(client: LedgerClient, index: RevocationIndex, digest: str) -> LedgerRead:
    """Verify the ledger's checkpoint (moving trust forward), read the log up to it into
    ``index``, and look up ``digest``'s registrations. Raises ChainError subclasses:
    LedgerClientError (no answer), LedgerTrustError (an answer that does not verify,
    IncompleteLookup, rollback, fork)."""
    index.advance_sync(client, client.checkpoint())
    found, at = client.find_registrations_at(digest)
    return _assemble(index, digest, found, at)


async def read_ledger_async(
    client: AsyncLedgerClient, index: RevocationIndex, digest: str
) -> LedgerRead:
    """``read_ledger`` for the asyncio client."""
    await index.advance(client, await client.checkpoint())
    found, at = await client.find_registrations_at(digest)
    return _assemble(index, digest, found, at)
