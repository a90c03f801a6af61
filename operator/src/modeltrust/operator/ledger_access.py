"""Talking to a policy's ledger through modeltrust.chain's verifying client.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

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
from modeltrust.chain.trust_state import LedgerForkError, LedgerRollbackError
from modeltrust.operator.errors import (
    LedgerInconsistent,
    LedgerTokenMissing,
    LedgerUnverified,
    LedgerUnwitnessed,
)
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.provenance import ProvenanceMaterial
from modeltrust.operator.trust_store import ConfigMapTrustStore
from modeltrust.operator.types import LedgerSpec
from modeltrust.operator.witness import (
    WitnessedTrustStore,
    WitnessQuorumError,
    WitnessRequirement,
)

# A digest with more registrations than this many lookup pages (x1000) is refused rather
# than read: each page is up to 16 MiB (the client's answer cap), all held in memory.
MAX_LOOKUP_PAGES = 10

log = logging.getLogger("modeltrust.operator.ledger")


def classify(exc: BaseException) -> Exception:
    if isinstance(exc, LedgerRollbackError | LedgerForkError):
        return LedgerInconsistent(str(exc))
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
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.token = token
        self.timeout = timeout
        self._stores: dict[str, ConfigMapTrustStore | WitnessedTrustStore] = {}
        # Keyed on what decides what the client trusts, never on the token: the token is
        # read on every write, so its rotation neither leaks clients nor breaks appends.
        self._clients: dict[tuple[str, str, str, str], AsyncLedgerClient] = {}
        self._indexes: dict[tuple[str, str, str, str], RevocationIndex] = {}

    def store(self, ledger: LedgerSpec) -> ConfigMapTrustStore | WitnessedTrustStore:
        """The trusted-checkpoint record for this ledger (and witness requirement).

        Raises SpecError for witness keys that do not parse.
        """
        requirement = WitnessRequirement.from_ledger(ledger)
        identity = requirement.identity if requirement is not None else ""
        cache_key = f"{ledger.verifier_key}\n{identity}"
        store = self._stores.get(cache_key)
        if store is None:
            plain = ConfigMapTrustStore(self.kube, self.namespace, ledger.verifier_key, identity)
            store = plain if requirement is None else WitnessedTrustStore(plain, requirement)
            self._stores[cache_key] = store
        return store

    @staticmethod
    def _key(ledger: LedgerSpec) -> tuple[str, str, str, str]:
        witnesses = "\n".join(sorted(ledger.witnesses)) + f"\n{ledger.witness_quorum}"
        return (ledger.url, ledger.verifier_key, ledger.expected_origin, witnesses)

    def client(self, ledger: LedgerSpec) -> AsyncLedgerClient:
        key = self._key(ledger)
        client = self._clients.get(key)
        if client is None:
            client = AsyncLedgerClient(
                ledger.url,
                verifier_key=ledger.verifier_key,
                origin=ledger.expected_origin,
                trust_store=self.store(ledger),
                token=self.token,
                timeout=self.timeout,
                max_lookup_pages=MAX_LOOKUP_PAGES,
            )
            self._clients[key] = client
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
        try:
            return await self.client(ledger).checkpoint()
        except ChainError as exc:
            raise classify(exc) from exc

    async def evidence(
        self, ledger: LedgerSpec, keys: TrustedKeys, digest: str, model_name: str
    ) -> LedgerEvidence:
        """Registrations of `digest` and the revocations that could apply to it."""
        try:
            read = await read_ledger_async(self.client(ledger), self.index(ledger), digest)
        except ChainError as exc:
            err = classify(exc)
            if isinstance(err, LedgerInconsistent):
                log.error("LEDGER INCONSISTENT (%s): all rollouts are blocked: %s", ledger.url, err)
                return LedgerEvidence(inconsistent=str(err))
            if isinstance(err, LedgerUnwitnessed):
                return LedgerEvidence(unwitnessed=str(err))
            return LedgerEvidence(error=str(err))
        found = read.registrations
        size = max((ve.checkpoint.size for ve in found), default=None)
        return LedgerEvidence(
            registrations=check_registrations(found, keys.policy, model_name),
            revocations=check_revocations(read.revocations, keys.policy),
            checkpoint_size=size,
            entries={ve.index: ve for ve in found},
        )

    async def registration(self, ledger: LedgerSpec, index: int) -> VerifiedEntry:
        """The registration at `index`, proven at the ledger's current verified checkpoint."""
        try:
            found = await self.client(ledger).entry(index)
        except ChainError as exc:
            raise classify(exc) from exc
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
        client = self.client(ledger)
        try:
            receipt = await client.append(entry)
        except EntryExistsError as exc:
            if exc.index is None:
                raise LedgerUnverified(str(exc)) from exc
            return await self._recorded_earlier(client, entry, exc.index)
        except ChainError as exc:
            raise classify(exc) from exc
        return receipt.index

    async def _recorded_earlier(
        self, client: AsyncLedgerClient, entry: AuditEntry, index: int
    ) -> int:
        """A 409 names the entry recorded for this idempotency key earlier; the answer is
        not proof, so read that entry through the verifying client and require that it
        records the same decision (the time and reason texts of a retry may differ)."""
        try:
            found = await client.entry(index)
        except ChainError as exc:
            if isinstance(exc, LedgerRollbackError | LedgerForkError):
                raise classify(exc) from exc
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
