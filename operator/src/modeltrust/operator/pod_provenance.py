"""Create (or re-create) the immutable ConfigMap that carries the pod's offline proof.

The builders in provenance.py decide what the ConfigMap holds; this module does the two
API calls and the one ledger read around them. A ConfigMap that already exists under the
derived name and is controlled by the same ModelDeployment is reused as it is: its proof
is for the same registration on the same ledger, and a proof at an older checkpoint still
proves inclusion (the init step checks it against the ledger key, not against "newest").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import Registration
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Conflict, Kube
from modeltrust.operator.ledger_access import LedgerAccess, LedgerUnverified
from modeltrust.operator.provenance import (
    build_config_map,
    config_map_name,
    fetch_args,
    has_all_files,
)
from modeltrust.operator.types import LedgerSpec, ModelDeployment


class ProvenanceError(Exception):
    """The offline proof could not be written for the pod; the rollout waits."""


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


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


async def _usable(kube: Kube, md: ModelDeployment, name: str) -> bool:
    """True if our ConfigMap `name` exists with every file; ProvenanceError if it is not ours."""
    current = await kube.get_config_map(md.ref.namespace, name)
    if current is None:
        return False
    if not _controlled_by(current, md.ref.uid) or not has_all_files(current):
        raise ProvenanceError(
            f"ConfigMap {md.ref.namespace}/{name} exists but is not a complete proof written "
            "for this ModelDeployment; delete it so the operator can write its own"
        )
    return True


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
        raise ProvenanceError(f"ledger entry {found.index} is not a registration of the pin")
    trusted = keys.get(reg.signer_key_id)
    if trusted is None:
        raise ProvenanceError(
            f"registration {found.index} is signed by key {reg.signer_key_id[:16]}..., "
            "which the policy does not trust"
        )
    name = config_map_name(md.ref.name, reg.digest, spec.verifier_key, found.index)
    result = PodProvenance(name, found.checkpoint.checkpoint.origin)
    try:
        if await _usable(kube, md, name):
            return result
        material = await ledger.provenance(spec, found, trusted.publisher.public_key_pem)
        body = build_config_map(md, material)
        assert body["metadata"]["name"] == name
        try:
            await kube.create_config_map(md.ref.namespace, body)
        except Conflict:
            # Created concurrently (a retry after a crash): fine if it is ours and complete.
            if not await _usable(kube, md, name):
                raise ProvenanceError(f"ConfigMap {md.ref.namespace}/{name} vanished") from None
    except LedgerUnverified as exc:
        raise ProvenanceError(f"could not fetch the inclusion proof for the pod: {exc}") from exc
    except ApiException as exc:
        raise ProvenanceError(
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
    if await _usable(kube, md, provenance.config_map):
        return
    expected = config_map_name(md.ref.name, md.model.digest, spec.verifier_key, registration_index)
    if expected != provenance.config_map:
        raise ProvenanceError(
            f"the serving version's proof {provenance.config_map} was written for another "
            "ledger than the policy names now; a new rollout will write a new one"
        )
    try:
        found = await ledger.registration(spec, registration_index)
    except LedgerUnverified as exc:
        raise ProvenanceError(
            f"could not re-read registration {registration_index}: {exc}"
        ) from exc
    await apply_provenance(kube, ledger, md, spec, keys, found)
