"""Pure helpers that compute ModelDeployment status from decisions and Deployment state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeltrust.operator.builders import controlled_by
from modeltrust.operator.conditions import READY, ConditionStatus, set_condition


@dataclass(frozen=True)
class Readiness:
    status: ConditionStatus
    reason: str
    message: str
    replicas: int
    ready_replicas: int


def readiness(
    deployment: Mapping[str, Any] | None, *, owner_uid: str, revoked: bool = False
) -> Readiness:
    """Whether the owned Deployment serves its pinned version with every replica ready.

    Never from a Deployment the ModelDeployment `owner_uid` does not control: one whose
    controller reference was removed (anyone may have changed it since) or another object
    at its name is not the verified version, whatever its replicas say."""
    if deployment is None:
        return Readiness("False", "NotDeployed", "no verified version has been rolled out", 0, 0)
    if not revoked and not controlled_by(deployment, owner_uid):
        name = (deployment.get("metadata") or {}).get("name")
        return Readiness(
            "False", "NotControlled",
            f"Deployment {name} is not controlled by this ModelDeployment (its controller "
            "reference was removed, or another object took its name): its pods are not "
            "reported as serving the verified model",
            0, 0,
        )  # fmt: skip
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    if revoked:
        return Readiness("False", "Revoked", "the serving model was revoked", total, ready)
    observed = int(st.get("observedGeneration") or 0)
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    if observed < generation:
        return Readiness(
            "False", "Progressing", "the Deployment controller has not caught up", total, ready
        )
    if want == 0:
        return Readiness("True", "ScaledToZero", "0 replicas requested", total, ready)
    if updated == want == ready == available and total == want:
        return Readiness("True", "Available", f"{ready}/{want} replicas ready", total, ready)
    return Readiness(
        "False", "Progressing", f"{ready}/{want} replicas ready, {updated} updated", total, ready
    )


def controlled_uid(deployment: Mapping[str, Any] | None, owner_uid: str) -> str | None:
    """The uid of `deployment` if the ModelDeployment `owner_uid` controls it, else None."""
    if deployment is None or not controlled_by(deployment, owner_uid):
        return None
    uid = (deployment.get("metadata") or {}).get("uid")
    return uid if isinstance(uid, str) and uid else None


def with_readiness(
    conditions: Sequence[Mapping[str, Any]],
    r: Readiness,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    return set_condition(conditions, READY, r.status, r.reason, r.message, generation, now)
