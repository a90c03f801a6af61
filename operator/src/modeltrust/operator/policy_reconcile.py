"""Re-verifying what serves: when a ModelTrustPolicy appears or changes, and periodically.

1. Policy events: evaluate the policy (pure policy_status + one verified checkpoint read)
   and write its status: observedGeneration, Valid, LedgerReachable, publisher key ids.
2. Every ModelDeployment using it whose serving version was decided under another policy
   generation (status.verifiedPolicy) is decided again with `decide_serving`: from the
   ledger and the policy only (the bytes are pinned by digest and are not fetched again;
   their recorded size is held to maxModelSize).
   - still trusted: Verified is refreshed (a model the policy had stopped trusting is
     restored);
   - no longer trusted (a publisher removed or no longer allowed by its modelNamePatterns,
     a threshold raised, a lower maxModelSize, a revocation on the ledger): handled like a
     revocation, per revocationAction (ScaleToZero or KeepAndFlag), and audited;
   - no verified ledger answer: left running, flagged Verified=Unknown/ReverifyPending,
     and retried; lastVerifiedTime and verifiedPolicy are not refreshed by a check that
     decided nothing.
   A generation that is not serving yet (refused, or waiting for this policy) is
   reconciled now instead of at its next back-off retry.
3. The timer (`recheck`) does the same, level-triggered: whenever verifiedPolicy is not
   the current policy generation (a missed event, an undecided try, a restart) and every
   reverifyInterval otherwise; it also checks the owned Deployment for drift.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from modeltrust.operator import builders
from modeltrust.operator.conditions import (
    REVOKED,
    VERIFIED,
    ConditionStatus,
    get_condition,
    rfc3339,
    set_condition,
)
from modeltrust.operator.decisions import (
    Decision,
    Evidence,
    Verdict,
    decide_serving,
    undecided,
)
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.ledger_access import (
    LedgerInconsistent,
    LedgerUnverified,
    LedgerUnwitnessed,
)
from modeltrust.operator.policy_status import (
    ConditionValue,
    invalid,
    ledger_condition_changed,
    ledger_failed,
    ledger_verified,
    not_checked,
    policy_status,
    valid,
)
from modeltrust.operator.reconcile import (
    Deps,
    Fatal,
    Retry,
    apply_deployment,
    audit_best_effort,
    check_owned_deployment,
    load_policy,
    policy_ref,
    reconcile,
    serving_model,
)
from modeltrust.operator.runtime_policy import boundary_findings, refuse_with, serving_mode
from modeltrust.operator.status import is_revoked, readiness, short_digest, with_readiness
from modeltrust.operator.types import (
    DEFAULT_POLICY,
    RevocationAction,
    SpecError,
    TrustPolicy,
    parse_model_deployment,
    parse_trust_policy,
)
from modeltrust.operator.witness import WitnessRequirement

log = logging.getLogger("modeltrust.operator.policy")

REVERIFY_CONCURRENCY = 8


def parse_checked(body: Mapping[str, Any]) -> tuple[TrustPolicy, TrustedKeys]:
    """Parse a policy and every key in it; SpecError names the first bad field."""
    policy = parse_trust_policy(body)
    keys = TrustedKeys.from_policy(policy)
    WitnessRequirement.from_ledger(policy.ledger)
    return policy, keys


async def ledger_condition(deps: Deps, policy: TrustPolicy) -> tuple[ConditionValue, int | None]:
    try:
        vcp = await deps.ledger.checkpoint(policy.ledger)
    except LedgerInconsistent as exc:
        return ledger_failed("LedgerInconsistent", str(exc)), None
    except LedgerUnwitnessed as exc:
        return ledger_failed("WitnessQuorumNotMet", str(exc)), None
    except LedgerUnverified as exc:
        return ledger_failed("LedgerUnavailable", str(exc)), None
    return ledger_verified(vcp.size, vcp.checkpoint.origin), vcp.size


async def evaluate(
    deps: Deps, body: Mapping[str, Any]
) -> tuple[dict[str, Any], TrustPolicy | None, TrustedKeys | None]:
    """The status to write for `body`, and the parsed policy when it is valid."""
    meta = body.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    current = body.get("status") or {}
    try:
        policy, keys = parse_checked(body)
    except SpecError as exc:
        status = policy_status(
            current, generation, deps.clock(), validity=invalid(str(exc)), ledger=not_checked()
        )
        return status, None, None
    ledger, size = await ledger_condition(deps, policy)
    status = policy_status(
        current,
        generation,
        deps.clock(),
        validity=valid(
            len(policy.publishers),
            policy.threshold,
            len(policy.ledger.witnesses),
            policy.ledger.witness_quorum,
        ),
        ledger=ledger,
        key_ids=keys.key_ids,
        checkpoint_size=size,
    )
    return status, policy, keys


async def on_policy_event(deps: Deps, body: Mapping[str, Any], *, deleted: bool = False) -> None:
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    generation = int(meta.get("generation") or 0)
    if deleted:
        deps.policies_seen.pop(name, None)
        deps.policies.pop(name, None)
        return
    if name:
        deps.policies[name] = dict(body)  # every event, status writes included
    if not name or deps.policies_seen.get(name) == generation:
        return  # our own status write, or a generation this process already handled
    changed = (body.get("status") or {}).get("observedGeneration") != generation
    status, policy, keys = await evaluate(deps, body)
    await deps.kube.patch_policy_status(name, status)
    deps.policies_seen[name] = generation
    log.info(
        "policy %s generation %d: %s", name, generation,
        "; ".join(f"{c['type']}={c['status']} ({c['reason']})" for c in status["conditions"]),
    )  # fmt: skip
    if policy is not None and keys is not None:
        await reverify_users(deps, policy, keys, retry_pending=changed)


async def refresh_ledger_conditions(deps: Deps) -> None:
    """Periodic: re-check each handled policy's ledger; write status only on a change."""
    for body in await deps.kube.list_policies():
        meta = body.get("metadata") or {}
        current = body.get("status") or {}
        if current.get("observedGeneration") != meta.get("generation"):
            continue  # the event handler owns new generations
        try:
            policy, _ = parse_checked(body)
        except SpecError:
            continue
        ledger, size = await ledger_condition(deps, policy)
        if not ledger_condition_changed(current, ledger):
            continue
        status = policy_status(
            current,
            int(meta.get("generation") or 0),
            deps.clock(),
            validity=valid(
                len(policy.publishers),
                policy.threshold,
                len(policy.ledger.witnesses),
                policy.ledger.witness_quorum,
            ),
            ledger=ledger,
            key_ids=list(current.get("publisherKeyIds") or []),
            checkpoint_size=size,
        )
        await deps.kube.patch_policy_status(str(meta["name"]), status)


