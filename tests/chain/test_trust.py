"""The trust rules every verifier applies (modeltrust.chain.trust): whose revocation counts
(a key only by itself, a digest only by a publisher whose registration of
that digest counted), thresholds and model-name patterns, over real signatures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from modeltrust.chain.errors import PolicyError
from modeltrust.chain.signatures import (
    generate_private_key,
    public_key_pem,
    sign_registration,
    sign_revocation,
)
from modeltrust.chain.trust import (
    Materials,
    Reason,
    RegistrationCheck,
    RevocationFact,
    Subject,
    TrustedPublisher,
    TrustVerdict,
    VerificationPolicy,
    applicable_revocations,
    evaluate,
    verify,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
KEY_A = "a1" * 32
KEY_B = "b2" * 32

SUBJECT = Subject(DIGEST, "m", "1")


@dataclass(frozen=True)
class Threshold:
    name: str = "p"
    threshold: int = 1


POLICY = Threshold()


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


def decide(
    *registrations: RegistrationCheck,
    revocations: tuple[RevocationFact, ...] = (),
    policy: Threshold = POLICY,
) -> TrustVerdict:
    return evaluate(SUBJECT, registrations, revocations, policy)


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
    v = decide(reg(KEY_A, 3), revocations=(rev("key", KEY_A, KEY_B), rev("digest", DIGEST, KEY_B)))
    assert v.trusted


def test_a_co_registrant_can_revoke_the_digest() -> None:
    # Both vouched (threshold 2); B then revokes the bytes: the digest is revoked for all.
    revoked = (rev("digest", DIGEST, KEY_B),)
    d = decide(reg(KEY_A, 3), reg(KEY_B, 4), revocations=revoked, policy=Threshold(threshold=2))
    assert not d.trusted
    assert [f.reason for f in d.findings] == [Reason.REVOKED, Reason.BELOW_THRESHOLD]
    # Threshold 1 too: a revoked digest counts for no one.
    assert decide(reg(KEY_A, 3), reg(KEY_B, 4), revocations=revoked).reason is Reason.REVOKED


def test_a_registration_that_did_not_count_gives_no_authority() -> None:
    # B registered the digest under another model name (not counted): no authority over it.
    v = decide(
        reg(KEY_A, 3), reg(KEY_B, 4, model_name="other"),
        revocations=(rev("digest", DIGEST, KEY_B),),
    )  # fmt: skip
    assert v.trusted


def test_a_publisher_revoking_its_own_key_still_takes_its_models_down() -> None:
    d = decide(reg(KEY_A, 3), revocations=(rev("key", KEY_A, KEY_A),))
    assert not d.trusted
    assert d.findings[0].reason is Reason.REVOKED
    assert "signer key" in d.findings[0].message


# --- over real signatures -------------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    index: int
    entry: Any


def test_verify_checks_signatures_against_the_policy_and_applies_the_rules() -> None:
    a, b, stranger = (generate_private_key("ed25519") for _ in range(3))
    pa = TrustedPublisher.from_pem("a", public_key_pem(a.public_key()), ["vision-*"])
    pb = TrustedPublisher.from_pem("b", public_key_pem(b.public_key()))
    policy = VerificationPolicy((pa, pb), threshold=1, name="p")

    def registered(key: Any, index: int, name: str = "vision-net") -> Placed:
        return Placed(index, sign_registration(key, name=name, version="1", digest=DIGEST, size=1))

    def revoked(key: Any, index: int, kind: str, target: str) -> Placed:
        return Placed(index, sign_revocation(key, target_kind=kind, target=target, reason="r"))

    subject = Subject(DIGEST, "vision-net", "1")
    assert verify(Materials(subject, [registered(a, 0)]), policy).signer_key_ids == (pa.key_id,)
    # A stranger's registration neither counts nor spoils; its revocation has no authority.
    m = Materials(subject, [registered(stranger, 0), registered(a, 1)],
                  [revoked(stranger, 2, "digest", DIGEST)])  # fmt: skip
    assert verify(m, policy).trusted
    # b never registered this digest: its revocations of a's key and digest do not count.
    m = Materials(subject, [registered(a, 0)],
                  [revoked(b, 1, "key", pa.key_id), revoked(b, 2, "digest", DIGEST)])  # fmt: skip
    assert verify(m, policy).trusted
    m = Materials(subject, [registered(a, 0)], [revoked(a, 1, "digest", DIGEST)])
    assert verify(m, policy).reason is Reason.REVOKED
    # a's patterns do not cover "bert": its registration does not count for that name.
    bert = Materials(Subject(DIGEST, "bert", "1"), [registered(a, 0, name="bert")])
    assert verify(bert, policy).findings[0].reason is Reason.PUBLISHER_NOT_ALLOWED
    # Without a name asked for, each registration's own name is held to the patterns.
    assert verify(Materials(Subject(DIGEST), [registered(a, 0, name="bert")]), policy).reason is (
        Reason.PUBLISHER_NOT_ALLOWED
    )
    assert verify(Materials(Subject(DIGEST), [registered(a, 0)]), policy).trusted
    # A forged signature by a trusted key is an invalid signature, not an untrusted key.
    forged = registered(a, 0)
    forged = Placed(0, type(forged.entry)(**{**_fields(forged.entry), "model_version": "2"}))
    v = verify(Materials(Subject(DIGEST, "vision-net", "2"), [forged]), policy)
    assert v.findings[0].reason is Reason.INVALID_SIGNATURE


def _fields(entry: Any) -> dict[str, Any]:
    return {f: getattr(entry, f) for f in entry.__slots__}


def test_a_policy_refuses_what_it_cannot_mean() -> None:
    key = TrustedPublisher.from_pem(
        "a", public_key_pem(generate_private_key("ed25519").public_key())
    )
    with pytest.raises(PolicyError, match="at least one"):
        VerificationPolicy(())
    with pytest.raises(PolicyError, match="threshold 2"):
        VerificationPolicy((key,), threshold=2)
    with pytest.raises(PolicyError, match="share one key"):
        VerificationPolicy((key, TrustedPublisher("b", key.public_key)))
