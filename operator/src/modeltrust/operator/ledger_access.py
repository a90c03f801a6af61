"""Talking to a policy's ledger through modeltrust.chain's verifying client.

Every answer used here was checked by the client against a signed checkpoint that is
consistent with the trusted one (kept in a ConfigMap, see trust_store). Errors are
sorted into the two kinds `decide` distinguishes: "no verified answer" (fail closed,
retry) and "the ledger contradicts a checkpoint we trusted" (rollback or fork: every
rollout is blocked until a cluster operator acts).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from modeltrust.chain.client import AsyncLedgerClient, EntryExistsError
from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import AuditEntry
from modeltrust.chain.errors import ChainError
from modeltrust.chain.trust_state import LedgerForkError, LedgerRollbackError
from modeltrust.operator.decisions import RegistrationCheck, RevocationFact
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.trust_store import ConfigMapTrustStore
from modeltrust.operator.types import LedgerSpec
from modeltrust.operator.verification import check_registrations, check_revocations

log = logging.getLogger("modeltrust.operator.ledger")


class LedgerInconsistent(Exception):
    """The ledger rolled back or forked relative to the trusted checkpoint."""


class LedgerUnverified(Exception):
    """No verified answer from the ledger (unreachable, refused, or did not verify)."""


def classify(exc: BaseException) -> Exception:
    if isinstance(exc, LedgerRollbackError | LedgerForkError):
        return LedgerInconsistent(str(exc))
    return LedgerUnverified(str(exc) or type(exc).__name__)


@dataclass(frozen=True)
class LedgerEvidence:
    registrations: list[RegistrationCheck] = field(default_factory=list)
    revocations: list[RevocationFact] = field(default_factory=list)
    checkpoint_size: int | None = None
    error: str | None = None
    inconsistent: str | None = None


def token_reader(token: str | None, token_file: Path | None) -> Callable[[], str | None]:
    """A fixed token, or a file re-read on every use (projected service-account tokens rotate)."""

    def read() -> str | None:
        if token:
            return token
        if token_file is not None:
            try:
                return token_file.read_text().strip() or None
            except OSError:
                return None
        return None

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
        self._stores: dict[str, ConfigMapTrustStore] = {}
        self._clients: dict[tuple[str, str, str, str | None], AsyncLedgerClient] = {}

    def store(self, ledger: LedgerSpec) -> ConfigMapTrustStore:
        store = self._stores.get(ledger.verifier_key)
        if store is None:
            store = ConfigMapTrustStore(self.kube, self.namespace, ledger.verifier_key)
            self._stores[ledger.verifier_key] = store
        return store

    def client(self, ledger: LedgerSpec) -> AsyncLedgerClient:
        token = self.token()
        key = (ledger.url, ledger.verifier_key, ledger.expected_origin, token)
        client = self._clients.get(key)
        if client is None:
            client = AsyncLedgerClient(
                ledger.url,
                verifier_key=ledger.verifier_key,
                origin=ledger.expected_origin,
                trust_store=self.store(ledger),
                token=token,
                timeout=self.timeout,
            )
            self._clients[key] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    async def evidence(
        self, ledger: LedgerSpec, keys: TrustedKeys, digest: str, model_name: str
    ) -> LedgerEvidence:
        """Registrations of `digest` and the revocations that could apply to it."""
        client = self.client(ledger)
        try:
            found = await client.find_registrations(digest)
            signer_ids = sorted({getattr(ve.entry, "signer_key_id", "") for ve in found} - {""})
            revocations = await self._revocations(client, digest, signer_ids)
        except (ChainError, ValueError) as exc:
            err = classify(exc)
            if isinstance(err, LedgerInconsistent):
                log.error("LEDGER INCONSISTENT (%s): all rollouts are blocked: %s", ledger.url, err)
                return LedgerEvidence(inconsistent=str(err))
            return LedgerEvidence(error=str(err))
        size = max((ve.checkpoint.size for ve in found), default=None)
        return LedgerEvidence(
            registrations=check_registrations(found, keys, model_name),
            revocations=check_revocations(revocations, keys),
            checkpoint_size=size,
        )

    async def _revocations(
        self, client: AsyncLedgerClient, digest: str, key_ids: Sequence[str]
    ) -> list[VerifiedEntry]:
        queries = [client.revocations_for(digest=digest)]
        queries += [client.revocations_for(key_id=k) for k in key_ids]
        results = await asyncio.gather(*queries)
        return [ve for batch in results for ve in batch]

    async def revocations(
        self, ledger: LedgerSpec, keys: TrustedKeys, digest: str, key_ids: Sequence[str]
    ) -> list[RevocationFact]:
        """For the periodic re-check; raises LedgerInconsistent or LedgerUnverified."""
        try:
            found = await self._revocations(self.client(ledger), digest, key_ids)
        except (ChainError, ValueError) as exc:
            raise classify(exc) from exc
        return check_revocations(found, keys)

    async def append_audit(self, ledger: LedgerSpec, entry: AuditEntry) -> int:
        """Append `entry`; returns its ledger index. A retry of the same decision (same
        idempotency key) returns the index recorded the first time."""
        try:
            receipt = await self.client(ledger).append(entry)
        except EntryExistsError as exc:
            if exc.index is not None:
                return exc.index
            raise LedgerUnverified(str(exc)) from exc
        except (ChainError, ValueError) as exc:
            raise classify(exc) from exc
        return receipt.index
