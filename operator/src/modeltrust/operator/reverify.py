"""Re-verifying what serves: after a policy change, and periodically.

The serving version is decided again with `decide_serving`, from the ledger and the
policy only: the bytes are pinned by digest and are not fetched again (an unreachable or
vanished URL must never keep a model the policy no longer trusts running); their size,
recorded at rollout, is held to maxModelSize.
- still trusted: Verified is refreshed (a model the policy had stopped trusting is
  restored and rolled out again);
- no longer trusted (a publisher removed or no longer allowed by its modelNamePatterns,
  a threshold raised, a lower maxModelSize, a revocation on the ledger): handled like a
  revocation, per revocationAction (ScaleToZero or KeepAndFlag), and audited;
- no verified ledger answer: left running, flagged Verified=Unknown/ReverifyPending, and
  retried; lastVerifiedTime and verifiedPolicy are not refreshed by a check that decided
  nothing.
A policy event re-decides every user whose serving version was decided under another
policy generation (status.verifiedPolicy), and reconciles a generation that is not
serving yet at once. The timer (`recheck`) does the same level-triggered, whenever
verifiedPolicy is not the current generation and every reverifyInterval otherwise; it
also has the owned Deployment checked for drift.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from modeltrust.operator import builders
from modeltrust.operator.audit import audit_best_effort
from modeltrust.operator.decisions import Decision, Evidence, decide_serving, undecided
from modeltrust.operator.deps import Deps, load_policy
from modeltrust.operator.drift_correction import check_owned_deployment
from modeltrust.operator.errors import Fatal, Retry, SpecError
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.owned import apply_deployment, serving_model
from modeltrust.operator.plans import (
    Plan,
    ReverifyPlan,
    plan_flag,
    plan_policy_gone,
    plan_restored,
    plan_revocation,
    plan_still_trusted,
)
from modeltrust.operator.reconcile import apply_plan, reconcile
from modeltrust.operator.runtime_policy import boundary_findings, refuse_with
from modeltrust.operator.status_record import MDStatus
from modeltrust.operator.types import DEFAULT_POLICY, TrustPolicy, parse_model_deployment

log = logging.getLogger("modeltrust.operator.policy")

REVERIFY_CONCURRENCY = 8


async def users(deps: Deps, policy_name: str) -> list[dict[str, Any]]:
    scopes: list[str | None] = list(deps.namespaces) or [None]
    found: list[dict[str, Any]] = []
    for ns in scopes:
        for md in await deps.kube.list_model_deployments(ns):
            spec = md.get("spec") or {}
            if (spec.get("policy") or DEFAULT_POLICY) == policy_name and not (
                md.get("metadata") or {}
            ).get("deletionTimestamp"):
                found.append(md)
    return found


async def reverify_users(
    deps: Deps, policy: TrustPolicy, keys: TrustedKeys, *, retry_pending: bool
) -> None:
    """Re-decide the serving version of every user not yet decided under this generation;
    with `retry_pending`, also reconcile generations that are not serving yet."""
    mds = await users(deps, policy.name)
    gate = asyncio.Semaphore(REVERIFY_CONCURRENCY)

    async def one(md: dict[str, Any]) -> None:
        meta = md.get("metadata") or {}
        record = MDStatus.from_status(md.get("status"))
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        async with gate:
            try:
                if record.serving_digest and not record.decided_under(policy):
                    await reverify_serving(deps, md, policy, keys)
                if retry_pending and not record.serving_is_current(meta.get("generation")):
                    fresh = await deps.kube.get_model_deployment(meta["namespace"], meta["name"])
                    if fresh is not None:
                        await reconcile(deps, fresh)
            except (Retry, Fatal) as exc:
                log.info("%s after policy change: %s", where, exc)
            except Exception:  # one object's failure must not stop the others
                log.exception("re-verifying %s failed", where)

    await asyncio.gather(*(one(md) for md in mds))
    if mds:
        log.info("policy %s generation %d: re-verified %d ModelDeployment(s)",
                 policy.name, policy.generation, len(mds))  # fmt: skip


def due(record: MDStatus, policy: TrustPolicy, now: datetime) -> bool:
    """Whether the periodic re-check of the serving version is due (reverifyInterval)."""
    if not record.last_verified_time:
        return True
    try:
        when = datetime.strptime(record.last_verified_time, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return True
    return (now - when.replace(tzinfo=UTC)).total_seconds() >= policy.reverify_seconds


async def recheck(
    deps: Deps, body: Mapping[str, Any], *, watched: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """The timer: level-triggered re-verification of the serving version.

    Re-decided whenever it was last decided under another policy generation (whatever
    happened to the policy event: a missed event, an undecidable first try, a restart),
    and otherwise every reverifyInterval. `watched` holds the policies the watch has
    delivered (by name); only a policy missing there is read from the API server. Also
    checks the owned Deployment for drift, so a change the Deployment watch cannot see
    (its label removed) is still corrected.
    """
    record = MDStatus.from_status(body.get("status"))
    if not record.serving_digest:
        return "nothing serving"
    try:
        md = parse_model_deployment(body)
        policy, keys = await load_policy(deps, md, watched=watched if watched is not None else {})
    except SpecError as exc:
        current = record.serving_is_current((body.get("metadata") or {}).get("generation"))
        await apply_plan(deps, body, plan_policy_gone(record, current, exc, deps.clock()))
        return f"policy unavailable: {exc}"
    result = "not due"
    if not record.decided_under(policy) or due(record, policy, deps.clock()):
        result = await reverify_serving(deps, body, policy, keys, periodic=True)
    await check_owned_deployment(deps, body)
    return result


async def reverify_serving(
    deps: Deps,
    body: Mapping[str, Any],
    policy: TrustPolicy,
    keys: TrustedKeys,
    *,
    periodic: bool = False,
    force: bool = False,
) -> str:
    """Decide the serving version again under `policy` and act on the decision. `force`
    decides now whatever was decided when (the ledger follower, on a new revocation)."""
    meta = body.get("metadata") or {}
    async with deps.lock(str(meta.get("uid") or "")):
        fresh = await deps.kube.get_model_deployment(meta["namespace"], meta["name"])
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
            return "gone"
        served = serving_model(fresh)
        if served is None:
            return "nothing serving"
        record = MDStatus.from_status(fresh.get("status"))
        if (
            not force
            and record.decided_under(policy)
            and not (periodic and due(record, policy, deps.clock()))
        ):
            return "already decided under this policy generation"
        md, verified = served
        ledger = await deps.ledger.evidence(policy.ledger, keys, verified.digest, md.model.name)
        size = record.model_size
        decision = decide_serving(
            Evidence(
                pinned_digest=verified.digest,
                model_name=md.model.name,
                model_version=md.model.version,
                registrations=ledger.registrations,
                revocations=ledger.revocations,
                ledger_error=ledger.error,
                ledger_unwitnessed=ledger.unwitnessed,
                ledger_inconsistent=ledger.inconsistent,
                ledger_trust_missing=ledger.trust_missing,
            ),
            policy,
            size if size is not None and size > 0 else None,
        )
        if ledger.inconsistent:
            deps.metrics.ledger_inconsistent.labels(ledger=policy.ledger.url).set(1)
        # Still in the policy's scope, still a runtime the policy allows (hard in every mode).
        decision = refuse_with(
            decision, await boundary_findings(deps.kube, md, policy, deps.build.default_image)
        )
        return await _act(deps, fresh, policy, decision)


async def _act(deps: Deps, body: Mapping[str, Any], policy: TrustPolicy, decision: Decision) -> str:
    served = serving_model(body)
    assert served is not None
    md, verified = served
    record = MDStatus.from_status(body.get("status"))
    now = deps.clock()
    # Verified describes the spec's current generation; while a newer one is refused (and
    # the previous version keeps serving), its refusal must stay what Verified says.
    current = record.serving_is_current((body.get("metadata") or {}).get("generation"))

    if undecided(decision):
        # No verified ledger answer: leave it running, say so, retry at the next tick.
        for f in decision.findings:
            deps.metrics.ledger_errors.labels(kind=f.reason.value).inc()
        why = f"policy {policy.name!r} generation {policy.generation}"
        message = f"{why}: could not re-verify the serving model, left running: {decision.message}"
        await apply_plan(deps, body, plan_flag(record, current, "ReverifyPending", message, now))
        return message

    step: ReverifyPlan
    if decision.allowed:
        step = plan_still_trusted(
            record, current=current, policy=policy, decision=decision, digest=verified.digest,
            now=now,
        )  # fmt: skip
    else:
        step = plan_revocation(
            record, policy=policy, decision=decision, digest=verified.digest, now=now
        )
        if step.audit is not None:
            deps.metrics.revocations.labels(action=policy.revocation_action.value).inc()
    if step.audit is not None:
        a = step.audit
        await audit_best_effort(
            deps, body, md, action=a.action, decision=a.decision, digest=a.digest,
            reasons=a.reasons, detail=a.detail, policy=policy,
        )  # fmt: skip
    plan = step.plan
    if step.scale_to_zero:
        await deps.kube.scale_deployment(md.ref.namespace, builders.resource_name(md.ref.name), 0)
    if step.restore:
        deployment = await apply_deployment(
            deps,
            md,
            builders.build_deployment(md, verified, deps.build),
            made_uid=record.deployment_uid,
        )
        assert plan.status is not None
        plan = Plan(plan_restored(plan.status, deployment, md.ref.uid, now), plan.events)
    await apply_plan(deps, body, plan)
    if not decision.allowed and step.audit is not None:
        log.warning("%s/%s: %s (%s)", md.ref.namespace, md.ref.name, step.message,
                    policy.revocation_action.value)  # fmt: skip
    return step.message
