"""Offline check that a registration is signed by a trusted publisher and is on the ledger.

This is what the pod's init step (``modeltrust fetch`` with the ledger options) runs
before it keeps the bytes, from files the operator saved from the ledger: the
registration entry, the ledger's signed checkpoint note, and an inclusion proof of the
entry's leaf at exactly that checkpoint's size. Nothing here talks to the ledger: its
answers are untrusted, so they are only believed once they verify against the
checkpoint key. Whether the publisher is trusted and its signature counts is decided by
the same rules as everywhere else (``trust.evaluate``, with the one publisher the
operator chose as the policy).

Revocations are not checked here: an offline proof cannot show that nothing was revoked
(only a complete read of the log can, see revocation_index). The operator checks them
before it writes the proof and re-checks them while the model serves.

Accepted file shapes (all as the ledger's HTTP API returns them):
  registration: the entry object {"kind": "registration", ...}, or a lookup/receipt
                item {"index": ..., "entry": {...}, ...}
  proof:        {"index": I, "inclusion_proof": [base64, ...]} plus optional
                "tree_size" (must equal the checkpoint size) and "leaf_hash"
                (must equal the leaf hash of the registration)

Every failure raises ProvenanceError whose ``reason`` is a ``trust.Reason`` value and
whose message starts with the check that failed (registration, signer, signature,
checkpoint, inclusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.entries import Registration, entry_from_json, leaf_data
from modeltrust.chain.errors import ChainError, HashEncodingError, ProvenanceError
from modeltrust.chain.merkle import hash_from_b64, leaf_hash, verify_inclusion
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.signatures import key_id, load_public_key
from modeltrust.chain.trust import (
    Reason,
    Subject,
    TrustedPublisher,
    VerificationPolicy,
    check_registrations,
    evaluate,
)

__all__ = ["ProvenanceError", "VerifiedProvenance", "parse_registration", "verify_provenance"]

_STEP = {
    Reason.UNTRUSTED_KEY: "signer",
    Reason.INVALID_SIGNATURE: "signature",
}


@dataclass(frozen=True, slots=True)
class VerifiedProvenance:
    """What was proven: who signed which digest, and where it sits on the ledger."""

    registration: Registration
    signer_key_id: str
    index: int
    tree_size: int
    origin: str


@dataclass(frozen=True, slots=True)
class _Placed:
    """The registration at the index the proof file names (a trust.ProvenEntry)."""

    index: int
    entry: Registration


def parse_registration(document: object) -> Registration:
    if (
        isinstance(document, dict)
        and "kind" not in document
        and isinstance(document.get("entry"), dict)
    ):
        document = document["entry"]
    if not isinstance(document, dict):
        raise ProvenanceError(
            Reason.NOT_REGISTERED, "the registration file must hold a JSON object"
        )
    try:
        entry = entry_from_json(document)
    except ChainError as error:
        raise ProvenanceError(
            Reason.NOT_REGISTERED, f"the registration file is not a valid ledger entry: {error}"
        ) from None
    if not isinstance(entry, Registration):
        raise ProvenanceError(
            Reason.NOT_REGISTERED,
            f"the registration file holds a {document.get('kind')!r} entry, not a registration",
        )
    return entry


def verify_provenance(
    *,
    digest: str,
    registration: object,
    publisher_key_pem: bytes,
    checkpoint_note: str,
    ledger_verifier_key: str,
    proof: object,
    origin: str | None = None,
) -> VerifiedProvenance:
    """Check, in order, and raise ProvenanceError naming the first failed check:

    1. the registration is for ``digest``;
    2. it is signed by the given publisher key (key id and signature: trust.evaluate with
       that one publisher as the policy);
    3. the checkpoint note is signed by the ledger key (and has ``origin``, if given);
    4. the registration's leaf is included in the tree the checkpoint commits to.
    """
    entry = parse_registration(registration)
    if entry.digest != digest:
        raise ProvenanceError(
            Reason.NOT_REGISTERED,
            f"registration check failed: it registers {entry.digest}, not the pinned {digest}",
        )
    try:
        publisher = TrustedPublisher("the given publisher", load_public_key(publisher_key_pem))
    except ChainError as error:
        raise ProvenanceError(
            Reason.UNTRUSTED_KEY, f"cannot load the publisher public key: {error}"
        ) from None
    policy = VerificationPolicy((publisher,), threshold=1, name="the pod's provenance")
    index, hashes, claimed_leaf = _parse_proof_shape(proof)
    placed = _Placed(index, entry)
    verdict = evaluate(Subject(digest), check_registrations([placed], policy), (), policy)
    for finding in verdict.findings:
        if finding.reason in _STEP:
            if finding.reason is Reason.UNTRUSTED_KEY:
                message = (
                    f"the registration was signed by key {entry.signer_key_id}, "
                    f"but the given publisher key is {key_id(publisher.public_key)}"
                )
            else:
                message = finding.message
            raise ProvenanceError(
                finding.reason, f"{_STEP[finding.reason]} check failed: {message}"
            )
    if not verdict.trusted:  # pragma: no cover - one registration: a finding above explains it
        raise ProvenanceError(verdict.reason, f"registration check failed: {verdict.findings}")

    try:
        verifier = NoteVerifier.from_verifier_key(ledger_verifier_key.strip())
        checkpoint = verify_checkpoint(checkpoint_note, verifier, origin=origin)
    except ChainError as error:
        raise ProvenanceError(
            Reason.LEDGER_UNAVAILABLE, f"checkpoint check failed: {error}"
        ) from None

    _check_proof_size(proof, index, checkpoint.size)
    computed_leaf = leaf_hash(leaf_data(entry))
    if claimed_leaf is not None and claimed_leaf != computed_leaf:
        raise ProvenanceError(
            Reason.INCLUSION_UNPROVEN,
            "inclusion check failed: the proof is for a different leaf than this registration",
        )
    try:
        verify_inclusion(computed_leaf, index, checkpoint.size, hashes, checkpoint.root_hash)
    except ChainError as error:
        raise ProvenanceError(
            Reason.INCLUSION_UNPROVEN,
            f"inclusion check failed: registration at index {index} is not proven in the "
            f"checkpoint of size {checkpoint.size}: {error}",
        ) from None
    return VerifiedProvenance(entry, publisher.key_id, index, checkpoint.size, checkpoint.origin)


def _unproven(message: str) -> ProvenanceError:
    return ProvenanceError(Reason.INCLUSION_UNPROVEN, message)


def _parse_proof_shape(proof: object) -> tuple[int, list[bytes], bytes | None]:
    if not isinstance(proof, dict):
        raise _unproven("the inclusion proof file must hold a JSON object")
    document: dict[str, Any] = proof
    index = document.get("index")
    if type(index) is not int or index < 0:
        raise _unproven('the inclusion proof needs a non-negative integer "index"')
    raw_hashes = document.get("inclusion_proof")
    if not isinstance(raw_hashes, list):
        raise _unproven('the inclusion proof needs an "inclusion_proof" array of base64 hashes')
    claimed = document.get("leaf_hash")
    try:
        hashes = [hash_from_b64(h, f"inclusion_proof[{i}]") for i, h in enumerate(raw_hashes)]
        leaf = None if claimed is None else hash_from_b64(claimed, "leaf_hash")
    except HashEncodingError as error:
        raise _unproven(str(error)) from None
    return index, hashes, leaf


def _check_proof_size(proof: object, index: int, checkpoint_size: int) -> None:
    tree_size = proof.get("tree_size", checkpoint_size) if isinstance(proof, dict) else None
    if tree_size != checkpoint_size:
        raise _unproven(
            f"inclusion check failed: the proof is for tree size {tree_size}, but the "
            f"checkpoint is of size {checkpoint_size}; fetch the proof at the checkpoint's size"
        )
    if index >= checkpoint_size:
        raise _unproven(
            f"inclusion check failed: index {index} is not below the checkpoint size "
            f"{checkpoint_size} (the entry is not yet published)"
        )
