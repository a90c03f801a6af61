"""From a decision and the status record to what the operator writes: pure functions.

Why one long module: every status transition the operator makes is here, as pure
functions; seeing them together is how a reviewer checks they agree.

Each `plan_*` takes what was decided (and what was observed: the owned Deployment, the
audit append's result) together with the current `MDStatus`, and returns a `Plan`: the
status patch, the events to post and, when the object must be tried again, the Retry to
raise after applying it. reconcile.py and reverify.py gather evidence, decide, plan and
apply; everything a user sees in status and events is decided here, without I/O, and
unit-tested as such (tests/operator/unit/test_plans.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeltrust.chain.digest import short_digest
from modeltrust.chain.entries import AuditEntry
from modeltrust.operator import builders
from modeltrust.operator.audit import audit_entry, audit_reasons
from modeltrust.operator.builders import VerifiedModel
from modeltrust.operator.conditions import (
    REVOKED,
    VERIFIED,
    ConditionStatus,
    get_condition,
    rfc3339,
    set_condition,
)
from modeltrust.operator.decisions import Decision, Verdict, idempotency_key
from modeltrust.operator.errors import OperatorError, Retry, SpecError, condition_reason
from modeltrust.operator.pod_provenance import PodProvenance
from modeltrust.operator.runtime_policy import serving_mode
from modeltrust.operator.status import Readiness, controlled_uid, readiness, with_readiness
from modeltrust.operator.status_record import MDStatus, PolicyRef, StatusPatch
from modeltrust.operator.types import ModelDeployment, RevocationAction, TrustPolicy

EVENT_MESSAGE_LIMIT = 1024


@dataclass(frozen=True)
class Event:
    type: str  # "Normal" | "Warning"
    reason: str
    message: str

    @classmethod
    def warning(cls, reason: str, message: str) -> Event:
        return cls("Warning", reason, message[:EVENT_MESSAGE_LIMIT])

    @classmethod
    def normal(cls, reason: str, message: str) -> Event:
        return cls("Normal", reason, message[:EVENT_MESSAGE_LIMIT])


@dataclass(frozen=True)
class Plan:
    status: StatusPatch | None = None
    events: tuple[Event, ...] = ()
    raise_after: OperatorError | None = None  # Retry or Fatal, raised once applied


@dataclass(frozen=True)
class AuditRequest:
    """A best-effort audit entry to record (audit.audit_best_effort)."""

    action: str
    decision: str
    digest: str
    reasons: tuple[str, ...]
    detail: str


# --- a new generation: reconcile.py ------------------------------------------------------------


def plan_unusable(
    record: MDStatus, generation: int, reason: str, message: str, now: datetime
) -> Plan:
    """The spec or its policy cannot be used: Verified=False without asking the ledger."""
    conditions = set_condition(
        record.conditions, VERIFIED, "False", reason, message, generation, now
    )
    return Plan(
        record.patch(observed_generation=generation, conditions=tuple(conditions)),
        (Event("Warning", reason, message),),
    )


def plan_policy_unusable(
    record: MDStatus, md: ModelDeployment, exc: SpecError, now: datetime, delay: float
) -> Plan:
    """The policy is missing (PolicyNotFound) or invalid: refused, retried after `delay`."""
    plan = plan_unusable(record, md.ref.generation, condition_reason(exc), str(exc), now)
    return Plan(plan.status, plan.events, Retry(str(exc), delay))


def plan_audit(
    md: ModelDeployment,
    decision: Decision,
    actor: str,
    now: datetime,
    facts: tuple[str, ...] = (),
) -> AuditEntry:
    """The entry recording the decision on a generation, appended before anything is done;
    `facts` say what would run (image, pod template digest) and when the bytes were read."""
    action = "rollout" if decision.allowed else "refuse"
    return audit_entry(
        md,
        action=action,
        decision=decision.verdict.value,
        digest=md.model.digest,
        reasons=audit_reasons(
            decision.reasons, f"{decision.reason.value}: {decision.message}", facts
        ),
        key=idempotency_key(md.ref.uid, md.ref.generation, action, decision.reason.value),
        actor=actor,
        now=now,
    )


def _decided(record: MDStatus, md: ModelDeployment, audit_index: int | None) -> StatusPatch:
    patch = record.patch(observed_generation=md.ref.generation)
    if audit_index is not None:
        patch = patch.also(last_audit_index=audit_index, last_audit_generation=md.ref.generation)
    return patch


def plan_waiting(
    record: MDStatus,
    md: ModelDeployment,
    audit_index: int | None,
    reason: str,
    message: str,
    now: datetime,
    delay: float,
) -> Plan:
    """Allowed, but the rollout waits (AuditPending: not on the ledger yet;
    ProvenancePending: the pod's proof is not written): Verified=False, retried."""
    patch = _decided(record, md, audit_index)
    conditions = set_condition(
        patch.record.conditions, VERIFIED, "False", reason, message, md.ref.generation, now
    )
    return Plan(
        patch.also(conditions=tuple(conditions)),
        (Event.warning(reason, message),),
        Retry(message, delay),
    )


def plan_refusal(
    record: MDStatus,
    md: ModelDeployment,
    decision: Decision,
    *,
    audit_index: int | None,
    audit_error: str | None,
    deployment: Mapping[str, Any] | None,
    now: datetime,
    delay: float,
) -> Plan:
    """Refused: the previously verified Deployment (`deployment`, if any) is left as it
    is; Verified says why, Ready whether the previous version still serves."""
    generation = md.ref.generation
    patch = _decided(record, md, audit_index)
    conditions = set_condition(
        patch.record.conditions, VERIFIED, "False", decision.reason.value, decision.message,
        generation, now,
    )  # fmt: skip
    r = readiness(deployment, owner_uid=md.ref.uid, revoked=record.scaled_down_for_revocation)
    if deployment is not None and record.serving_digest:
        r = Readiness(
            r.status,
            r.reason,
            f"{r.message}; still serving the previously verified "
            f"{short_digest(record.serving_digest)}",
            r.replicas,
            r.ready_replicas,
        )
    events = [Event.warning("Refused", f"{decision.reason.value}: {decision.message}")]
    if audit_error is not None:
        events.append(
            Event.warning("AuditPending", f"refusal not yet on the ledger: {audit_error}")
        )
    return Plan(
        patch.also(
            conditions=tuple(with_readiness(conditions, r, generation, now)),
            replicas=r.replicas,
            ready_replicas=r.ready_replicas,
        ),
        tuple(events),
        Retry(decision.message, delay),
    )


def plan_rollout(
    record: MDStatus,
    md: ModelDeployment,
    decision: Decision,
    *,
    verified: VerifiedModel,
    provenance: PodProvenance | None,
    policy: TrustPolicy,
    serving_spec: Mapping[str, Any],
    deployment: Mapping[str, Any],
    audit_index: int | None,
    now: datetime,
    runtime_image: str | None = None,
    pod_template_digest: str | None = None,
    artifact_read_time: str | None = None,
    service_uid: str | None = None,
) -> Plan:
    """Rolled out: the serving version is this generation. Under Audit a model that failed
    trust checks is rolled out, but it is not verified: Verified=False/AuditOnly says so;
    Ready says whether it serves."""
    generation = md.ref.generation
    patch = _decided(record, md, audit_index)
    verified_status: ConditionStatus = "True" if decision.verdict is Verdict.ALLOWED else "False"
    conditions = set_condition(
        patch.record.conditions, VERIFIED, verified_status, decision.reason.value,
        decision.message, generation, now,
    )  # fmt: skip
    conditions = set_condition(
        conditions, REVOKED, "False", "NotRevoked", "no revocation applies", generation, now
    )
    r = readiness(deployment, owner_uid=md.ref.uid)
    patch = patch.also(
        conditions=tuple(with_readiness(conditions, r, generation, now)),
        verified_digest=md.model.digest,
        short_digest=short_digest(md.model.digest),
        serving_digest=md.model.digest,
        serving_generation=generation,
        serving_spec=serving_spec,
        model_size=verified.size,
        signer_key_ids=decision.signer_key_ids,
        registration_index=decision.registration_index,
        checkpoint_size=verified.checkpoint_size,
        last_verified_time=rfc3339(now),
        replicas=r.replicas,
        ready_replicas=r.ready_replicas,
        selector=builders.selector_string(md),
        deployment_name=builders.resource_name(md.ref.name),
        deployment_uid=controlled_uid(deployment, md.ref.uid) or record.deployment_uid,
        service_uid=service_uid or record.service_uid,
        model_signature=dict(decision.signature_json),
        provenance=provenance,
        revocation_action=None,
        verified_policy=PolicyRef.of(policy),
        runtime_image=runtime_image,
        pod_template_digest=pod_template_digest,
        mode=serving_mode(decision),
        artifact_read_time=artifact_read_time,
        credential_hosts=verified.credential_hosts,
        credential_secret=verified.credentials_secret,
    )
    message = f"{short_digest(md.model.digest)}: {decision.message}"
    event = (
        Event.normal("RolledOut", message)
        if decision.verdict is Verdict.ALLOWED
        else Event.warning("RolledOut", message)
    )
    return Plan(patch, (event,))


def plan_readiness(
    record: MDStatus, deployment: Mapping[str, Any] | None, owner_uid: str, now: datetime
) -> StatusPatch | None:
    """Ready and the replica counts for the owned Deployment as it is; None if unchanged."""
    r = readiness(deployment, owner_uid=owner_uid, revoked=record.scaled_down_for_revocation)
    conditions = with_readiness(record.conditions, r, record.observed_generation, now)
    uid = controlled_uid(deployment, owner_uid) or record.deployment_uid
    if (
        conditions == [dict(c) for c in record.conditions]
        and r.replicas == record.replicas
        and r.ready_replicas == record.ready_replicas
        and uid == record.deployment_uid
    ):
        return None
    return record.patch(
        conditions=tuple(conditions), replicas=r.replicas, ready_replicas=r.ready_replicas,
        deployment_uid=uid,
    )  # fmt: skip


# --- the serving version, decided again: reverify.py -------------------------------------------


def _verified_unchanged(
    before: tuple[Mapping[str, Any], ...], after: tuple[Mapping[str, Any], ...] | list[Any]
) -> bool:
    def pick(conds: Any) -> tuple[Any, ...] | None:
        c = get_condition(conds, VERIFIED)
        return None if c is None else (c.get("status"), c.get("reason"), c.get("message"))

    return pick(before) == pick(after)


def plan_flag(record: MDStatus, current: bool, reason: str, message: str, now: datetime) -> Plan:
    """The serving model could not be judged (no verified ledger answer, or no usable
    policy): it keeps running, Verified=Unknown says why. Nothing to write while the
    serving version is not the current generation (Verified is about the newer one), while
    it is revoked, or when Verified already says exactly this."""
    flagged = set_condition(
        record.conditions, VERIFIED, "Unknown", reason, message, record.observed_generation, now
    )
    if not current or record.revoked or _verified_unchanged(record.conditions, flagged):
        return Plan()
    return Plan(
        record.patch(conditions=tuple(flagged)), (Event.warning("ReverifyPending", message),)
    )


def plan_policy_gone(record: MDStatus, current: bool, exc: SpecError, now: datetime) -> Plan:
    """The serving model's policy is gone or invalid: nothing can judge it. It keeps running
    (a policy edit must not take models down by accident) but says so."""
    message = f"the serving model cannot be re-verified, left running: {exc}"
    return plan_flag(record, current, condition_reason(exc), message, now)


def audit_detail(policy: TrustPolicy, decision: Decision, *extra: str) -> str:
    """Idempotency detail: a crash and retry of the same decision lands on the same ledger
    entry; a different decision (another revocation, another policy) gets its own."""
    what = hashlib.sha256("\n".join((*decision.reasons, *extra)).encode()).hexdigest()[:8]
    return f"{policy.name}-{policy.generation}-{decision.reason.value}-{what}"


@dataclass(frozen=True)
class ReverifyPlan:
    plan: Plan
    message: str
    audit: AuditRequest | None = None
    restore: bool = False  # roll the serving version out again (trusted again)
    scale_to_zero: bool = False


def plan_still_trusted(
    record: MDStatus,
    *,
    current: bool,
    policy: TrustPolicy,
    decision: Decision,
    digest: str,
    now: datetime,
) -> ReverifyPlan:
    """The serving version is (still, or again) allowed under `policy`."""
    why = f"policy {policy.name!r} generation {policy.generation}"
    generation = record.observed_generation
    policy_changed = not record.decided_under(policy)
    message = f"re-verified under {why}: {decision.message}"
    restore = decision.verdict is Verdict.ALLOWED and record.revoked
    audit = None
    if policy_changed or restore:
        audit = AuditRequest(
            "reverify", decision.verdict.value, digest, decision.reasons or (message,),
            audit_detail(policy, decision, "restore" if restore else ""),
        )  # fmt: skip
    conditions: list[dict[str, Any]] = [dict(c) for c in record.conditions]
    if current:
        verified_status: ConditionStatus = (
            "True" if decision.verdict is Verdict.ALLOWED else "False"
        )
        conditions = set_condition(
            conditions, VERIFIED, verified_status, decision.reason.value, message,
            generation, now,
        )  # fmt: skip
    changed = not _verified_unchanged(record.conditions, conditions)
    if restore:
        # The policy trusts it again and the ledger revokes nothing: serve it again.
        conditions = set_condition(
            conditions, REVOKED, "False", "Reverified", message, generation, now
        )
    patch = record.patch(
        verified_policy=PolicyRef.of(policy),
        last_verified_time=rfc3339(now),
        conditions=tuple(conditions),
        mode=serving_mode(decision),
    )
    if restore:
        patch = patch.also(revocation_action=None)
    events: tuple[Event, ...] = ()
    if policy_changed or restore or changed:
        kind = "Normal" if decision.verdict is Verdict.ALLOWED else "Warning"
        events = (Event(kind, "Reverified", message[:EVENT_MESSAGE_LIMIT]),)
    return ReverifyPlan(Plan(patch, events), message, audit, restore=restore)


def plan_restored(
    patch: StatusPatch, deployment: Mapping[str, Any], owner_uid: str, now: datetime
) -> StatusPatch:
    """After a restore's rollout: Ready and the replicas of the Deployment written."""
    r = readiness(deployment, owner_uid=owner_uid)
    conditions = with_readiness(patch.record.conditions, r, patch.record.observed_generation, now)
    return patch.also(
        conditions=tuple(conditions), replicas=r.replicas, ready_replicas=r.ready_replicas,
        deployment_uid=controlled_uid(deployment, owner_uid) or patch.record.deployment_uid,
    )  # fmt: skip


def plan_revocation(
    record: MDStatus,
    *,
    policy: TrustPolicy,
    decision: Decision,
    digest: str,
    now: datetime,
) -> ReverifyPlan:
    """The serving version is no longer trusted: act per the policy's revocationAction."""
    why = f"policy {policy.name!r} generation {policy.generation}"
    generation = record.observed_generation
    patch = record.patch(verified_policy=PolicyRef.of(policy), last_verified_time=rfc3339(now))
    if record.revoked:
        return ReverifyPlan(Plan(patch), "already revoked")
    action = policy.revocation_action
    if not record.decided_under(policy):
        message = f"{why} no longer trusts the serving model: {decision.message}"
    else:
        message = f"the serving model is no longer trusted under {why}: {decision.message}"
    audit = AuditRequest(
        "revoke", action.value.lower(), digest, (*decision.reasons, message)[-32:],
        audit_detail(policy, decision),
    )  # fmt: skip
    scale = action is RevocationAction.SCALE_TO_ZERO
    reason = decision.reason.value
    conditions = set_condition(record.conditions, REVOKED, "True", reason, message, generation, now)
    conditions = set_condition(conditions, VERIFIED, "False", reason, message, generation, now)
    if scale:
        conditions = with_readiness(
            conditions, readiness({}, owner_uid="", revoked=True), generation, now
        )
    patch = patch.also(conditions=tuple(conditions), revocation_action=action.value)
    event = Event.warning("Revoked", f"{action.value} {short_digest(digest)}: {message}")
    return ReverifyPlan(Plan(patch, (event,)), message, audit, scale_to_zero=scale)
