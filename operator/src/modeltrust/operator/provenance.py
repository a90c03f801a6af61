"""Offline proof material for the pod's init step, as an immutable ConfigMap (pure builders).

The operator verified a registration against the ledger; the pod must not take the
operator's word for it either: the pod re-verifies the bytes it loads against the digest
the operator verified (docs/architecture.md, trust model). So the operator hands the pod everything
`modeltrust fetch` needs to re-check, without talking to the ledger:

    registration.json    the registration entry (as the ledger serves it, with its index)
    publisher.pem        the trusted publisher key that signed it (from the policy)
    checkpoint.note      the signed checkpoint the operator verified it against
    ledger.key           the ledger's checkpoint verifier key (from the policy)
    inclusion-proof.json the inclusion proof of the entry at exactly that checkpoint's size

The ConfigMap's name is derived from the ModelDeployment, the short digest and a hash of
which proof it holds (ledger key, registration index), so during a rolling update old pods
keep mounting the old version's material and new pods the new one. It is immutable: a
proof never needs editing, and the API server refuses edits to it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeltrust.chain.digest import short_digest
from modeltrust.chain.entries import Registration, entry_to_json
from modeltrust.chain.errors import HashSizeError, ProvenanceError
from modeltrust.chain.merkle import hash_to_b64
from modeltrust.chain.trust import Reason
from modeltrust.operator.builders import (
    PROVENANCE_DIR,
    object_labels,
    owner_reference,
    resource_name,
)
from modeltrust.operator.types import ModelDeployment

REGISTRATION_FILE = "registration.json"
PUBLISHER_KEY_FILE = "publisher.pem"
CHECKPOINT_FILE = "checkpoint.note"
LEDGER_KEY_FILE = "ledger.key"
PROOF_FILE = "inclusion-proof.json"
FILES = (REGISTRATION_FILE, PUBLISHER_KEY_FILE, CHECKPOINT_FILE, LEDGER_KEY_FILE, PROOF_FILE)

ANN_DIGEST = "modeltrust.dev/digest"
ANN_REGISTRATION = "modeltrust.dev/registration-index"
ANN_CHECKPOINT = "modeltrust.dev/checkpoint-size"


@dataclass(frozen=True)
class ProvenanceMaterial:
    """A registration proven at one verified checkpoint, with the keys to re-check it."""

    registration: Registration
    index: int
    leaf_hash: bytes
    checkpoint_note: str
    tree_size: int
    inclusion_proof: Sequence[bytes]
    publisher_key_pem: str
    ledger_key: str
    origin: str

    def __post_init__(self) -> None:
        if self.index >= self.tree_size:
            raise ProvenanceError(
                Reason.INCLUSION_UNPROVEN,
                f"registration index {self.index} is not below the checkpoint size "
                f"{self.tree_size}; it is not proven by that checkpoint",
            )
        if len(self.leaf_hash) != 32 or any(len(h) != 32 for h in self.inclusion_proof):
            raise HashSizeError("leaf and proof hashes must be 32 bytes")


def config_map_name(md_name: str, digest: str, ledger_key: str, index: int) -> str:
    """`<md>-<12 hex of digest>-<8 hex of (ledger key, registration index)>`.

    A ConfigMap name is a DNS subdomain (253 characters); resource_name() is at most 63.
    """
    short = short_digest(digest)
    which = hashlib.sha256(f"{ledger_key}\n{index}".encode()).hexdigest()[:8]
    return f"{resource_name(md_name)}-{short}-{which}"


def config_map_data(material: ProvenanceMaterial) -> dict[str, str]:
    """The files, in the shapes `modeltrust fetch` reads (the ledger's own JSON shapes)."""
    registration = {
        "index": material.index,
        "leaf_hash": hash_to_b64(material.leaf_hash),
        "entry": entry_to_json(material.registration),
    }
    proof = {
        "index": material.index,
        "tree_size": material.tree_size,
        "leaf_hash": hash_to_b64(material.leaf_hash),
        "inclusion_proof": [hash_to_b64(h) for h in material.inclusion_proof],
    }
    return {
        REGISTRATION_FILE: json.dumps(registration, indent=1, sort_keys=True) + "\n",
        PUBLISHER_KEY_FILE: material.publisher_key_pem,
        CHECKPOINT_FILE: material.checkpoint_note,
        LEDGER_KEY_FILE: material.ledger_key.strip() + "\n",
        PROOF_FILE: json.dumps(proof, indent=1, sort_keys=True) + "\n",
    }


def build_config_map(md: ModelDeployment, material: ProvenanceMaterial) -> dict[str, Any]:
    name = config_map_name(md.ref.name, material.registration.digest, material.ledger_key,
                           material.index)  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": md.ref.namespace,
            "labels": object_labels(md),
            "annotations": {
                ANN_DIGEST: material.registration.digest,
                ANN_REGISTRATION: str(material.index),
                ANN_CHECKPOINT: str(material.tree_size),
            },
            "ownerReferences": [owner_reference(md)],
        },
        "immutable": True,
        "data": config_map_data(material),
    }


def has_all_files(config_map: Mapping[str, Any]) -> bool:
    """Whether an existing ConfigMap holds every file the init step reads."""
    data = config_map.get("data") or {}
    return all(isinstance(data.get(f), str) and data.get(f) for f in FILES)


def fetch_args(origin: str) -> tuple[str, ...]:
    """`modeltrust fetch` options that make the init step re-verify the registration offline."""
    return (
        "--registration", f"{PROVENANCE_DIR}/{REGISTRATION_FILE}",
        "--publisher-key", f"{PROVENANCE_DIR}/{PUBLISHER_KEY_FILE}",
        "--checkpoint", f"{PROVENANCE_DIR}/{CHECKPOINT_FILE}",
        "--ledger-key", f"{PROVENANCE_DIR}/{LEDGER_KEY_FILE}",
        "--inclusion-proof", f"{PROVENANCE_DIR}/{PROOF_FILE}",
        "--origin", origin,
    )  # fmt: skip
