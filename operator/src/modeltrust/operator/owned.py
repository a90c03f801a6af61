"""The objects a ModelDeployment owns: its Deployment, its Service and its pod's proof.

The serving version is rebuilt from status alone (`serving_model`): the spec as it was
when that version was verified, its digest, signers and proof. Anything here only ever
writes what was verified; deciding is reconcile.py's and reverify.py's job.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from modeltrust.operator import builders
from modeltrust.operator.builders import VerifiedModel, controlled_by
from modeltrust.operator.deps import Deps, load_policy
from modeltrust.operator.drift import detect_service_drift
from modeltrust.operator.errors import (
    Conflict,
    NotControlled,
    ProvenancePending,
    Retry,
    SpecError,
)
from modeltrust.operator.pod_provenance import restore_provenance
from modeltrust.operator.status_record import MDStatus
from modeltrust.operator.types import MODEL_DEPLOYMENT_KIND, ModelDeployment, parse_model_deployment

log = logging.getLogger("modeltrust.operator")


def _controller(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r for r in refs if isinstance(r, Mapping) and r.get("controller")), None)


def is_ours_orphaned(current: Mapping[str, Any], made_uid: str | None) -> bool:
    """Whether `current` is the very object the operator made (`made_uid`, from status),
    whose controller reference someone removed or pointed elsewhere. Restoring it is taking
    back our own object; anything else at its name is not ours to take."""
    uid = (current.get("metadata") or {}).get("uid")
    return bool(made_uid) and uid == made_uid


def refuse_foreign(current: Mapping[str, Any], md: ModelDeployment) -> NoReturn:
    """An object at an owned object's name that is not ours: wait while it is on its way
    out (being deleted, or left by an earlier ModelDeployment of this name, which the
    garbage collector removes); otherwise it is someone else's (NotControlled)."""
    meta = current.get("metadata") or {}
    what = f"{current.get('kind') or 'object'} {md.ref.namespace}/{meta.get('name')}"
    controller = _controller(current)
    if meta.get("deletionTimestamp"):
        raise Retry(f"{what} is being deleted; waiting for it to go", 2)
    if (
        controller is not None
        and controller.get("kind") == MODEL_DEPLOYMENT_KIND
        and controller.get("name") == md.ref.name
        and controller.get("uid") != md.ref.uid
    ):
        raise Retry(
            f"{what} still belongs to an earlier ModelDeployment {md.ref.name!r} "
            "(deleted; the garbage collector removes it); waiting", 5,
        )  # fmt: skip
    raise NotControlled(
        f"{what} exists and is not controlled by this ModelDeployment "
        "(not the object the operator made); rename or delete it"
    )


async def apply_deployment(
    deps: Deps, md: ModelDeployment, desired: dict[str, Any], *, made_uid: str | None
) -> dict[str, Any]:
    """Create or replace the owned Deployment with `desired` (which carries the controller
    reference and labels). The Deployment the operator made (`made_uid`) is restored even
    if it lost its controller reference; any other object at its name is never taken over
    (NotControlled)."""
    ns, name = md.ref.namespace, desired["metadata"]["name"]
    for _ in range(5):
        current = await deps.kube.get_deployment(ns, name)
        try:
            if current is None:
                return await deps.kube.create_deployment(ns, desired)
            if not controlled_by(current, md.ref.uid) and not is_ours_orphaned(current, made_uid):
                refuse_foreign(current, md)
            body = copy.deepcopy(desired)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            replaced = await deps.kube.replace_deployment(ns, name, body)
            if replaced is not None:
                return replaced
        except Conflict:
            continue
    raise Retry(f"Deployment {ns}/{name} kept changing while being updated", 5)


# What the API server assigns a Service and a replace must carry over (clusterIP is immutable).
_ASSIGNED_SERVICE_FIELDS = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")


