"""Correcting drift of an owned Deployment (and Service), and keeping Ready in step with it.

Two ways in: the Deployment watch (handlers.owned_deployment_event) and the timer's own
look at most every `drift_check_seconds` (the watch selects by a label anyone who can edit
the Deployment can remove). What counts as drift is drift.py's; a correction rewrites the
verified Deployment and is audited (best effort: the correction happens regardless).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from modeltrust.operator import builders
from modeltrust.operator.audit import audit_best_effort
from modeltrust.operator.builders import VerifiedModel
from modeltrust.operator.deps import Deps
from modeltrust.operator.drift import detect_deployment_drift, drift_fingerprint
from modeltrust.operator.errors import Conflict, Fatal, NotControlled, Retry
from modeltrust.operator.owned import (
    apply_deployment,
    apply_service,
    expected_deployment,
    serving_model,
)
from modeltrust.operator.plans import plan_readiness
from modeltrust.operator.status import controlled_uid
from modeltrust.operator.status_record import MDStatus
from modeltrust.operator.types import ModelDeployment

log = logging.getLogger("modeltrust.operator")


def _resource_version(obj: Mapping[str, Any] | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


async def on_deployment_change(deps: Deps, owner: Mapping[str, Any]) -> None:
    """An owned Deployment changed (or was deleted): correct drift, refresh readiness.

    The Deployment is read again under the object's lock: a watch event's body can be older
    than a change the operator itself made meanwhile (a revocation's scale to zero, a new
    version), and comparing that with the new verified state would "correct" nothing and
    audit drift that never happened."""
    meta = owner.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return
    uid = str(meta.get("uid") or "")
    async with deps.lock(uid):
        fresh = await deps.kube.get_model_deployment(meta["namespace"], meta["name"])
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
            return
        expected = expected_deployment(deps, fresh)
        served = serving_model(fresh)
        if expected is None or served is None:
            return
        md, verified = served
        record = MDStatus.from_status(fresh.get("status"))
        deployment = await deps.kube.get_deployment(md.ref.namespace, expected["metadata"]["name"])
        diffs: tuple[str, ...] = ()
        if deployment is None:
            diffs = ("the Deployment was deleted",)
        else:
            diffs = detect_deployment_drift(deployment, expected)
        if diffs:
            deployment_seen = deployment
            try:
                deployment = await apply_deployment(
                    deps, md, expected, made_uid=record.deployment_uid
                )
            except NotControlled as exc:
                assert deployment is not None
                await _report_not_controlled(deps, fresh, md, record, deployment, verified, exc)
                return
            seen = "|".join((*diffs, _resource_version(deployment_seen)))
            await _record_correction(
                deps, fresh, md, verified, "Deployment", diffs, diffs,
                drift_fingerprint(expected) + "-" + hashlib.sha256(seen.encode()).hexdigest()[:8],
            )  # fmt: skip
        patch = plan_readiness(record, deployment, md.ref.uid, deps.clock())
        if patch is not None:
            await deps.kube.patch_model_deployment_status(
                md.ref.namespace, md.ref.name, patch.to_status()
            )


async def _record_correction(
    deps: Deps,
    body: Mapping[str, Any],
    md: ModelDeployment,
    verified: VerifiedModel,
    kind: str,
    diffs: tuple[str, ...],
    reasons: tuple[str, ...],
    detail: str,
) -> None:
    """A corrected owned object: metric, Warning Event, log line and `drift` audit entry.
    `detail` carries the live object's resourceVersion: a retry of this correction lands on
    the same entry, the same edit made again later gets its own."""
    deps.metrics.drift.inc()
    message = f"restored the verified {kind}: " + "; ".join(diffs)
    deps.events(body, "Warning", "DriftCorrected", message[:1024])
    log.warning("%s/%s: %s", md.ref.namespace, md.ref.name, message)
    await audit_best_effort(
        deps, body, md, action="drift", decision="corrected", digest=verified.digest,
        reasons=reasons, detail=detail,
    )  # fmt: skip


async def _report_not_controlled(
    deps: Deps,
    body: Mapping[str, Any],
    md: ModelDeployment,
    record: MDStatus,
    found: Mapping[str, Any],
    verified: VerifiedModel,
    exc: NotControlled,
) -> None:
    """Another object took the owned Deployment's name: never served from (Ready=False,
    NotControlled), evented and audited when it is first seen (not at every timer tick),
    left alone (it is not ours to delete; admission keeps others from making it)."""
    patch = plan_readiness(record, found, md.ref.uid, deps.clock())
    if patch is None:
        return  # already reported
    await deps.kube.patch_model_deployment_status(md.ref.namespace, md.ref.name, patch.to_status())
    deps.events(body, "Warning", "NotControlled", str(exc)[:1024])
    log.warning("%s/%s: %s", md.ref.namespace, md.ref.name, exc)
    found_meta = found.get("metadata") or {}
    await audit_best_effort(
        deps, body, md, action="drift", decision="not-corrected", digest=verified.digest,
        reasons=(f"NotControlled: {exc}",),
        detail=f"{found_meta.get('uid')}-{_resource_version(found)}",
    )  # fmt: skip


async def on_service_check(deps: Deps, owner: Mapping[str, Any]) -> None:
    """The timer's look at the owned Service: restore it where it drifted (who receives the
    model's traffic), audited like a Deployment's drift; remember which object it is."""
    meta = owner.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    async with deps.lock(uid):
        fresh = await deps.kube.get_model_deployment(meta["namespace"], meta["name"])
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
            return
        served = serving_model(fresh)
        if served is None:
            return
        md, verified = served
        record = MDStatus.from_status(fresh.get("status"))
        service, diffs = await apply_service(
            deps, md, made_uid=record.service_uid, missing_is_drift=True
        )
        if diffs:
            # The restored object's resourceVersion: the same edit made again later gets
            # its own entry.
            changed = "|".join((*diffs, _resource_version(service)))
            await _record_correction(
                deps, fresh, md, verified, "Service", diffs,
                tuple(f"Service {d}" for d in diffs),
                "service-" + hashlib.sha256(changed.encode()).hexdigest()[:16],
            )  # fmt: skip
        made = controlled_uid(service, md.ref.uid)
        if made is not None and made != record.service_uid:
            patch = record.patch(service_uid=made)
            await deps.kube.patch_model_deployment_status(
                md.ref.namespace, md.ref.name, patch.to_status()
            )


async def check_owned_deployment(deps: Deps, body: Mapping[str, Any]) -> None:
    """The timer's look at the owned Deployment, at most every `drift_check_seconds`: the
    Deployment watch selects by a label anyone who can edit the Deployment can remove, so
    drift must also be found from the ModelDeployment's side."""
    uid = str((body.get("metadata") or {}).get("uid") or "")
    if not deps.objects.drift_check_due(uid, time.monotonic(), deps.drift_check_seconds):
        return
    served = serving_model(body)
    if served is None:
        return
    md, _ = served
    name = builders.resource_name(md.ref.name)
    for kind, check in (("Deployment", on_deployment_change), ("Service", on_service_check)):
        try:
            await check(deps, body)
        except (Retry, Fatal, Conflict) as exc:
            deps.events(body, "Warning", "DriftNotCorrected", f"{kind} {name}: {exc}"[:1024])
            log.warning("%s/%s: drift not corrected: %s", md.ref.namespace, md.ref.name, exc)
