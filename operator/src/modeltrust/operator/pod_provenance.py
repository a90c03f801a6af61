"""Create (or re-create) the immutable ConfigMap that carries the pod's offline proof.

The builders in provenance.py decide what the ConfigMap holds; this module does the two
API calls and the one ledger read around them. A ConfigMap that already exists under the
derived name is never trusted by its name or its ownerReference (anyone who may create
ConfigMaps in the namespace can forge both): it is reused only if its content is exactly
what the operator would write for a registration that verifies with the policy's keys:
the policy's ledger key and the trusted publisher's key byte for byte, a registration of
the pinned digest at the expected index signed by that publisher, and a checkpoint signed
by the ledger key (and the policy's witnesses) that proves its inclusion. A proof at an
older checkpoint than the current one is fine (the init step checks it against the ledger
key, not against "newest"). Anything else is refused (ProvenancePending): delete it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import Registration
from modeltrust.chain.errors import ChainError
from modeltrust.chain.merkle import hash_from_b64
from modeltrust.chain.provenance import verify_provenance
from modeltrust.chain.trust import short_key_id
from modeltrust.operator.builders import controlled_by
from modeltrust.operator.errors import (
    Conflict,
    LedgerUnverified,
    OperatorError,
    ProvenancePending,
    SpecError,
)
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.provenance import (
    CHECKPOINT_FILE,
    FILES,
    PROOF_FILE,
    REGISTRATION_FILE,
    ProvenanceMaterial,
    build_config_map,
    config_map_data,
    config_map_name,
    fetch_args,
    has_all_files,
)
from modeltrust.operator.types import LedgerSpec, ModelDeployment
from modeltrust.operator.witness import WitnessRequirement


@dataclass(frozen=True)
class PodProvenance:
    config_map: str
    origin: str

    @property
    def fetch_args(self) -> tuple[str, ...]:
        return fetch_args(self.origin)

    def to_status(self) -> dict[str, Any]:
        return {"configMap": self.config_map, "origin": self.origin}

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> PodProvenance | None:
        doc = status.get("provenance")
        if not isinstance(doc, Mapping):
            return None
        name, origin = doc.get("configMap"), doc.get("origin")
        if not isinstance(name, str) or not isinstance(origin, str) or not name or not origin:
            return None
        return cls(name, origin)


class _Unusable(OperatorError):
    """An existing proof ConfigMap's file cannot be read."""


def _json(data: Mapping[str, Any], file: str) -> Any:
    try:
        return json.loads(data[file])
    except ValueError as exc:
        raise _Unusable(f"{file} is not JSON: {exc}") from None


def proof_problem(
    config_map: Mapping[str, Any],
    md: ModelDeployment,
    spec: LedgerSpec,
    keys: TrustedKeys,
    index: int,
) -> str | None:
    """Why an existing proof ConfigMap is not one the operator would have written for the
    registration at `index` of the pinned digest (None: it is)."""
    if not controlled_by(config_map, md.ref.uid):
        return "it is not controlled by this ModelDeployment"
    if not has_all_files(config_map) or config_map.get("binaryData"):
        return "it does not hold exactly the proof files"
    data = config_map.get("data") or {}
    try:
        reg_doc = _json(data, REGISTRATION_FILE)
        proof = _json(data, PROOF_FILE)
        entry = reg_doc.get("entry") if isinstance(reg_doc, dict) else None
        signer = entry.get("signer_key_id") if isinstance(entry, dict) else None
        trusted = keys.get(signer) if isinstance(signer, str) else None
        if trusted is None:
            return "its registration is not signed by a publisher of the policy"
        proven = verify_provenance(
            digest=md.model.digest,
            registration=reg_doc,
            publisher_key_pem=trusted.publisher.public_key_pem.encode(),
            checkpoint_note=data[CHECKPOINT_FILE],
            ledger_verifier_key=spec.verifier_key,
            proof=proof,
            origin=spec.expected_origin,
        )
        requirement = WitnessRequirement.from_ledger(spec)
        if requirement is not None:
            requirement.check(data[CHECKPOINT_FILE], what="its checkpoint")
        if proven.index != index or reg_doc.get("index") != index:
            return f"it proves ledger entry {proven.index}, not registration {index}"
        material = ProvenanceMaterial(
            registration=proven.registration,
            index=index,
            leaf_hash=hash_from_b64(reg_doc.get("leaf_hash"), "registration.json leaf_hash"),
            checkpoint_note=data[CHECKPOINT_FILE],
            tree_size=proven.tree_size,
            inclusion_proof=tuple(
                hash_from_b64(h, "inclusion proof hash") for h in proof.get("inclusion_proof") or []
            ),
            publisher_key_pem=trusted.publisher.public_key_pem,
            ledger_key=spec.verifier_key,
            origin=proven.origin,
        )
    except (_Unusable, ChainError, SpecError) as exc:
        return f"its proof does not verify with the policy's keys ({exc})"
    # Byte for byte what the operator writes for this registration and checkpoint: no
    # other key, no extra file, no different encoding for the init step to stumble on.
    if dict(data) != config_map_data(material) or set(data) != set(FILES):
        return "its files differ from what the operator writes"
    return None


