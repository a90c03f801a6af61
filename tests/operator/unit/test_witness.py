"""Witness quorum: checkpoints count only with enough trusted witness cosignatures."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner, add_signatures
from modeltrust.chain.trust_state import MemoryTrustStateStore, TrustedCheckpoint
from modeltrust.operator.decisions import (
    ArtifactResult,
    Evidence,
    LoadResult,
    Reason,
    Verdict,
    decide,
)
from modeltrust.operator.errors import SpecError
from modeltrust.operator.types import Enforcement, LedgerSpec, Publisher, TrustPolicy
from modeltrust.operator.witness import (
    CheckpointSignatureError,
    WitnessedTrustStore,
    WitnessQuorumError,
    WitnessRequirement,
)

pytestmark = pytest.mark.unit

ORIGIN = "ledger.witness.test"
LOG = NoteSigner.generate(ORIGIN)
W1 = NoteSigner.generate("witness-one", alg=ALG_COSIGNATURE_V1)
W2 = NoteSigner.generate("witness-two", alg=ALG_COSIGNATURE_V1)
STRANGER = NoteSigner.generate("witness-unknown", alg=ALG_COSIGNATURE_V1)


def spec(*witnesses: NoteSigner, quorum: int) -> LedgerSpec:
    return LedgerSpec(
        url="http://127.0.0.1:1",
        verifier_key=LOG.verifier_key(),
        witnesses=tuple(w.verifier_key() for w in witnesses),
        witness_quorum=quorum,
    )


def note(size: int, *cosigners: NoteSigner) -> str:
    signed = sign_checkpoint(Checkpoint(ORIGIN, size, bytes([size % 256]) * 32), LOG)
    return add_signatures(signed, list(cosigners)) if cosigners else signed


def requirement(*witnesses: NoteSigner, quorum: int) -> WitnessRequirement:
    req = WitnessRequirement.from_ledger(spec(*witnesses, quorum=quorum))
    assert req is not None
    return req


def test_no_quorum_means_no_requirement() -> None:
    assert WitnessRequirement.from_ledger(spec(W1, quorum=0)) is None


def test_a_checkpoint_needs_quorum_cosignatures() -> None:
    one_of_one = requirement(W1, quorum=1)
    one_of_one.check(note(5, W1))
    with pytest.raises(WitnessQuorumError, match="not cosigned by 1 of the policy's 1 witness"):
        one_of_one.check(note(5))
    two_of_two = requirement(W1, W2, quorum=2)
    two_of_two.check(note(5, W1, W2))
    with pytest.raises(WitnessQuorumError, match="signed by 1 trusted key"):
        two_of_two.check(note(5, W1))


def test_cosignatures_by_keys_outside_the_policy_do_not_count() -> None:
    with pytest.raises(WitnessQuorumError):
        requirement(W1, quorum=1).check(note(5, STRANGER))


def test_a_cosignature_by_another_key_with_the_witness_name_does_not_count() -> None:
    impostor = NoteSigner.generate("witness-one", alg=ALG_COSIGNATURE_V1)
    with pytest.raises(WitnessQuorumError, match="signed by 0 trusted key"):
        requirement(W1, quorum=1).check(note(5, impostor))


def test_the_witness_must_sign_this_checkpoint_not_another() -> None:
    other = note(6, W1)
    lines = other.split("\n\n", 1)[1]
    w1_line = next(line for line in lines.splitlines() if line.startswith("\u2014 witness-one"))
    replayed = note(5) + w1_line + "\n"  # a cosignature of size 6 pasted onto size 5
    # A forged cosignature by a trusted witness is an invalid signature, not a missing one.
    with pytest.raises(CheckpointSignatureError, match="witness cosignature that does not verify"):
        requirement(W1, quorum=1).check(replayed)


def test_a_forged_ledger_signature_is_not_reported_as_a_missing_witness() -> None:
    forger = NoteSigner(LOG.name, Ed25519PrivateKey.generate())
    forger.key_id = LOG.key_id  # the ledger's key name and id, another key's signature
    cosigned = add_signatures(sign_checkpoint(Checkpoint(ORIGIN, 5, bytes([5]) * 32), forger), [W1])
    with pytest.raises(CheckpointSignatureError, match="does not verify with the ledger's key"):
        requirement(W1, quorum=1).check(cosigned)
    with pytest.raises(WitnessQuorumError, match="not cosigned"):
        requirement(W1, quorum=1).check(note(5))


def test_policy_witness_keys_are_checked() -> None:
    with pytest.raises(SpecError, match=r"spec.ledger.witnesses\[0\].*own key"):
        WitnessRequirement.from_ledger(
            dataclasses.replace(spec(quorum=1), witnesses=(LOG.verifier_key(),))
        )
    with pytest.raises(SpecError, match=r"spec.ledger.witnesses\[1\]"):
        WitnessRequirement.from_ledger(
            dataclasses.replace(spec(quorum=1), witnesses=(W1.verifier_key(), "w+00000000+AAAA"))
        )


class AsyncMemoryStore:
    def __init__(self) -> None:
        self.inner = MemoryTrustStateStore()

    async def load(self) -> TrustedCheckpoint | None:
        return self.inner.load()

    async def compare_and_swap(
        self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint
    ) -> bool:
        return self.inner.compare_and_swap(expected, new)

    async def reset(self, new: TrustedCheckpoint) -> TrustedCheckpoint | None:
        before = self.inner.load()
        self.inner = MemoryTrustStateStore(new)
        return before


def trusted(size: int, *cosigners: NoteSigner) -> TrustedCheckpoint:
    return TrustedCheckpoint(ORIGIN, size, bytes([size % 256]) * 32, note(size, *cosigners))


async def test_trust_only_moves_to_witnessed_checkpoints() -> None:
    inner = AsyncMemoryStore()
    store = WitnessedTrustStore(inner, requirement(W1, quorum=1))
    with pytest.raises(WitnessQuorumError, match="checkpoint of size 3"):
        await store.compare_and_swap(None, trusted(3))
    assert await inner.load() is None
    assert await store.compare_and_swap(None, trusted(3, W1))
    loaded = await store.load()
    assert loaded is not None
    assert loaded.size == 3


async def test_an_unwitnessed_record_is_not_trusted() -> None:
    inner = AsyncMemoryStore()
    await inner.compare_and_swap(None, trusted(4))  # written around the wrapper
    with pytest.raises(WitnessQuorumError, match="trusted checkpoint of size 4"):
        await WitnessedTrustStore(inner, requirement(W1, quorum=1)).load()


@pytest.mark.parametrize(
    ("enforcement", "verdict"),
    [(Enforcement.ENFORCE, Verdict.REFUSED), (Enforcement.AUDIT, Verdict.ALLOWED_AUDIT_ONLY)],
)
def test_an_unwitnessed_ledger_answer_is_a_trust_failure(
    enforcement: Enforcement, verdict: Verdict
) -> None:
    policy = TrustPolicy(
        name="p",
        generation=1,
        ledger=spec(W1, quorum=1),
        publishers=(Publisher("acme", "pem"),),
        enforcement=enforcement,
    )
    digest = "sha256:" + "ab" * 32
    decision = decide(
        Evidence(
            pinned_digest=digest,
            model_name="m",
            model_version="1",
            artifact=ArtifactResult(digest=digest, size=1),
            load=LoadResult(ok=True),
            ledger_unwitnessed="checkpoint is not cosigned by 1 of the policy's 1 witness(es)",
        ),
        policy,
    )
    assert decision.verdict is verdict
    assert decision.findings[0].reason is Reason.WITNESS_QUORUM_NOT_MET
    assert "not witnessed" in decision.findings[0].message
