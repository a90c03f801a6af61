"""Talking to a policy's ledger through modeltrust.chain's verifying client.

Why one long module: every ledger call the operator makes, and the trust-store and
first-use rules around them, in one place so that no caller bypasses them.

Every answer used here was checked by the client against a signed checkpoint that is
consistent with the trusted one (kept in a ConfigMap, see trust_store). Errors are
sorted into the two kinds `decide` distinguishes: "no verified answer" (fail closed,
retry) and "the ledger contradicts a checkpoint we trusted" (rollback or fork: every
rollout is blocked until a cluster operator acts).

Revocations are never taken from the ledger's lookups, which cannot prove that nothing
was left out: they come from a RevocationIndex per ledger, built by reading every entry
of the log and checking it against the verified root (modeltrust.chain.revocation_index,
read_ledger_async: the same reading `modeltrust verify` does). The registration lookup is
checked against the same index, so it cannot omit one either.

The trust boundary (docs/operator.md, "Trust reset"):
- a ledger judged inconsistent (rollback or fork) stays judged so in this process, per
  trusted-checkpoint record, until an explicit trust reset (`reset_trust`): every call on
  it fails with LedgerInconsistent before anything is sent, appends included;
- an audit append first verifies the ledger's current checkpoint, so a ledger that rolled
  back or forked is judged before an entry is sent to it, not after;
- a policy's spec.ledger.minimumCheckpoint is proven (consistency proof from it to the
  ledger's checkpoint) once per process and after every reset, before any other call;
- a missing trusted-checkpoint record is trusted on first use only when the `first_use`
  check allows it (trust_store, trust_reset.first_use_refusal): LedgerTrustMissing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeltrust.chain.client import AsyncLedgerClient, EntryExistsError
from modeltrust.chain.client_flows import VerifiedCheckpoint, VerifiedEntry
from modeltrust.chain.entries import AuditEntry, Registration
from modeltrust.chain.errors import ChainError, ProofError
from modeltrust.chain.merkle import verify_inclusion
from modeltrust.chain.revocation_index import RevocationIndex, read_ledger_async
from modeltrust.chain.trust import (
    RegistrationCheck,
    RevocationFact,
    check_registrations,
    check_revocations,
)
from modeltrust.chain.trust_state import (
    LedgerForkError,
    LedgerRollbackError,
    MemoryTrustStateStore,
    TrustedCheckpoint,
)
from modeltrust.operator.errors import (
    LedgerInconsistent,
    LedgerTokenMissing,
    LedgerTrustMissing,
    LedgerUnverified,
    LedgerUnwitnessed,
)
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.provenance import ProvenanceMaterial
from modeltrust.operator.trust_store import ConfigMapTrustStore, TrustRecordMissing
from modeltrust.operator.types import CheckpointRef, LedgerSpec
from modeltrust.operator.witness import (
    FreshCheckpointClient,
    WitnessedTrustStore,
    WitnessQuorumError,
    WitnessRequirement,
)

# A digest with more registrations than this many lookup pages (x1000) is refused rather
# than read: each page is up to 16 MiB (the client's answer cap), all held in memory.
MAX_LOOKUP_PAGES = 10

log = logging.getLogger("modeltrust.operator.ledger")


# The first-use check for one ledger (trust_reset.first_use_refusal, bound in handlers):
# None allows trust on first use, a string is the refusal.
FirstUseCheck = Callable[[LedgerSpec], Awaitable[str | None]]
# Told about every trust event (first use, reset) so that it is audited (audit_outbox).
TrustEventSink = Callable[[LedgerSpec, str, TrustedCheckpoint, tuple[str, ...]], Awaitable[None]]


def classify(exc: BaseException) -> Exception:
    if isinstance(exc, LedgerRollbackError | LedgerForkError):
        return LedgerInconsistent(str(exc))
    if isinstance(exc, TrustRecordMissing):
        return LedgerTrustMissing(str(exc))
    if isinstance(exc, WitnessQuorumError):
        return LedgerUnwitnessed(str(exc))
    return LedgerUnverified(str(exc) or type(exc).__name__)


@dataclass(frozen=True)
class LedgerEvidence:
    registrations: list[RegistrationCheck] = field(default_factory=list)
    revocations: list[RevocationFact] = field(default_factory=list)
    checkpoint_size: int | None = None
    error: str | None = None
    inconsistent: str | None = None
    unwitnessed: str | None = None
    trust_missing: str | None = None
    # The proven registration entries by ledger index (for the pod's offline proof).
    entries: Mapping[int, VerifiedEntry] = field(default_factory=dict)


APPENDS_UNCONFIGURED = (
    "no ledger token for audit appends: set MODELTRUST_LEDGER_TOKEN, or "
    "MODELTRUST_LEDGER_TOKEN_FILE to a token file (the chart mounts an audience-bound "
    "projected token there); the pod's service-account token is never sent to the ledger"
)


def token_reader(token: str | None, token_file: Path | None) -> Callable[[], str]:
    """A fixed token, or a file re-read on every use (projected tokens rotate).

    The returned function raises LedgerTokenMissing when there is no token to send: none
    configured, or the file unreadable or empty."""

    def read() -> str:
        if token:
            return token
        if token_file is None:
            raise LedgerTokenMissing(APPENDS_UNCONFIGURED)
        try:
            text = token_file.read_text().strip()
        except OSError as exc:
            raise LedgerTokenMissing(
                f"cannot read the ledger token file {token_file} "
                f"(MODELTRUST_LEDGER_TOKEN_FILE): {exc.strerror or exc}"
            ) from None
        if not text:
            raise LedgerTokenMissing(
                f"the ledger token file {token_file} (MODELTRUST_LEDGER_TOKEN_FILE) is empty"
            )
        return text

    return read


class LedgerAccess:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        token: Callable[[], str | None],
        *,
        timeout: float = 15.0,
        first_use: FirstUseCheck | None = None,
        trust_events: TrustEventSink | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.token = token
        self.timeout = timeout
        self.first_use = first_use
        self.trust_events = trust_events
        self._stores: dict[str, ConfigMapTrustStore | WitnessedTrustStore] = {}
        # Sticky "rolled back or forked" judgements by trusted-checkpoint record (store key):
        # nothing more is sent to such a ledger until an explicit reset.
        self._inconsistent: dict[str, str] = {}
        # (store key, minimumCheckpoint) pairs proven in this process.
        self._anchored: set[tuple[str, int, bytes]] = set()
        # Keyed on what decides what the client trusts, never on the token: the token is
        # read on every write, so its rotation neither leaks clients nor breaks appends.
        self._clients: dict[tuple[str, str, str, str], AsyncLedgerClient] = {}
        self._indexes: dict[tuple[str, str, str, str], RevocationIndex] = {}
        self._client_store: dict[tuple[str, str, str, str], str] = {}

    @staticmethod
    def store_key(ledger: LedgerSpec) -> str:
        """The identity of the trusted-checkpoint record for `ledger` (the ledger's key and
        the witness requirement): what trust, its resets and inconsistency are kept by."""
        requirement = WitnessRequirement.from_ledger(ledger)
        identity = requirement.identity if requirement is not None else ""
        return f"{ledger.verifier_key}\n{identity}"

    def store(self, ledger: LedgerSpec) -> ConfigMapTrustStore | WitnessedTrustStore:
        """The trusted-checkpoint record for this ledger (and witness requirement).

        Raises SpecError for witness keys that do not parse.
        """
        requirement = WitnessRequirement.from_ledger(ledger)
        identity = requirement.identity if requirement is not None else ""
        cache_key = self.store_key(ledger)
        store = self._stores.get(cache_key)
        if store is None:
            first_use = self.first_use

            async def check() -> str | None:
                return None if first_use is None else await first_use(ledger)

            async def trusted_on_first_use(cp: TrustedCheckpoint) -> None:
                log.warning(
                    "TRUST ON FIRST USE: no trusted checkpoint was recorded for ledger %s "
                    "(%s) and no model verified against it is serving; trusting its "
                    "checkpoint of size %d, root %s",
                    ledger.url, ledger.expected_origin, cp.size, cp.root_hash.hex(),
                )  # fmt: skip
                if self.trust_events is not None:
                    await self.trust_events(
                        ledger, "trust-on-first-use", cp,
                        ("no trusted checkpoint was recorded and no verified model was serving",),
                    )  # fmt: skip

            plain = ConfigMapTrustStore(
                self.kube, self.namespace, ledger.verifier_key, identity,
                first_use=check, on_first_use=trusted_on_first_use,
            )  # fmt: skip
            store = plain if requirement is None else WitnessedTrustStore(plain, requirement)
            self._stores[cache_key] = store
        return store

    # --- the trust boundary -----------------------------------------------------------------

    def inconsistent(self, ledger: LedgerSpec) -> str | None:
        """Why this ledger was judged rolled back or forked (None: it was not)."""
        return self._inconsistent.get(self.store_key(ledger))

    def _judge(self, ledger: LedgerSpec, err: Exception) -> Exception:
        """Remember an inconsistency judgement (sticky until reset_trust)."""
        if isinstance(err, LedgerInconsistent):
            key = self.store_key(ledger)
            if key not in self._inconsistent:
                self._inconsistent[key] = str(err)
                log.error(
                    "LEDGER INCONSISTENT (%s): %s; nothing more is sent to it and every rollout "
                    "under it is refused until an explicit trust reset (docs/operator.md)",
                    ledger.url, err,
                )  # fmt: skip
        return err

    async def _ready(self, ledger: LedgerSpec) -> None:
        """Before any call: not judged inconsistent, and the policy's trust anchor proven."""
        judged = self.inconsistent(ledger)
        if judged is not None:
            raise LedgerInconsistent(f"{judged} (judged earlier; sticky until a trust reset)")
        anchor = ledger.minimum_checkpoint
        if anchor is None:
            return
        key = (self.store_key(ledger), anchor.size, anchor.root_hash)
        if key in self._anchored:
            return
        try:
            await self.prove_from(ledger, anchor)
        except LedgerInconsistent as exc:
            # Refused for this policy (asked again on every call); not a judgement of the
            # ledger's key: another policy may pin another anchor, or a typo was made.
            log.error("ledger %s fails the policy's minimumCheckpoint: %s", ledger.url, exc)
            raise LedgerInconsistent(
                f"the ledger is below or not consistent with the policy's "
                f"minimumCheckpoint ({anchor.describe()}): {exc}"
            ) from None
        self._anchored.add(key)

    async def prove_from(self, ledger: LedgerSpec, ref: CheckpointRef) -> VerifiedCheckpoint:
        """The ledger's current checkpoint, proven to contain the tree `ref` names (equal to
        it, or a consistency proof from it), with the policy's witness quorum. Uses its own
        client and memory, never the trusted-checkpoint record."""
        anchor = TrustedCheckpoint(ledger.expected_origin, ref.size, ref.root_hash, note="")
        client = AsyncLedgerClient(
            ledger.url,
            verifier_key=ledger.verifier_key,
            origin=ledger.expected_origin,
            trust_store=MemoryTrustStateStore(anchor),
            timeout=self.timeout,
        )
        try:
            vcp = await client.checkpoint()
            requirement = WitnessRequirement.from_ledger(ledger)
            if requirement is not None:
                requirement.check(
                    vcp.note, what=f"the ledger's checkpoint of size {vcp.size}", fresh=True
                )
        except ChainError as exc:
            raise classify(exc) from exc
        finally:
            await client.close()
        if vcp.size < ref.size:  # an older one proven a prefix: the ledger lost entries
            raise LedgerInconsistent(
                f"the ledger's checkpoint has size {vcp.size}, below {ref.describe()}"
            )
        return vcp

    async def reset_trust(
        self, ledger: LedgerSpec, ref: CheckpointRef, reasons: tuple[str, ...]
    ) -> tuple[VerifiedCheckpoint, TrustedCheckpoint | None]:
        """The explicit trust reset: prove the ledger's current checkpoint contains `ref`
        (and the policy's minimumCheckpoint), make it the trusted checkpoint whatever was
        trusted before, forget the inconsistency judgement and everything read from the
        ledger under the old trust, and audit the reset. Returns (trusted now, before)."""
        vcp = await self.prove_from(ledger, ref)
        if ledger.minimum_checkpoint is not None:
            await self.prove_from(ledger, ledger.minimum_checkpoint)
        cp = vcp.checkpoint
        new = TrustedCheckpoint(cp.origin, cp.size, cp.root_hash, vcp.note)
        try:
            before = await self.store(ledger).reset(new)
        except ChainError as exc:
            raise classify(exc) from exc
        key = self.store_key(ledger)
        self._inconsistent.pop(key, None)
        self._anchored = {a for a in self._anchored if a[0] != key}
        # Clients and revocation indexes built under the old trust read another tree.
        for ck in [k for k, sk in self._client_store.items() if sk == key]:
            self._client_store.pop(ck)
            self._indexes.pop(ck, None)
            client = self._clients.pop(ck, None)
            if client is not None:
                await client.close()
        if self.trust_events is not None:
            await self.trust_events(ledger, "trust-reset", new, reasons)
        return vcp, before

    @staticmethod
    def _key(ledger: LedgerSpec) -> tuple[str, str, str, str]:
        witnesses = "\n".join(sorted(ledger.witnesses)) + f"\n{ledger.witness_quorum}"
        if ledger.max_cosignature_age is not None:
            witnesses += f"\nmax-age={ledger.max_cosignature_age:g}"
        # Mirrors change where reads may go, not what is trusted: a client of its own, the
        # same trusted-checkpoint record (store_key).
        where = "\n".join((ledger.url, *ledger.mirrors))
        return (where, ledger.verifier_key, ledger.expected_origin, witnesses)

    def client(self, ledger: LedgerSpec) -> AsyncLedgerClient:
        key = self._key(ledger)
        client = self._clients.get(key)
        if client is None:
            requirement = WitnessRequirement.from_ledger(ledger)
            settings: dict[str, Any] = {
                "verifier_key": ledger.verifier_key,
                "origin": ledger.expected_origin,
                "trust_store": self.store(ledger),
                "token": self.token,
                "timeout": self.timeout,
                "max_lookup_pages": MAX_LOOKUP_PAGES,
                "mirrors": ledger.mirrors,
            }
            if requirement is not None and requirement.max_age is not None:
                client = FreshCheckpointClient(ledger.url, requirement=requirement, **settings)
            else:
                client = AsyncLedgerClient(ledger.url, **settings)
            self._clients[key] = client
            self._client_store[key] = self.store_key(ledger)
        return client

    def index(self, ledger: LedgerSpec) -> RevocationIndex:
        """The revocations read from this ledger's log (one per client: same trust)."""
        key = self._key(ledger)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = RevocationIndex(ledger.url)
        return index

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def checkpoint(self, ledger: LedgerSpec) -> VerifiedCheckpoint:
        """The ledger's current checkpoint, verified (and witnessed, if the policy says so)."""
        await self._ready(ledger)
        try:
            return await self.client(ledger).checkpoint()
        except ChainError as exc:
            raise self._judge(ledger, classify(exc)) from exc

    def answered_by(self, ledger: LedgerSpec) -> str:
        """Who answered this ledger's last read: its URL, or the mirror's."""
        return self.client(ledger).answered_by

    async def evidence(
        self, ledger: LedgerSpec, keys: TrustedKeys, digest: str, model_name: str
    ) -> LedgerEvidence:
        """Registrations of `digest` and the revocations that could apply to it."""
        try:
            await self._ready(ledger)
            try:
                read = await read_ledger_async(self.client(ledger), self.index(ledger), digest)
            except ChainError as exc:
                raise self._judge(ledger, classify(exc)) from exc
        except LedgerInconsistent as err:
            return LedgerEvidence(inconsistent=str(err))
        except LedgerUnwitnessed as err:
            return LedgerEvidence(unwitnessed=str(err))
        except LedgerTrustMissing as err:
            return LedgerEvidence(trust_missing=str(err))
        except LedgerUnverified as err:
            return LedgerEvidence(error=str(err))
        found = read.registrations
        size = max((ve.checkpoint.size for ve in found), default=None)
        return LedgerEvidence(
            registrations=check_registrations(found, keys.policy, model_name),
            revocations=check_revocations(read.revocations, keys.policy),
            checkpoint_size=size,
            entries={ve.index: ve for ve in found},
        )

    async def audit_trail(self, ledger: LedgerSpec, uid: str) -> list[VerifiedEntry]:
        """Every audit entry about the object `uid`, each proven in the verified tree."""
        await self._ready(ledger)
        try:
            return await self.client(ledger).audit_trail(uid=uid)
        except ChainError as exc:
            raise self._judge(ledger, classify(exc)) from exc

    async def registration(self, ledger: LedgerSpec, index: int) -> VerifiedEntry:
        """The registration at `index`, proven at the ledger's current verified checkpoint."""
        await self._ready(ledger)
        try:
            found = await self.client(ledger).entry(index)
        except ChainError as exc:
            raise self._judge(ledger, classify(exc)) from exc
        if not isinstance(found.entry, Registration):
            raise LedgerUnverified(f"ledger entry {index} is not a registration")
        return found

    async def inclusion_proof(self, ledger: LedgerSpec, found: VerifiedEntry) -> list[bytes]:
        """The inclusion proof of an already proven entry at its checkpoint's exact size.

        The client keeps the proof it verified (VerifiedEntry.inclusion_proof), so the
        ledger is not asked again; it is checked once more here against the same verified
        checkpoint, so the pod is never handed a proof the operator did not verify.
        """
        size = found.checkpoint.size
        try:
            verify_inclusion(
                found.leaf_hash,
                found.index,
                size,
                found.inclusion_proof,
                found.checkpoint.checkpoint.root_hash,
            )
        except ProofError as exc:
            raise LedgerUnverified(
                f"the inclusion proof of entry {found.index} at size {size} does not verify: {exc}"
            ) from exc
        return list(found.inclusion_proof)

    async def provenance(
        self, ledger: LedgerSpec, found: VerifiedEntry, publisher_key_pem: str
    ) -> ProvenanceMaterial:
        """Everything the pod's init step needs to re-verify `found` without the ledger."""
        if not isinstance(found.entry, Registration):
            raise LedgerUnverified(f"ledger entry {found.index} is not a registration")
        proof = await self.inclusion_proof(ledger, found)
        return ProvenanceMaterial(
            registration=found.entry,
            index=found.index,
            leaf_hash=found.leaf_hash,
            checkpoint_note=found.checkpoint.note,
            tree_size=found.checkpoint.size,
            inclusion_proof=tuple(proof),
            publisher_key_pem=publisher_key_pem,
            ledger_key=ledger.verifier_key,
            origin=found.checkpoint.checkpoint.origin,
        )

    async def append_audit(self, ledger: LedgerSpec, entry: AuditEntry) -> int:
        """Append `entry`; returns its ledger index. A retry of the same decision (same
        idempotency key) returns the index recorded the first time. Raises
        LedgerTokenMissing (a LedgerUnverified) before sending anything without a token."""
        if not self.token():
            raise LedgerTokenMissing(APPENDS_UNCONFIGURED)
        await self._ready(ledger)
        client = self.client(ledger)
        try:
            # Judge the ledger before sending it anything: a rolled-back or forked ledger
            # (or one without a trusted checkpoint while models serve) gets no entry.
            await client.checkpoint()
            receipt = await client.append(entry)
        except EntryExistsError as exc:
            if exc.index is None:
                raise LedgerUnverified(str(exc)) from exc
            return await self._recorded_earlier(ledger, client, entry, exc.index)
        except ChainError as exc:
            raise self._judge(ledger, classify(exc)) from exc
        return receipt.index

    async def _recorded_earlier(
        self, ledger: LedgerSpec, client: AsyncLedgerClient, entry: AuditEntry, index: int
    ) -> int:
        """A 409 names the entry recorded for this idempotency key earlier; the answer is
        not proof, so read that entry through the verifying client and require that it
        records the same decision (the time and reason texts of a retry may differ)."""
        try:
            found = await client.entry(index)
        except ChainError as exc:
            if isinstance(exc, LedgerRollbackError | LedgerForkError):
                raise self._judge(ledger, classify(exc)) from exc
            raise LedgerUnverified(
                f"the ledger says the audit entry was recorded at index {index}, "
                f"but that entry could not be verified: {exc}"
            ) from exc
        earlier = found.entry
        same = isinstance(earlier, AuditEntry) and (
            (earlier.idempotency_key, earlier.uid, earlier.action, earlier.decision)
            == (entry.idempotency_key, entry.uid, entry.action, entry.decision)
        )
        if not same:
            raise LedgerUnverified(
                f"the ledger says audit entry {entry.idempotency_key!r} was recorded at index "
                f"{index}, but the verified entry there records something else"
            )
        return index