async def _usable(
    kube: Kube,
    md: ModelDeployment,
    name: str,
    spec: LedgerSpec,
    keys: TrustedKeys,
    index: int,
) -> bool:
    """True if the ConfigMap `name` exists and holds our proof of registration `index`;
    ProvenancePending if it exists with anything else."""
    current = await kube.get_config_map(md.ref.namespace, name)
    if current is None:
        return False
    problem = proof_problem(current, md, spec, keys, index)
    if problem is not None:
        raise ProvenancePending(
            f"ConfigMap {md.ref.namespace}/{name} exists but {problem}; it was not written by "
            "the operator for this ModelDeployment and is not used as the pod's proof: "
            "delete it so the operator can write its own"
        )
    return True


def planned_provenance(
    md: ModelDeployment, spec: LedgerSpec, found: VerifiedEntry
) -> PodProvenance:
    """The proof apply_provenance writes for registration `found` (known before writing it,
    so the pod template can be audited before anything is applied)."""
    name = config_map_name(md.ref.name, md.model.digest, spec.verifier_key, found.index)
    return PodProvenance(name, found.checkpoint.checkpoint.origin)


async def apply_provenance(
    kube: Kube,
    ledger: LedgerAccess,
    md: ModelDeployment,
    spec: LedgerSpec,
    keys: TrustedKeys,
    found: VerifiedEntry,
) -> PodProvenance:
    """Write the offline proof of registration `found` for the pods of `md`."""
    reg = found.entry
    if not isinstance(reg, Registration) or reg.digest != md.model.digest:
        raise ProvenancePending(f"ledger entry {found.index} is not a registration of the pin")
    trusted = keys.get(reg.signer_key_id)
    if trusted is None:
        raise ProvenancePending(
            f"registration {found.index} is signed by key {short_key_id(reg.signer_key_id)}, "
            "which the policy does not trust"
        )
    result = planned_provenance(md, spec, found)
    name = result.config_map
    try:
        if await _usable(kube, md, name, spec, keys, found.index):
            return result
        material = await ledger.provenance(spec, found, trusted.publisher.public_key_pem)
        body = build_config_map(md, material)
        assert body["metadata"]["name"] == name
        try:
            await kube.create_config_map(md.ref.namespace, body)
        except Conflict:
            # Created concurrently (a retry after a crash): fine if it is ours and complete.
            if not await _usable(kube, md, name, spec, keys, found.index):
                raise ProvenancePending(f"ConfigMap {md.ref.namespace}/{name} vanished") from None
    except LedgerUnverified as exc:
        raise ProvenancePending(f"could not fetch the inclusion proof for the pod: {exc}") from exc
    except ApiException as exc:
        raise ProvenancePending(
            f"could not write ConfigMap {md.ref.namespace}/{name} ({exc.status} {exc.reason}); "
            "the operator needs get and create on configmaps in this namespace (docs/rbac.md)"
        ) from exc
    return result


async def restore_provenance(
    kube: Kube,
    ledger: LedgerAccess,
    md: ModelDeployment,
    spec: LedgerSpec,
    keys: TrustedKeys,
    provenance: PodProvenance,
    registration_index: int,
) -> None:
    """Re-create a deleted proof ConfigMap for the serving version (same name, fresh proof)."""
    if await _usable(kube, md, provenance.config_map, spec, keys, registration_index):
        return
    expected = config_map_name(md.ref.name, md.model.digest, spec.verifier_key, registration_index)
    if expected != provenance.config_map:
        raise ProvenancePending(
            f"the serving version's proof {provenance.config_map} was written for another "
            "ledger than the policy names now; a new rollout will write a new one"
        )
    try:
        found = await ledger.registration(spec, registration_index)
    except LedgerUnverified as exc:
        raise ProvenancePending(
            f"could not re-read registration {registration_index}: {exc}"
        ) from exc
    await apply_provenance(kube, ledger, md, spec, keys, found)
