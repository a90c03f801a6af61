"""Every revocation on a ledger, known from reading the log itself (not from its lookups).

"Nothing revoked this model" cannot be proven with the ledger's lookup endpoints: each
returned entry carries an inclusion proof, but a ledger (or anyone on the path) can
leave entries out. So the operator reads every entry of the log through the range read
(modeltrust.chain.log_tail), checks that together they hash to the root of the verified
checkpoint, and keeps what it needs from them:

- every revocation entry (by digest and by key id), which is what revocation verdicts
  are made from;
- the ledger index of every registration, by digest, to check that the registration
  lookup returned all of them (who registered a digest decides whose digest revocation
  counts, so an omitted registration must not go unnoticed).

The index lives in memory and is rebuilt from entry 0 when the operator starts: only the
right edge of the tree (O(log n) hashes) and those two tables are kept, so memory is
small, but reading the log costs time proportional to its size at start (measured in
docs/operator.md). It is not persisted because a persisted revocation list could be
edited by whoever can write the ConfigMap it lives in, and nothing in the log's hashes
would show it. Afterwards each call reads only the entries appended since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence

from modeltrust.chain.client import AsyncLedgerClient, LoggedEntry, VerifiedCheckpoint
from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import Registration, Revocation
from modeltrust.chain.merkle import CompactRange
from modeltrust.chain.trust_state import LedgerForkError, LedgerTrustError

log = logging.getLogger("modeltrust.operator.revocations")


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
        self._lock = asyncio.Lock()

    @property
    def size(self) -> int:
        """How many log entries the index covers (entries [0, size))."""
        return self._range.size

    async def advance(self, client: AsyncLedgerClient, to: VerifiedCheckpoint) -> None:
        """Read the entries up to the verified checkpoint ``to`` (only those not read yet).

        On any failure the index stays where it was. Raises LogTailError (a
        LedgerTrustError) when the served entries do not make up ``to``'s tree,
        LedgerForkError when ``to`` has the size of the covered tree but another root.
        """
        async with self._lock:
            if to.size < self._range.size:
                return  # already past it: a newer verified checkpoint was read meanwhile
            if to.size == self._range.size:
                if self._range.root() != to.checkpoint.root_hash:
                    raise LedgerForkError(
                        f"ledger fork: a checkpoint of size {to.size} has another root than the "
                        "tree of that size the operator read entry by entry"
                    )
                self._checkpoint = to
                return
            started, first = time.monotonic(), self._range.size
            result = await client.tail(self._range, to, keep=("revocation", "registration"))
            self._add(result.entries)
            self._range, self._checkpoint = result.compact_range, to
            if first == 0:
                log.info(
                    "%s: read all %d ledger entries in %.2f s; every revocation is known",
                    self.name, to.size, time.monotonic() - started,
                )  # fmt: skip

    def _add(self, entries: Iterable[LoggedEntry]) -> None:
        for le in entries:
            e = le.entry
            if isinstance(e, Revocation):
                table = self._by_digest if e.target_kind == "digest" else self._by_key
                table.setdefault(e.target, []).append(le)
            elif isinstance(e, Registration):
                self._registrations.setdefault(e.digest, []).append(le.index)

    def revocations(self, digest: str, key_ids: Sequence[str]) -> list[LoggedEntry]:
        """Every revocation entry naming ``digest`` or one of ``key_ids``, by ledger index.

        Signatures and authority are not checked here (verification and decisions do).
        """
        found = {le.index: le for le in self._by_digest.get(digest, ())}
        for k in key_ids:
            found.update((le.index, le) for le in self._by_key.get(k, ()))
        return [found[i] for i in sorted(found)]

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
