"""Turn what the verifying ledger client returned into evidence for `decide`.

The client has already proven each entry against a verified checkpoint consistent with
the last trusted one (registrations by inclusion proof; revocations by reading the whole
log up to the checkpoint, see revocation_index). Here the operator checks what it does
not take from the ledger: that the signer is one of the policy's publishers, and that
the signature verifies with that publisher's key (the ledger's word is not trusted).
Whose revocation counts for which model is decided in decisions.applicable_revocations.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import Entry, Registration, Revocation
from modeltrust.chain.errors import ChainError
from modeltrust.chain.signatures import verify_registration, verify_revocation
from modeltrust.operator.decisions import RegistrationCheck, RevocationFact
from modeltrust.operator.keys import TrustedKeys


def check_registrations(
    found: Iterable[VerifiedEntry], keys: TrustedKeys, model_name: str
) -> list[RegistrationCheck]:
    checks: list[RegistrationCheck] = []
    for ve in found:
        reg = ve.entry
        if not isinstance(reg, Registration):
            continue
        trusted = keys.get(reg.signer_key_id)
        valid, error = False, None
        if trusted is not None:
            try:
                verify_registration(reg, trusted.public_key)
                valid = True
            except ChainError as exc:
                error = str(exc)
        checks.append(
            RegistrationCheck(
                ledger_index=ve.index,
                model_name=reg.model_name,
                model_version=reg.model_version,
                digest=reg.digest,
                signer_key_id=reg.signer_key_id,
                inclusion_verified=True,
                publisher=trusted.publisher.name if trusted else None,
                signature_valid=valid,
                publisher_may_vouch=bool(trusted and trusted.publisher.may_vouch_for(model_name)),
                error=error,
            )
        )
    return checks


class ProvenEntry(Protocol):
    """A ledger entry at a known index, proven by the caller (VerifiedEntry, LoggedEntry)."""

    @property
    def index(self) -> int: ...

    @property
    def entry(self) -> Entry: ...


def check_revocations(found: Iterable[ProvenEntry], keys: TrustedKeys) -> list[RevocationFact]:
    facts: dict[int, RevocationFact] = {}
    for ve in found:
        rev = ve.entry
        if not isinstance(rev, Revocation) or ve.index in facts:
            continue
        trusted = keys.get(rev.signer_key_id)
        valid = False
        if trusted is not None:
            try:
                verify_revocation(rev, trusted.public_key)
                valid = True
            except ChainError:
                valid = False
        facts[ve.index] = RevocationFact(
            ledger_index=ve.index,
            target_kind=rev.target_kind,
            target=rev.target,
            reason=rev.reason,
            signer_key_id=rev.signer_key_id,
            signature_valid=valid,
        )
    return sorted(facts.values(), key=lambda f: f.ledger_index)
