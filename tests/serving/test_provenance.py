"""Offline provenance: a real signed registration proven in a real signed checkpoint."""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from modeltrust.chain.errors import ProvenanceError
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.provenance import verify_provenance
from modeltrust.chain.signatures import generate_private_key, public_key_pem
from serving.helpers import ARTIFACT, DIGEST, ORIGIN, Ledger, build_ledger

pytestmark = pytest.mark.unit


def _verify(ledger: Ledger, **overrides: Any) -> Any:
    arguments: dict[str, Any] = {
        "digest": DIGEST,
        "registration": ledger.registration,
        "publisher_key_pem": ledger.publisher_pem,
        "checkpoint_note": ledger.checkpoint,
        "ledger_verifier_key": ledger.verifier_key,
        "proof": ledger.proof,
        "origin": ORIGIN,
    }
    arguments.update(overrides)
    return verify_provenance(**arguments)


def test_a_registered_and_proven_artifact_verifies() -> None:
    ledger = build_ledger()
    proven = _verify(ledger)
    assert proven.index == 5
    assert proven.tree_size == 11
    assert proven.origin == ORIGIN
    assert proven.registration.model_name == "mnist"
    assert proven.registration.size == len(ARTIFACT)
    # A lookup item from the ledger API ({"index", "entry", ...}) works as the registration too.
    assert _verify(ledger, registration={"index": 5, "entry": ledger.registration}).index == 5


def test_every_leaf_position_verifies() -> None:
    for position in (0, 7, 10):
        assert _verify(build_ledger(position=position)).index == position


def test_registration_for_another_digest_is_refused() -> None:
    ledger = build_ledger()
    other = "sha256:" + "ab" * 32
    with pytest.raises(ProvenanceError, match=f"registers {DIGEST}, not the pinned {other}"):
        _verify(ledger, digest=other)


def test_wrong_publisher_key_is_refused() -> None:
    ledger = build_ledger()
    stranger = public_key_pem(generate_private_key("ed25519").public_key())
    with pytest.raises(ProvenanceError, match="signer check failed"):
        _verify(ledger, publisher_key_pem=stranger)


def test_tampered_registration_fails_the_signature_check() -> None:
    ledger = build_ledger()
    tampered = {**ledger.registration, "model_version": "4"}
    with pytest.raises(ProvenanceError, match="signature check failed"):
        _verify(ledger, registration=tampered)


def test_checkpoint_signed_by_another_key_is_refused() -> None:
    ledger = build_ledger()
    impostor = NoteSigner.generate(ORIGIN)
    with pytest.raises(ProvenanceError, match="checkpoint check failed"):
        _verify(ledger, ledger_verifier_key=impostor.verifier_key())
    with pytest.raises(ProvenanceError, match="checkpoint check failed"):
        _verify(ledger, origin="another.origin/log")


def test_registration_not_in_the_tree_is_refused() -> None:
    ledger = build_ledger()
    # A validly signed registration of the same digest that was never appended.
    other_ledger = build_ledger()
    with pytest.raises(ProvenanceError, match="inclusion check failed"):
        _verify(
            ledger,
            registration=other_ledger.registration,
            publisher_key_pem=other_ledger.publisher_pem,
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"index": 4}, "is not proven"),
        ({"index": 11}, "not below the checkpoint size"),
        ({"tree_size": 10}, "fetch the proof at the checkpoint's size"),
        ({"inclusion_proof": []}, "is not proven"),
        ({"inclusion_proof": ["AAAA"]}, "must be 32 bytes"),
        ({"inclusion_proof": ["not base64!"]}, "not valid base64"),
        ({"leaf_hash": base64.b64encode(bytes(32)).decode()}, "different leaf"),
        ({"index": "5"}, "non-negative integer"),
    ],
)
def test_bad_inclusion_proofs_are_refused(change: dict[str, Any], message: str) -> None:
    ledger = build_ledger()
    ledger = replace(ledger, proof={**ledger.proof, **change})
    with pytest.raises(ProvenanceError, match=message):
        _verify(ledger)


def test_flipped_proof_hash_is_refused() -> None:
    ledger = build_ledger()
    hashes = list(ledger.proof["inclusion_proof"])
    raw = bytearray(base64.b64decode(hashes[1]))
    raw[0] ^= 1
    hashes[1] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(ProvenanceError, match="inclusion check failed"):
        _verify(ledger, proof={**ledger.proof, "inclusion_proof": hashes})


def test_non_registration_entries_are_refused() -> None:
    ledger = build_ledger()
    with pytest.raises(ProvenanceError, match="not a valid ledger entry"):
        _verify(ledger, registration={"kind": "registration", "model_name": "x"})
    with pytest.raises(ProvenanceError, match="must hold a JSON object"):
        _verify(ledger, registration=[1])
