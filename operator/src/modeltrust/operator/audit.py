"""Audit entries: what the operator records on a policy's ledger, and when a failure to
record is fatal.

A decision to roll out is recorded before anything is rolled out (reconcile.py waits for
the entry). Other records (drift corrected, re-verified, revoked) are best effort: the
action they describe must happen whatever the ledger says, so a failed append is an
event and a metric. Every entry carries an idempotency key: the same decision about the
same object generation lands on one entry however often a crash makes it retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from modeltrust.chain.digest import short_digest
from modeltrust.chain.entries import AuditEntry
from modeltrust.operator.audit_outbox import OutboxFull
from modeltrust.operator.conditions import rfc3339
from modeltrust.operator.decisions import idempotency_key
from modeltrust.operator.deps import Deps, get_policy
from modeltrust.operator.errors import LedgerInconsistent, LedgerUnverified, PolicyNotFound
from modeltrust.operator.status_record import MDStatus
from modeltrust.operator.types import (
    LedgerSpec,
    ModelDeployment,
    TrustPolicy,
    parse_model_deployment,
)

MAX_REASON_TEXT = 1000
MAX_REASONS = 32


def audit_reasons(
    reasons: tuple[str, ...], fallback: str, facts: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The reasons as an entry holds them: at least one, each and their number bounded,
    then `facts` (runtime_policy.audit_facts: image, pod template, read time), which
    always fit."""
    kept = (*(reasons or (fallback,))[: MAX_REASONS - len(facts)], *facts)
    return tuple(r[:MAX_REASON_TEXT] for r in kept)


def audit_entry(
    md: ModelDeployment,
    *,
    action: str,
    decision: str,
    digest: str,
    reasons: tuple[str, ...],
    key: str,
    actor: str,
    now: datetime,
) -> AuditEntry:
    return AuditEntry(
        action=action,
        namespace=md.ref.namespace,
        name=md.ref.name,
        uid=md.ref.uid,
        generation=md.ref.generation,
        digest=digest,
        decision=decision,
        reasons=reasons,
        actor=actor,
        time=rfc3339(now),
        idempotency_key=key,
    )


KEPT = "kept in the audit outbox until the ledger answers"


async def record_audit(
    deps: Deps, ledger: LedgerSpec, entry: AuditEntry, *, keep: bool
) -> int | None:
    """Append `entry` to `ledger`: its index, or None when it was kept in the audit outbox
    for later (keep=True; a rollout passes keep=False: it must be on the ledger before it
    happens, so a failure raises LedgerUnverified/LedgerInconsistent)."""
    if deps.outbox is None:
        return await deps.ledger.append_audit(ledger, entry)
    try:
        return await deps.outbox.record(ledger, entry, keep=keep)
    except OutboxFull as exc:
        raise LedgerUnverified(str(exc)) from exc


async def audit_best_effort(
    deps: Deps,
    body: Mapping[str, Any],
    md: ModelDeployment,
    *,
    action: str,
    decision: str,
    digest: str,
    reasons: tuple[str, ...],
    detail: str = "",
    policy: TrustPolicy | None = None,
) -> int | None:
    """Record a decision on the ledger of `policy` (the one that decided; read from the
    API server when not given); a failure is an event and a metric, never an exception."""
    if policy is None:
        try:
            policy = await get_policy(deps, md.policy)
        except PolicyNotFound:
            deps.events(
                body, "Warning", "AuditFailed",
                f"{action} not recorded: policy {md.policy!r} is gone",
            )  # fmt: skip
            return None
    key = idempotency_key(md.ref.uid, md.ref.generation, action, detail)
    entry = audit_entry(
        md, action=action, decision=decision, digest=digest,
        reasons=audit_reasons(reasons, action), key=key, actor=deps.actor, now=deps.clock(),
    )  # fmt: skip
    try:
        index = await record_audit(deps, policy.ledger, entry, keep=True)
    except (LedgerUnverified, LedgerInconsistent) as exc:
        deps.metrics.audits.labels(result="failed").inc()
        deps.events(
            body, "Warning", "AuditFailed", f"{action} not recorded on the ledger: {exc}"[:1024]
        )
        return None
    if index is None:
        deps.metrics.audits.labels(result="kept").inc()
        deps.events(body, "Warning", "AuditPending", f"{action} {KEPT}")
        return None
    deps.metrics.audits.labels(result="recorded").inc()
    patch = MDStatus().patch(last_audit_index=index)
    await deps.kube.patch_model_deployment_status(md.ref.namespace, md.ref.name, patch.to_status())
    return index


async def audit_deletion(deps: Deps, body: Mapping[str, Any]) -> int | None:
    """Record that the ModelDeployment was deleted; LedgerUnverified/LedgerInconsistent
    propagate (the delete handler retries a few times, then lets deletion finish)."""
    md = parse_model_deployment(body)
    digest = MDStatus.from_status(body.get("status")).serving_digest or md.model.digest
    try:
        policy = await get_policy(deps, md.policy)
    except PolicyNotFound:
        deps.events(
            body, "Warning", "AuditFailed", f"deletion not recorded: policy {md.policy!r} is gone"
        )
        return None
    entry = audit_entry(
        md, action="delete", decision="deleted", digest=digest,
        reasons=(f"ModelDeployment deleted while serving {short_digest(digest)}",),
        key=idempotency_key(md.ref.uid, md.ref.generation, "delete"),
        actor=deps.actor, now=deps.clock(),
    )  # fmt: skip
    index = await record_audit(deps, policy.ledger, entry, keep=True)
    deps.metrics.audits.labels(result="recorded" if index is not None else "kept").inc()
    return index
