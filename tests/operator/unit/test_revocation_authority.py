"""Whose revocation counts: a key only by itself, a digest only by a
publisher whose registration of that digest counted."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from modeltrust.operator.decisions import (
    ArtifactResult,
    Evidence,
    LoadResult,
    Reason,
    RegistrationCheck,
    RevocationFact,
    Verdict,
    applicable_revocations,
    check_revocation,
    decide,
)
from modeltrust.operator.types import LedgerSpec, Publisher, TrustPolicy

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
KEY_A = "a1" * 32
KEY_B = "b2" * 32

POLICY = TrustPolicy(
    name="p",
    generation=1,
    ledger=LedgerSpec("http://127.0.0.1:1", "ledger+00000000+AAAA"),
    publishers=(Publisher("a", "pem"), Publisher("b", "pem")),
)


def rev(kind: str, target: str, signer: str, *, valid: bool = True) -> RevocationFact:
    return RevocationFact(
        ledger_index=20, target_kind=kind, target=target, reason="says so",
        signer_key_id=signer, signature_valid=valid,
    )  # fmt: skip


def reg(key: str, index: int, **kw: Any) -> RegistrationCheck:
    fields: dict[str, Any] = {
        "ledger_index": index, "model_name": "m", "model_version": "1", "digest": DIGEST,
        "signer_key_id": key, "inclusion_verified": True, "publisher": key[:2],
        "signature_valid": True,
    }  # fmt: skip
    fields.update(kw)
    return RegistrationCheck(**fields)


def evidence(
    *registrations: RegistrationCheck, revocations: tuple[RevocationFact, ...]
) -> Evidence:
    return Evidence(
        pinned_digest=DIGEST, model_name="m", model_version="1",
        artifact=ArtifactResult(DIGEST, 10), load=LoadResult(ok=True),
        registrations=registrations, revocations=revocations,
    )  # fmt: skip


def test_a_key_is_revoked_only_by_itself() -> None:
    assert applicable_revocations(DIGEST, [KEY_A], [rev("key", KEY_A, KEY_A)])
    assert not applicable_revocations(DIGEST, [KEY_A], [rev("key", KEY_A, KEY_B)])


def test_a_digest_is_revoked_only_by_a_publisher_that_vouched_for_it() -> None:
    assert applicable_revocations(DIGEST, [KEY_A], [rev("digest", DIGEST, KEY_A)])
    assert not applicable_revocations(DIGEST, [KEY_A], [rev("digest", DIGEST, KEY_B)])


def test_an_invalid_signature_never_counts_even_with_authority() -> None:
    assert not applicable_revocations(DIGEST, [KEY_A], [rev("key", KEY_A, KEY_A, valid=False)])
    assert not applicable_revocations(DIGEST, [KEY_A], [rev("digest", DIGEST, KEY_A, valid=False)])


def test_another_publisher_cannot_revoke_a_model_it_never_registered() -> None:
    # B is in the policy but registered nothing: its revocations of A's key and of A's
    # digest are ignored, and A's model rolls out.
    ev = evidence(
        reg(KEY_A, 3), revocations=(rev("key", KEY_A, KEY_B), rev("digest", DIGEST, KEY_B))
    )
    assert decide(ev, POLICY).verdict is Verdict.ALLOWED
    assert not check_revocation(DIGEST, [KEY_A], ev.revocations, 1).revoked


def test_a_co_registrant_can_revoke_the_digest() -> None:
    # Both vouched (threshold 2); B then revokes the bytes: the digest is revoked for all.
    two = dataclasses.replace(POLICY, threshold=2)
    ev = evidence(reg(KEY_A, 3), reg(KEY_B, 4), revocations=(rev("digest", DIGEST, KEY_B),))
    d = decide(ev, two)
    assert d.verdict is Verdict.REFUSED
    assert [f.reason for f in d.findings] == [Reason.REVOKED, Reason.BELOW_THRESHOLD]
    assert check_revocation(DIGEST, [KEY_A, KEY_B], ev.revocations, 1).revoked


def test_a_registration_that_did_not_count_gives_no_authority() -> None:
    # B registered the digest under another model name (not counted): no authority over it.
    ev = evidence(
        reg(KEY_A, 3), reg(KEY_B, 4, model_name="other"),
        revocations=(rev("digest", DIGEST, KEY_B),),
    )  # fmt: skip
    assert decide(ev, POLICY).verdict is Verdict.ALLOWED


def test_a_publisher_revoking_its_own_key_still_takes_its_models_down() -> None:
    ev = evidence(reg(KEY_A, 3), revocations=(rev("key", KEY_A, KEY_A),))
    d = decide(ev, POLICY)
    assert d.verdict is Verdict.REFUSED
    assert d.findings[0].reason is Reason.REVOKED
    assert "signer key" in d.findings[0].message
