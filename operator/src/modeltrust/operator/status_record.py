"""ModelDeployment status as a typed record: everything the operator writes and reads back.

Status is the operator's memory across restarts: which generation serves, which digest,
under which policy generation it was decided, where its audit entry is. `MDStatus` is the
one place that knows the field names; the rest of the operator reads attributes and
writes `StatusPatch`es (a merge patch of the fields a step sets; None clears a field).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from modeltrust.operator.conditions import REVOKED, is_true
from modeltrust.operator.pod_provenance import PodProvenance
from modeltrust.operator.types import RevocationAction, TrustPolicy


@dataclass(frozen=True)
class PolicyRef:
    """Which policy generation a serving version was last decided under (a policy change
    re-verifies exactly the ModelDeployments whose record differs)."""

    name: str
    uid: str
    generation: int

    @classmethod
    def of(cls, policy: TrustPolicy) -> PolicyRef:
        return cls(policy.name, policy.uid, policy.generation)

    def to_status(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "generation": self.generation}

    @classmethod
    def from_status(cls, doc: object) -> PolicyRef | None:
        if not isinstance(doc, Mapping):
            return None
        name, uid, generation = doc.get("name"), doc.get("uid"), doc.get("generation")
        number = _int(generation)
        if not isinstance(name, str) or not isinstance(uid, str) or number is None:
            return None
        return cls(name, uid, number)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) and value else None


# Python field name -> status key (camelCase, as the CRD's schema names it).
_KEYS = {
    "observed_generation": "observedGeneration",
    "conditions": "conditions",
    "replicas": "replicas",
    "ready_replicas": "readyReplicas",
    "last_audit_index": "lastAuditIndex",
    "last_audit_generation": "lastAuditGeneration",
    "verified_digest": "verifiedDigest",
    "short_digest": "shortDigest",
    "serving_digest": "servingDigest",
    "serving_generation": "servingGeneration",
    "serving_spec": "servingSpec",
    "model_size": "modelSize",
    "signer_key_ids": "signerKeyIds",
    "registration_index": "registrationIndex",
    "checkpoint_size": "checkpointSize",
    "last_verified_time": "lastVerifiedTime",
    "selector": "selector",
    "deployment_name": "deploymentName",
    "deployment_uid": "deploymentUID",
    "service_uid": "serviceUID",
    "model_signature": "modelSignature",
    "provenance": "provenance",
    "revocation_action": "revocationAction",
    "verified_policy": "verifiedPolicy",
    "runtime_image": "runtimeImage",
    "pod_template_digest": "podTemplateDigest",
    "mode": "mode",
    "artifact_read_time": "artifactReadTime",
    "credential_hosts": "credentialHosts",
    "credential_secret": "credentialSecret",
}


@dataclass(frozen=True)
class MDStatus:
    """A ModelDeployment's status. Fields the operator has not written (or that do not
    parse) are None/empty: a hand-edited status is never trusted into a wrong type."""

    observed_generation: int = 0
    conditions: tuple[Mapping[str, Any], ...] = ()
    replicas: int | None = None
    ready_replicas: int | None = None
    last_audit_index: int | None = None
    last_audit_generation: int | None = None
    # The serving version: what was verified and rolled out, and under which policy.
    verified_digest: str | None = None
    short_digest: str | None = None
    serving_digest: str | None = None
    serving_generation: int | None = None
    serving_spec: Mapping[str, Any] | None = None
    model_size: int | None = None
    signer_key_ids: tuple[str, ...] = ()
    registration_index: int | None = None
    checkpoint_size: int | None = None
    last_verified_time: str | None = None
    selector: str | None = None
    deployment_name: str | None = None
    # The uid of the Deployment the operator made: an object at its name that lost its
    # controller reference is ours to restore only if it is this very object.
    deployment_uid: str | None = None
    service_uid: str | None = None  # the same for the owned Service
    model_signature: Mapping[str, Any] | None = None
    provenance: PodProvenance | None = None
    revocation_action: str | None = None
    verified_policy: PolicyRef | None = None
    # What runs the serving version and when its bytes were read (the trust boundary).
    runtime_image: str | None = None
    pod_template_digest: str | None = None
    mode: str | None = None  # Enforced or AuditOnly
    artifact_read_time: str | None = None
    # The hosts the serving version's source credentials may go to (its Secret's
    # modeltrust.dev/hosts when verified): the pod's fetch step is held to them too.
    credential_hosts: tuple[str, ...] = ()
    # The Secret they came from when the pods' ServiceAccount named it (not the spec).
    credential_secret: str | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> MDStatus:
        s = status or {}
        listed = s.get("conditions")
        conditions: list[Any] = listed if isinstance(listed, list) else []
        keys = s.get("signerKeyIds")
        return cls(
            observed_generation=_int(s.get("observedGeneration")) or 0,
            conditions=tuple(c for c in conditions if isinstance(c, Mapping)),
            replicas=_int(s.get("replicas")),
            ready_replicas=_int(s.get("readyReplicas")),
            last_audit_index=_int(s.get("lastAuditIndex")),
            last_audit_generation=_int(s.get("lastAuditGeneration")),
            verified_digest=_str(s.get("verifiedDigest")),
            short_digest=_str(s.get("shortDigest")),
            serving_digest=_str(s.get("servingDigest")),
            serving_generation=_int(s.get("servingGeneration")),
            serving_spec=_mapping(s.get("servingSpec")),
            model_size=_int(s.get("modelSize")),
            signer_key_ids=tuple(k for k in (keys or ()) if isinstance(k, str))
            if isinstance(keys, list)
            else (),
            registration_index=_int(s.get("registrationIndex")),
            checkpoint_size=_int(s.get("checkpointSize")),
            last_verified_time=_str(s.get("lastVerifiedTime")),
            selector=_str(s.get("selector")),
            deployment_name=_str(s.get("deploymentName")),
            deployment_uid=_str(s.get("deploymentUID")),
            service_uid=_str(s.get("serviceUID")),
            model_signature=_mapping(s.get("modelSignature")),
            provenance=PodProvenance.from_status(s),
            revocation_action=_str(s.get("revocationAction")),
            verified_policy=PolicyRef.from_status(s.get("verifiedPolicy")),
            runtime_image=_str(s.get("runtimeImage")),
            pod_template_digest=_str(s.get("podTemplateDigest")),
            mode=_str(s.get("mode")),
            artifact_read_time=_str(s.get("artifactReadTime")),
            credential_hosts=_strings(s.get("credentialHosts")),
            credential_secret=_str(s.get("credentialSecret")),
        )

    def to_status(self, only: Iterable[str] | None = None) -> dict[str, Any]:
        """The status fields (`only`: these Python field names) as the API stores them."""
        names = _KEYS if only is None else only
        return {_KEYS[name]: _encode(getattr(self, name)) for name in names}

    def patch(self, **changes: Any) -> StatusPatch:
        """These fields changed (None: cleared), as a record and as a merge patch."""
        unknown = set(changes) - set(_KEYS)
        if unknown:
            raise TypeError(f"not status fields: {sorted(unknown)}")
        return StatusPatch(replace(self, **changes), frozenset(changes))

    # --- what the record says ---------------------------------------------------------------

    @property
    def revoked(self) -> bool:
        return is_true(self.conditions, REVOKED)

    @property
    def scaled_down_for_revocation(self) -> bool:
        """Revoked and scaled to zero; under KeepAndFlag the model keeps serving (and can
        be Ready), only flagged."""
        return self.revoked and self.revocation_action == RevocationAction.SCALE_TO_ZERO.value

    def serving_is_current(self, generation: int | None) -> bool:
        """Whether the serving version is the spec's current generation (not an older one
        kept serving while a newer one is refused or pending)."""
        return self.serving_generation == generation

    def decided_under(self, policy: TrustPolicy) -> bool:
        """Whether the serving version was last decided under this very policy generation."""
        return self.verified_policy == PolicyRef.of(policy)


def _strings(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def _encode(value: Any) -> Any:
    if isinstance(value, PolicyRef | PodProvenance):
        return value.to_status()
    if isinstance(value, tuple):
        return [dict(v) if isinstance(v, Mapping) else v for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


@dataclass(frozen=True)
class StatusPatch:
    """The fields one step writes, and the record as it will be after the write."""

    record: MDStatus
    fields: frozenset[str]

    def to_status(self) -> dict[str, Any]:
        return self.record.to_status(sorted(self.fields))

    def also(self, **changes: Any) -> StatusPatch:
        more = self.record.patch(**changes)
        return StatusPatch(more.record, self.fields | more.fields)
