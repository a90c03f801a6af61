"""Exact-match lookup keys the ledger records for each entry (what GET /v1/registrations etc. use).

Lookups only find candidates: every answer is still proven against a signed checkpoint
by the client. They are not proofs of absence (see docs/ledger.md, "Limits").
"""

from __future__ import annotations

from modeltrust.chain.entries import AuditEntry, Entry, Registration, Revocation
from modeltrust.chain.errors import EntryError

REGISTRATION_DIGEST = "registration.digest"
REGISTRATION_SIGNER = "registration.signer"
REVOCATION_DIGEST = "revocation.digest"
REVOCATION_KEY = "revocation.key"
AUDIT_OBJECT = "audit.object"
AUDIT_UID = "audit.uid"
AUDIT_IDEMPOTENCY = "audit.idempotency"


def audit_object_key(namespace: str, name: str) -> str:
    # "/" cannot occur in a Kubernetes namespace, so the join is unambiguous.
    return f"{namespace}/{name}"


def lookup_keys(entry: Entry) -> tuple[tuple[str, str], ...]:
    if isinstance(entry, Registration):
        return ((REGISTRATION_DIGEST, entry.digest), (REGISTRATION_SIGNER, entry.signer_key_id))
    if isinstance(entry, Revocation):
        kind = REVOCATION_DIGEST if entry.target_kind == "digest" else REVOCATION_KEY
        return ((kind, entry.target),)
    if isinstance(entry, AuditEntry):
        return (
            (AUDIT_OBJECT, audit_object_key(entry.namespace, entry.name)),
            (AUDIT_UID, entry.uid),
            (AUDIT_IDEMPOTENCY, entry.idempotency_key),
        )
    raise EntryError(f"unknown entry type {type(entry).__name__}")
