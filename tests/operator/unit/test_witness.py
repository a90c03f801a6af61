"""Witness quorum: checkpoints count only with enough trusted witness cosignatures."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
    StaleCosignaturesError,
    WitnessedTrustStore,
    WitnessQuorumError,
    WitnessRequirement,
)

pytestmark = pytest.mark.unit

ORIGIN = "ledger.witness.test"
LOG = NoteSigner.generate(ORIGIN)
PRIVATE = {"witness-one": Ed25519PrivateKey.generate(), "witness-two": Ed25519PrivateKey.generate()}
W1 = NoteSigner("witness-one", PRIVATE["witness-one"], alg=ALG_COSIGNATURE_V1)
W2 = NoteSigner("witness-two", PRIVATE["witness-two"], alg=ALG_COSIGNATURE_V1)
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
    # The message names who cosigned and who did not.
    with pytest.raises(
        WitnessQuorumError, match=r"witness-one cosigned it .* ago; witness-two did not cosign it"
    ):
        two_of_two.check(note(5, W1))


def test_cosignatures_by_keys_outside_the_policy_do_not_count() -> None:
    with pytest.raises(WitnessQuorumError):
        requirement(W1, quorum=1).check(note(5, STRANGER))


def test_a_cosignature_by_another_key_with_the_witness_name_does_not_count() -> None:
    impostor = NoteSigner.generate("witness-one", alg=ALG_COSIGNATURE_V1)
    with pytest.raises(WitnessQuorumError, match="witness-one did not cosign it"):
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


def aged(*witnesses: NoteSigner, quorum: int, max_age: float) -> WitnessRequirement:
    req = WitnessRequirement.from_ledger(
        dataclasses.replace(spec(*witnesses, quorum=quorum), max_cosignature_age=max_age)
    )
    assert req is not None
    return req


def cosigned_at(size: int, *stamped: tuple[NoteSigner, float]) -> str:
    """A checkpoint cosigned by each witness at the given Unix time."""
    signed = note(size)
    for witness, at in stamped:
        key = PRIVATE[witness.name]
        timed = NoteSigner(witness.name, key, alg=ALG_COSIGNATURE_V1, clock=fixed_clock(at))
        signed = add_signatures(signed, [timed])
    return signed


def fixed_clock(at: float) -> Callable[[], float]:
    return lambda: at


NOW = 1_800_000_000.0


def test_with_a_maximum_age_only_recent_cosignatures_count() -> None:
    req = aged(W1, W2, quorum=2, max_age=600)
    recent = cosigned_at(5, (W1, NOW - 30), (W2, NOW - 599))
    req.check(recent, fresh=True, now=NOW)
    stale = cosigned_at(5, (W1, NOW - 30), (W2, NOW - 3600))
    with pytest.raises(StaleCosignaturesError) as caught:
        req.check(stale, fresh=True, now=NOW, what="the ledger's checkpoint of size 5")
    message = str(caught.value)
    assert (
        "not cosigned by 2 of the policy's 2 witness(es) within maxCosignatureAge 600s" in message
    )
    assert "witness-one cosigned it 30 s ago;" in message
    assert "witness-two cosigned it 3600 s ago (too old)" in message
    assert "frozen view" in message
    # The quorum alone (a stored record, a pod's proof) does not look at the time.
    req.check(stale)


def test_a_missing_cosignature_is_not_reported_as_a_stale_one() -> None:
    req = aged(W1, W2, quorum=2, max_age=600)
    with pytest.raises(WitnessQuorumError) as caught:
        req.check(cosigned_at(5, (W1, NOW - 3600)), fresh=True, now=NOW)
    assert not isinstance(caught.value, StaleCosignaturesError)
    assert "witness-two did not cosign it" in str(caught.value)


def test_a_cosignature_from_far_in_the_future_does_not_count() -> None:
    req = aged(W1, quorum=1, max_age=600)
    req.check(cosigned_at(5, (W1, NOW + 30)), fresh=True, now=NOW)  # clocks differ a little
    with pytest.raises(StaleCosignaturesError, match="3600 s in the future"):
        req.check(cosigned_at(5, (W1, NOW + 3600)), fresh=True, now=NOW)


def test_a_maximum_age_needs_timestamped_witness_keys() -> None:
    untimed = NoteSigner.generate("witness-untimed")  # type 0x01: no time in its signatures
    with pytest.raises(SpecError, match=r"witnesses\[0\].*type 0x01.*maxCosignatureAge"):
        aged(untimed, quorum=1, max_age=60)


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
