"""Offline check that a registration is signed by the publisher and is on the ledger.

Inputs are files the operator (or a user) saved from the ledger: the registration
entry, the ledger's signed checkpoint note, and an inclusion proof of the entry's
leaf at exactly that checkpoint's size. Nothing here talks to the ledger: its
answers are untrusted, so they are only believed once they verify against the
checkpoint key (docs/architecture.md, trust model).

Accepted file shapes (all as the ledger's HTTP API returns them):
  registration: the entry object {"kind": "registration", ...}, or a lookup/receipt
                item {"index": ..., "entry": {...}, ...}
  proof:        {"index": I, "inclusion_proof": [base64, ...]} plus optional
                "tree_size" (must equal the checkpoint size) and "leaf_hash"
                (must equal the leaf hash of the registration)
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.entries import Registration, entry_from_json, leaf_data
from modeltrust.chain.errors import ChainError
from modeltrust.chain.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from modeltrust.chain.note import NoteVerifier
from modeltrust.serving.errors import ProvenanceError


@dataclass(frozen=True, slots=True)
class VerifiedProvenance:
    """What was proven: who signed which digest, and where it sits on the ledger."""

    registration: Registration
    signer_key_id: str
    index: int
    tree_size: int
    origin: str


def _b64_hash(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ProvenanceError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProvenanceError(f"{what} is not valid base64") from None
    if len(raw) != HASH_SIZE:
        raise ProvenanceError(f"{what} is {len(raw)} bytes; a SHA-256 hash is {HASH_SIZE}")
    return raw


def parse_registration(document: object) -> Registration:
    if (
        isinstance(document, dict)
        and "kind" not in document
        and isinstance(document.get("entry"), dict)
    ):
        document = document["entry"]
    if not isinstance(document, dict):
        raise ProvenanceError("the registration file must hold a JSON object")
    try:
        entry = entry_from_json(document)
    except (ChainError, ValueError, TypeError) as error:
        raise ProvenanceError(
            f"the registration file is not a valid ledger entry: {error}"
        ) from None
    if not isinstance(entry, Registration):
        raise ProvenanceError(
            f"the registration file holds a {document.get('kind')!r} entry, not a registration"
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

    1. the registration is for `digest`;
    2. it is signed by the given publisher key (key id and signature);
    3. the checkpoint note is signed by the ledger key (and has `origin`, if given);
    4. the registration's leaf is included in the tree the checkpoint commits to.
    """
    # Imported here so that plain digest-pinned fetches do not need the signature stack.
    from modeltrust.chain.signatures import key_id, load_public_key, verify_registration

    entry = parse_registration(registration)
    if entry.digest != digest:
        raise ProvenanceError(
            f"registration check failed: it registers {entry.digest}, not the pinned {digest}"
        )
    try:
        publisher = load_public_key(publisher_key_pem)
    except (ChainError, ValueError, TypeError) as error:
        raise ProvenanceError(f"cannot load the publisher public key: {error}") from None
    publisher_id = key_id(publisher)
    if publisher_id != entry.signer_key_id:
        raise ProvenanceError(
            f"signer check failed: the registration was signed by key {entry.signer_key_id}, "
            f"but the given publisher key is {publisher_id}"
        )
    try:
        verify_registration(entry, publisher)
    except (ChainError, ValueError) as error:
        raise ProvenanceError(f"signature check failed: {error}") from None

    try:
        verifier = NoteVerifier.from_verifier_key(ledger_verifier_key.strip())
        checkpoint = verify_checkpoint(checkpoint_note, verifier, origin=origin)
    except (ChainError, ValueError) as error:
        raise ProvenanceError(f"checkpoint check failed: {error}") from None

    index, hashes, claimed_leaf = _parse_proof(proof, checkpoint.size)
    computed_leaf = leaf_hash(leaf_data(entry))
    if claimed_leaf is not None and claimed_leaf != computed_leaf:
        raise ProvenanceError(
            "inclusion check failed: the proof is for a different leaf than this registration"
        )
    try:
        verify_inclusion(computed_leaf, index, checkpoint.size, hashes, checkpoint.root_hash)
    except (ChainError, ValueError) as error:
        raise ProvenanceError(
            f"inclusion check failed: registration at index {index} is not proven in the "
            f"checkpoint of size {checkpoint.size}: {error}"
        ) from None
    return VerifiedProvenance(entry, publisher_id, index, checkpoint.size, checkpoint.origin)


def _parse_proof(proof: object, checkpoint_size: int) -> tuple[int, list[bytes], bytes | None]:
    if not isinstance(proof, dict):
        raise ProvenanceError("the inclusion proof file must hold a JSON object")
    document: dict[str, Any] = proof
    index = document.get("index")
    if type(index) is not int or index < 0:
        raise ProvenanceError('the inclusion proof needs a non-negative integer "index"')
    tree_size = document.get("tree_size", checkpoint_size)
    if tree_size != checkpoint_size:
        raise ProvenanceError(
            f"inclusion check failed: the proof is for tree size {tree_size}, but the "
            f"checkpoint is of size {checkpoint_size}; fetch the proof at the checkpoint's size"
        )
    if index >= checkpoint_size:
        raise ProvenanceError(
            f"inclusion check failed: index {index} is not below the checkpoint size "
            f"{checkpoint_size} (the entry is not yet published)"
        )
    raw_hashes = document.get("inclusion_proof")
    if not isinstance(raw_hashes, list):
        raise ProvenanceError(
            'the inclusion proof needs an "inclusion_proof" array of base64 hashes'
        )
    hashes = [_b64_hash(h, f"inclusion_proof[{i}]") for i, h in enumerate(raw_hashes)]
    claimed = document.get("leaf_hash")
    return index, hashes, None if claimed is None else _b64_hash(claimed, "leaf_hash")