# --- the ModelDeployments using a policy -------------------------------------------------------


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


def decided_under(status: Mapping[str, Any], policy: TrustPolicy) -> bool:
    """Whether the serving version was last decided under this very policy generation."""
    return bool(status.get("verifiedPolicy") == policy_ref(policy))


async def reverify_users(
    deps: Deps, policy: TrustPolicy, keys: TrustedKeys, *, retry_pending: bool
) -> None:
    """Re-decide the serving version of every user not yet decided under this generation;
    with `retry_pending`, also reconcile generations that are not serving yet."""
    mds = await users(deps, policy.name)
    gate = asyncio.Semaphore(REVERIFY_CONCURRENCY)

    async def one(md: dict[str, Any]) -> None:
        meta = md.get("metadata") or {}
        status = md.get("status") or {}
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        async with gate:
            try:
                if status.get("servingDigest") and not decided_under(status, policy):
                    await reverify_serving(deps, md, policy, keys)
                if retry_pending and status.get("servingGeneration") != meta.get("generation"):
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


def due(status: Mapping[str, Any], policy: TrustPolicy, now: datetime) -> bool:
    """Whether the periodic re-check of the serving version is due (reverifyInterval)."""
    last = status.get("lastVerifiedTime")
    if not last:
        return True
    try:
        when = datetime.strptime(str(last), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return True
    return (now - when).total_seconds() >= policy.reverify_seconds


async def recheck(deps: Deps, body: Mapping[str, Any]) -> str:
    """The timer: level-triggered re-verification of the serving version.

    Re-decided whenever it was last decided under another policy generation (whatever
    happened to the policy event: a missed event, an undecidable first try, a restart),
    and otherwise every reverifyInterval. Also checks the owned Deployment for drift, so
    a change the Deployment watch cannot see (its label removed) is still corrected.
    """
    status = body.get("status") or {}
    if not status.get("servingDigest"):
        return "nothing serving"
    try:
        md = parse_model_deployment(body)
        policy, keys = await load_policy(deps, md, from_watch=True)
    except SpecError as exc:
        await _flag_unjudged(deps, body, exc)
        return f"policy unavailable: {exc}"
    result = "not due"
    if not decided_under(status, policy) or due(status, policy, deps.clock()):
        result = await reverify_serving(deps, body, policy, keys, periodic=True)
    await check_owned_deployment(deps, body)
    return result


async def _flag_unjudged(deps: Deps, body: Mapping[str, Any], exc: SpecError) -> None:
    """The serving model's policy is gone or invalid: nothing can judge it. It keeps running
    (a policy edit must not take models down by accident) but says so."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    reason = "PolicyNotFound" if "does not exist" in exc.problem else "InvalidPolicy"
    message = f"the serving model cannot be re-verified, left running: {exc}"
    generation = int(status.get("observedGeneration") or 0)
    conditions = list(status.get("conditions") or [])
    flagged = set_condition(
        conditions, VERIFIED, "Unknown", reason, message, generation, deps.clock()
    )
    if (
        not serving_is_current(body)
        or is_revoked(status)
        or _same_condition(conditions, flagged, VERIFIED)
    ):
        return
    await deps.kube.patch_model_deployment_status(
        meta["namespace"], meta["name"], {"conditions": flagged}
    )
    deps.events(body, "Warning", "ReverifyPending", message[:1024])


def serving_is_current(body: Mapping[str, Any]) -> bool:
    """Whether the serving version is the spec's current generation (not an older one kept
    serving while a newer one is refused or pending)."""
    status = body.get("status") or {}
    return bool(status.get("servingGeneration") == (body.get("metadata") or {}).get("generation"))


def _same_condition(before: list[dict[str, Any]], after: list[dict[str, Any]], type_: str) -> bool:
    def pick(conds: list[dict[str, Any]]) -> tuple[Any, ...] | None:
        c = get_condition(conds, type_)
        return None if c is None else (c.get("status"), c.get("reason"), c.get("message"))

    return pick(before) == pick(after)


async def reverify_serving(
    deps: Deps,
    body: Mapping[str, Any],
    policy: TrustPolicy,
    keys: TrustedKeys,
    *,
    periodic: bool = False,
) -> str:
    """Decide the serving version again under `policy` and act on the decision.

    From the ledger and the policy only (decide_serving): the pinned bytes are not fetched
    again, so an unreachable artifact never leaves an untrusted model running."""
    meta = body.get("metadata") or {}
    async with deps.lock(str(meta.get("uid") or "")):
        fresh = await deps.kube.get_model_deployment(meta["namespace"], meta["name"])
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
            return "gone"
        served = serving_model(fresh)
        if served is None:
            return "nothing serving"
        status = fresh.get("status") or {}
        if decided_under(status, policy) and not (periodic and due(status, policy, deps.clock())):
            return "already decided under this policy generation"
        md, verified = served
        ledger = await deps.ledger.evidence(policy.ledger, keys, verified.digest, md.model.name)
        size = status.get("modelSize")
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
            ),
            policy,
            int(size) if isinstance(size, int) and size > 0 else None,
        )
        # Still in the policy's scope, still a runtime the policy allows (hard in every mode).
        decision = refuse_with(
            decision, await boundary_findings(deps.kube, md, policy, deps.build.default_image)
        )
        if ledger.inconsistent:
            deps.metrics.ledger_inconsistent.labels(ledger=policy.ledger.url).set(1)
        return await _act(deps, fresh, policy, decision)


def _detail(policy: TrustPolicy, decision: Decision, *extra: str) -> str:
    """Idempotency detail: a crash and retry of the same decision lands on the same ledger
    entry; a different decision (another revocation, another policy) gets its own."""
    what = hashlib.sha256("\n".join((*decision.reasons, *extra)).encode()).hexdigest()[:8]
    return f"{policy.name}-{policy.generation}-{decision.reason.value}-{what}"


async def _act(deps: Deps, body: Mapping[str, Any], policy: TrustPolicy, decision: Decision) -> str:
    served = serving_model(body)
    assert served is not None
    md, verified = served
    status = body.get("status") or {}
    generation = int(status.get("observedGeneration") or 0)
    now = deps.clock()
    why = f"policy {policy.name!r} generation {policy.generation}"
    conditions = list(status.get("conditions") or [])
    policy_changed = not decided_under(status, policy)
    # Verified describes the spec's current generation; while a newer one is refused (and
    # the previous version keeps serving), its refusal must stay what Verified says.
    current = serving_is_current(body)

    if undecided(decision):
        # No verified ledger answer: leave it running, say so, retry at the next tick. Not
        # decided means not re-verified: lastVerifiedTime and verifiedPolicy stay as they are.
        for f in decision.findings:
            deps.metrics.ledger_errors.labels(kind=f.reason.value).inc()
        message = f"{why}: could not re-verify the serving model, left running: {decision.message}"
        flagged = set_condition(
            conditions, VERIFIED, "Unknown", "ReverifyPending", message, generation, now
        )
        if (
            current
            and not is_revoked(status)
            and not _same_condition(conditions, flagged, VERIFIED)
        ):
            await deps.kube.patch_model_deployment_status(
                md.ref.namespace, md.ref.name, {"conditions": flagged}
            )
            deps.events(body, "Warning", "ReverifyPending", message[:1024])
        return message

    patch: dict[str, Any] = {"verifiedPolicy": policy_ref(policy), "lastVerifiedTime": rfc3339(now)}
    if decision.allowed:
        patch["mode"] = serving_mode(decision)
        message = f"re-verified under {why}: {decision.message}"
        restore = decision.verdict is Verdict.ALLOWED and is_revoked(status)
        if policy_changed or restore:
            await audit_best_effort(
                deps, body, md, action="reverify", decision=decision.verdict.value,
                digest=verified.digest, reasons=decision.reasons or (message,),
                detail=_detail(policy, decision, "restore" if restore else ""), policy=policy,
            )  # fmt: skip
        verified_status: ConditionStatus = (
            "True" if decision.verdict is Verdict.ALLOWED else "False"
        )
        if current:
            conditions = set_condition(
                conditions, VERIFIED, verified_status, decision.reason.value, message,
                generation, now,
            )  # fmt: skip
        changed = not _same_condition(list(status.get("conditions") or []), conditions, VERIFIED)
        patch["conditions"] = conditions
        if restore:
            # The policy trusts it again and the ledger revokes nothing: serve it again.
            conditions = set_condition(
                conditions, REVOKED, "False", "Reverified", message, generation, now
            )
            deployment = await apply_deployment(
                deps, md, builders.build_deployment(md, verified, deps.build)
            )
            r = readiness(deployment)
            patch.update(
                conditions=with_readiness(conditions, r, generation, now),
                revocationAction=None,
                replicas=r.replicas,
                readyReplicas=r.ready_replicas,
            )
        await deps.kube.patch_model_deployment_status(md.ref.namespace, md.ref.name, patch)
        if policy_changed or restore or changed:
            kind = "Normal" if decision.verdict is Verdict.ALLOWED else "Warning"
            deps.events(body, kind, "Reverified", message[:1024])
        return message

    if is_revoked(status):
        await deps.kube.patch_model_deployment_status(md.ref.namespace, md.ref.name, patch)
        return "already revoked"
    action = policy.revocation_action
    if policy_changed:
        message = f"{why} no longer trusts the serving model: {decision.message}"
    else:
        message = f"the serving model is no longer trusted under {why}: {decision.message}"
    deps.metrics.revocations.labels(action=action.value).inc()
    await audit_best_effort(
        deps, body, md, action="revoke", decision=action.value.lower(), digest=verified.digest,
        reasons=(*decision.reasons, message)[-32:], detail=_detail(policy, decision),
        policy=policy,
    )  # fmt: skip
    if action is RevocationAction.SCALE_TO_ZERO:
        await deps.kube.scale_deployment(md.ref.namespace, builders.resource_name(md.ref.name), 0)
    reason = decision.reason.value
    conditions = set_condition(conditions, REVOKED, "True", reason, message, generation, now)
    conditions = set_condition(conditions, VERIFIED, "False", reason, message, generation, now)
    if action is RevocationAction.SCALE_TO_ZERO:
        conditions = with_readiness(conditions, readiness({}, revoked=True), generation, now)
    patch.update(conditions=conditions, revocationAction=action.value)
    await deps.kube.patch_model_deployment_status(md.ref.namespace, md.ref.name, patch)
    event = f"{action.value} {short_digest(verified.digest)}: {message}"
    deps.events(body, "Warning", "Revoked", event[:1024])
    log.warning("%s/%s: %s (%s)", md.ref.namespace, md.ref.name, message, action.value)
    return message
