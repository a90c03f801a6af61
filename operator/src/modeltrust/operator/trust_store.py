"""The last verified ledger checkpoint, kept in a ConfigMap and moved forward only by
compare-and-swap on its resourceVersion (docs/architecture.md, fail-closed rules).

One ConfigMap per ledger (named after a hash of its verifier key) in the operator's
namespace. The ConfigMap is not trusted as such (anyone with write access to it could
name a forked ledger's checkpoint):

- every record read is checked: its note must verify with the ledger's key and parse to
  exactly the record's origin, size and root (the witness wrapper checks cosignatures on
  that same note), else it is refused;
- the process keeps a high-water mark, the newest checkpoint it verified itself, and
  answers every read from it (the record is read once, at first use, and again only when
  a write answers 409). A record that differs from it (older, missing, newer, or another
  root at the same size) is ignored: trust moves on only through the verifying client,
  which proves every newer checkpoint consistent with the high-water mark, and then
  replaces the record (logged at ERROR with what it replaced). At start the process adopts
  the stored record after checking its note.
- a missing record is not a reason to trust whatever the ledger shows now: the `first_use`
  hook decides (trust_reset.first_use_refusal). While models verified against this ledger
  are serving, first use is refused (TrustRecordMissing, logged at ERROR) until trust is
  reset explicitly (`reset`, driven by trust_reset.py); a brand-new install may still
  trust on first use, which `on_first_use` logs at WARNING and audits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.errors import ChainError
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.trust_state import LedgerTrustError, TrustedCheckpoint
from modeltrust.operator.errors import Conflict
from modeltrust.operator.kube import Kube

log = logging.getLogger("modeltrust.operator.trust")

DATA_KEY = "trusted-checkpoint.json"
# Writes of one checkpoint that keep answering 409 before the client is told to retry.
WRITE_ATTEMPTS = 4
# A refused first use is asked again (the hook lists ModelDeployments) at most this often.
FIRST_USE_RECHECK_SECONDS = 5.0


class TrustRecordMissing(LedgerTrustError):
    """No trusted checkpoint is recorded, and trusting the ledger on first use is refused
    (models verified against it are serving): only an explicit trust reset moves on."""


# Returns None when trust on first use is acceptable, else why not (the refusal message).
FirstUseCheck = Callable[[], Awaitable[str | None]]
FirstUseHook = Callable[[TrustedCheckpoint], Awaitable[None]]


def config_map_name(verifier_key: str, witnesses: str = "") -> str:
    """One record per ledger key; a policy requiring witness cosignatures gets its own
    record (keyed on the witness set and quorum too), holding only witnessed checkpoints."""
    identity = verifier_key if not witnesses else f"{verifier_key}\n{witnesses}"
    return "modeltrust-ledger-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


class ConfigMapTrustStore:
    """An AsyncTrustStateStore for modeltrust.chain's AsyncLedgerClient.

    Reads are answered from the process's high-water mark (the ConfigMap is read once, at
    first use); the ConfigMap is written only when a verified checkpoint moves trust
    forward, one write at a time, and re-read only when a write answers 409."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        verifier_key: str,
        witnesses: str = "",
        *,
        first_use: FirstUseCheck | None = None,
        on_first_use: FirstUseHook | None = None,
    ) -> None:
        self.kube = kube
        self.first_use = first_use
        self.on_first_use = on_first_use
        self._refusing_first_use = False  # logged once per refusal episode
        self._refusal: tuple[float, str] | None = None  # (monotonic time, message)
        self.namespace = namespace
        self.name = config_map_name(verifier_key, witnesses)
        self.verifier_key = verifier_key
        self._high_water: TrustedCheckpoint | None = None
        self._resource_version: str | None = None
        self._adopted = False  # the record was read (and its note checked) at first use
        # Concurrent ledger calls that each verified a newer checkpoint write one at a time:
        # the ones that lose see the moved high-water mark and need no write of their own.
        self._writer = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    async def _read(self) -> TrustedCheckpoint | None:
        """The stored record, checked against its own signed note; LedgerTrustError if it
        is unreadable or does not verify."""
        cm = await self.kube.get_config_map(self.namespace, self.name)
        if cm is None:
            self._resource_version = None
            return None
        self._resource_version = cm["metadata"].get("resourceVersion")
        raw = (cm.get("data") or {}).get(DATA_KEY)
        if raw is None:
            return None
        try:
            record = TrustedCheckpoint.from_json(json.loads(raw))
        except ValueError as exc:
            # A damaged record must not silently reset trust to "first use".
            raise LedgerTrustError(
                f"{self.where} holds an unreadable trusted checkpoint: {exc}; repair or "
                "delete it and restart the operator"
            ) from exc
        return self._check_note(record)

    def _check_note(self, record: TrustedCheckpoint) -> TrustedCheckpoint:
        try:
            verifier = NoteVerifier.from_verifier_key(self.verifier_key)
            signed = verify_checkpoint(record.note, verifier)
        except ChainError as exc:
            raise LedgerTrustError(
                f"{self.where} holds a trusted checkpoint (size {record.size}) whose note "
                f"does not verify with the ledger key: {exc}; it was not written by the "
                "operator: investigate, then delete it and restart the operator"
            ) from None
        if (signed.origin, signed.size, signed.root_hash) != (
            record.origin,
            record.size,
            record.root_hash,
        ):
            raise LedgerTrustError(
                f"{self.where} records origin {record.origin!r} size {record.size}, but its "
                f"signed note is for origin {signed.origin!r} size {signed.size} (or another "
                "root); it was edited: investigate, then delete it and restart the operator"
            )
        return record

    async def _read_usable(self) -> TrustedCheckpoint | None:
        """The stored record; a bad one is fatal only when this process has nothing
        verified of its own to fall back on (at start)."""
        try:
            return await self._read()
        except LedgerTrustError as exc:
            if self._high_water is None:
                raise
            log.error("%s; keeping the checkpoint of size %d verified by this process",
                      exc, self._high_water.size)  # fmt: skip
            return None

    async def load(self) -> TrustedCheckpoint | None:
        if self._adopted:
            return self._high_water
        async with self._writer:
            return await self._adopt_stored()

    async def _adopt_stored(self) -> TrustedCheckpoint | None:
        """First use in this process: the persisted record (its note checked) is trusted.

        No record: the `first_use` hook decides whether the ledger may be trusted as it is
        now; if not, TrustRecordMissing, and the record is read again on the next call (an
        explicit reset, or a record restored by hand, lifts it)."""
        if not self._adopted:
            record = await self._read()
            if record is None and self.first_use is not None:
                recent = self._refusal
                if recent is not None and time.monotonic() - recent[0] < FIRST_USE_RECHECK_SECONDS:
                    raise TrustRecordMissing(recent[1])
                refusal = await self.first_use()
                self._refusal = None if refusal is None else (time.monotonic(), refusal)
                if refusal is not None:
                    if not self._refusing_first_use:
                        log.error("TRUST RECORD MISSING: %s", refusal)
                        self._refusing_first_use = True
                    raise TrustRecordMissing(refusal)
            self._refusing_first_use = False
            self._high_water = record
            self._adopted = True
        return self._high_water

    async def reset(self, new: TrustedCheckpoint) -> TrustedCheckpoint | None:
        """An explicit trust reset: `new` (already proven by the caller against the
        checkpoint the cluster operator named) replaces the record and the high-water mark,
        whatever they held, even when it is older. Returns what was trusted before."""
        async with self._writer:
            before = self._high_water
            for _ in range(WRITE_ATTEMPTS):
                cm = await self.kube.get_config_map(self.namespace, self.name)
                meta = {} if cm is None else cm["metadata"]
                self._resource_version = meta.get("resourceVersion")
                body = self._body(new)
                try:
                    if self._resource_version is None:
                        written = await self.kube.create_config_map(self.namespace, body)
                    else:
                        body["metadata"]["resourceVersion"] = self._resource_version
                        replaced = await self.kube.replace_config_map(
                            self.namespace, self.name, body
                        )
                        if replaced is None:
                            continue
                        written = replaced
                except Conflict:
                    continue
                self._resource_version = (written.get("metadata") or {}).get("resourceVersion")
                self._high_water = new
                self._adopted = True
                self._refusing_first_use = False
                self._refusal = None
                return before
        raise LedgerTrustError(f"{self.where} kept changing during the trust reset; retry")

    def _body(self, new: TrustedCheckpoint) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/part-of": "modeltrust"},
                "annotations": {"modeltrust.dev/ledger-origin": new.origin},
            },
            "data": {DATA_KEY: json.dumps(new.to_json(), indent=1)},
        }

    async def compare_and_swap(
        self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint
    ) -> bool:
        async with self._writer:
            current = await self._adopt_stored()
            if not (
                current is expected is None
                or (expected is not None and expected.same_tree(current))
            ):
                return False  # trust moved meanwhile: the client reloads and re-proves
            if current is not None and new.size < current.size:
                return False
            if current is not None and new.same_tree(current):
                return True
            if not await self._write(current, new):
                return False
            self._high_water = new
            if current is None and self.on_first_use is not None:
                await self.on_first_use(new)
            return True

    async def _write(self, current: TrustedCheckpoint | None, new: TrustedCheckpoint) -> bool:
        """Store `new` over the record last seen; on 409 re-read once per attempt."""
        body = self._body(new)
        for _ in range(WRITE_ATTEMPTS):
            try:
                if self._resource_version is None:
                    written = await self.kube.create_config_map(self.namespace, body)
                else:
                    body["metadata"]["resourceVersion"] = self._resource_version
                    replaced = await self.kube.replace_config_map(self.namespace, self.name, body)
                    if replaced is None:  # deleted meanwhile: create it again
                        self._resource_version = None
                        body["metadata"].pop("resourceVersion", None)
                        continue
                    written = replaced
            except Conflict:
                # Someone else wrote the record: re-read it (its resourceVersion) and decide.
                stored = await self._read_usable()
                if current is None and stored is not None:
                    # It appeared before this process trusted anything: adopt it as at
                    # start (note checked) and let the client prove `new` against it.
                    self._high_water = stored
                    return False
                if stored is not None and not stored.same_tree(current):
                    # A record this process never verified; `new` is proven consistent
                    # with what it did verify, so it replaces that record.
                    log.error(
                        "replacing the unverified trusted checkpoint in %s (size %d, root %s) "
                        "with the ledger's size %d, proven consistent with size %s verified "
                        "by this process",
                        self.where, stored.size, stored.root_hash.hex(), new.size,
                        "none" if current is None else current.size,
                    )  # fmt: skip
                body["metadata"].pop("resourceVersion", None)
                continue
            self._resource_version = (written.get("metadata") or {}).get("resourceVersion")
            return True
        log.warning("%s kept changing during %d writes; retrying later", self.where, WRITE_ATTEMPTS)
        return False