async def apply_service(
    deps: Deps, md: ModelDeployment, *, made_uid: str | None, missing_is_drift: bool = False
) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """Create the owned Service, or restore it whole where it drifted (who receives the
    model's traffic: selector, ports, type, external IPs; labels; controller reference).
    The Service the operator made (`made_uid`) is restored even if it lost its controller
    reference; any other object at its name is never taken over (NotControlled). Returns
    the Service and what had drifted (for a new one: nothing, or, with `missing_is_drift`,
    that it had been deleted)."""
    desired = builders.build_service(md)
    ns, name = md.ref.namespace, desired["metadata"]["name"]
    for _ in range(5):
        current = await deps.kube.get_service(ns, name)
        try:
            if current is None:
                created = await deps.kube.create_service(ns, desired)
                return created, ("the Service was deleted",) if missing_is_drift else ()
            if not controlled_by(current, md.ref.uid) and not is_ours_orphaned(current, made_uid):
                refuse_foreign(current, md)
            diffs = detect_service_drift(current, desired)
            if not diffs:
                return current, ()
            body = copy.deepcopy(desired)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            spec = current.get("spec") or {}
            for key in _ASSIGNED_SERVICE_FIELDS:
                if key in spec:
                    body["spec"][key] = spec[key]
            replaced = await deps.kube.replace_service(ns, name, body)
            if replaced is not None:
                return replaced, diffs
        except Conflict:
            continue
    raise Retry(f"Service {ns}/{name} kept changing while being updated", 5)


def serving_model(body: Mapping[str, Any]) -> tuple[ModelDeployment, VerifiedModel] | None:
    """The ModelDeployment as it was when its serving version was verified, from status."""
    record = MDStatus.from_status(body.get("status"))
    if record.serving_spec is None or record.serving_digest is None:
        return None
    served = {"metadata": dict(body.get("metadata") or {}), "spec": dict(record.serving_spec)}
    served["metadata"]["generation"] = record.serving_generation or 0
    md = parse_model_deployment(served)
    provenance = record.provenance
    verified = VerifiedModel(
        digest=record.serving_digest,
        size=record.model_size or 0,
        generation=record.serving_generation or 0,
        signer_key_ids=record.signer_key_ids,
        registration_index=record.registration_index,
        checkpoint_size=record.checkpoint_size,
        fetch_args=provenance.fetch_args if provenance else (),
        provenance_config_map=provenance.config_map if provenance else None,
        credential_hosts=record.credential_hosts,
        credentials_secret=record.credential_secret,
    )
    return md, verified


def expected_deployment(deps: Deps, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Deployment of the serving version (scaled to zero if revoked so), or None."""
    served = serving_model(body)
    if served is None:
        return None
    md, verified = served
    scaled_down = MDStatus.from_status(body.get("status")).scaled_down_for_revocation
    return builders.build_deployment(md, verified, deps.build, replicas=0 if scaled_down else None)


async def ensure_provenance(deps: Deps, body: Mapping[str, Any]) -> None:
    """Re-create the serving version's proof ConfigMap if someone deleted it (its pods
    could not start their init step without it)."""
    served = serving_model(body)
    provenance = MDStatus.from_status(body.get("status")).provenance
    if served is None or provenance is None:
        return
    md, verified = served
    index = verified.registration_index
    if index is None:
        return
    try:
        policy, keys = await load_policy(deps, parse_model_deployment(body))
        await restore_provenance(
            deps.kube, deps.ledger, md, policy.ledger, keys, provenance, int(index)
        )
    except (SpecError, ProvenancePending) as exc:
        deps.events(body, "Warning", "ProvenancePending", str(exc)[:1024])
        log.warning("%s/%s: %s", md.ref.namespace, md.ref.name, exc)


async def ensure_serving(deps: Deps, body: Mapping[str, Any], md: ModelDeployment) -> None:
    """Recreate the verified Deployment/Service (and proof) if they are gone (no new
    verification)."""
    expected = expected_deployment(deps, body)
    if expected is None:
        return
    await ensure_provenance(deps, body)
    current = await deps.kube.get_deployment(md.ref.namespace, expected["metadata"]["name"])
    if current is None:
        made_uid = MDStatus.from_status(body.get("status")).deployment_uid
        await apply_deployment(deps, md, expected, made_uid=made_uid)
    record = MDStatus.from_status(body.get("status"))
    await apply_service(deps, md, made_uid=record.service_uid)
