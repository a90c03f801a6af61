"""What the operator does when a ModelTrustPolicy appears or changes.

1. Evaluate it (pure policy_status + one verified checkpoint read) and write its status:
   observedGeneration, Valid, LedgerReachable, publisher key ids.
2. If its spec changed since the operator last handled it (status.observedGeneration !=
   metadata.generation), re-verify every ModelDeployment that uses it:
   - the serving version is decided again under the new policy. Still trusted: Verified is
     refreshed (and a model the policy had stopped trusting is restored). No longer trusted
     (a publisher removed, a threshold raised, a pattern narrowed): handled like a
     revocation, per revocationAction (ScaleToZero or KeepAndFlag), and audited. When the
     decision cannot be made (ledger down, artifact unreachable) the running model is left
     alone, as for any outage;
   - a generation that is not serving yet (refused, or waiting for this policy) is
     reconciled now instead of at its next back-off retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from modeltrust.operator import builders
from modeltrust.operator.conditions import REVOKED, VERIFIED, ConditionStatus, set_condition
from modeltrust.operator.decisions import Decision, Evidence, Reason, Verdict, decide
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
    policy_ref,
    reconcile,
    serving_model,
)
from modeltrust.operator.status import is_revoked, readiness, short_digest, with_readiness
from modeltrust.operator.types import (
    DEFAULT_POLICY,
    RevocationAction,
    SpecError,
    TrustPolicy,
    parse_trust_policy,
)
from modeltrust.operator.witness import WitnessRequirement

log = logging.getLogger("modeltrust.operator.policy")

# Findings that mean "cannot decide now", not "no longer trusted": a running model is never
# taken down by an outage (DESIGN section 3).
UNDECIDABLE = frozenset(
    {
        Reason.FETCH_FAILED,
        Reason.LEDGER_UNAVAILABLE,
        Reason.LEDGER_INCONSISTENT,
        Reason.WITNESS_QUORUM_NOT_MET,
    }
)
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
        return
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


async def reverify_serving(
    deps: Deps, body: Mapping[str, Any], policy: TrustPolicy, keys: TrustedKeys
) -> str:
    """Decide the serving version again under `policy` and act on the decision."""
    meta = body.get("metadata") or {}
    async with deps.lock(str(meta.get("uid") or "")):
        fresh = await deps.kube.get_model_deployment(meta["namespace"], meta["name"])
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
            return "gone"
        served = serving_model(fresh)
        if served is None:
            return "nothing serving"
        if decided_under(fresh.get("status") or {}, policy):
            return "already decided under this policy generation"
        md, verified = served
        artifact, ledger = await asyncio.gather(
            deps.artifacts.check(md.model.uri, verified.digest, max_size=policy.max_model_size),
            deps.ledger.evidence(policy.ledger, keys, verified.digest, md.model.name),
        )
        decision = decide(
            Evidence(
                pinned_digest=verified.digest,
                model_name=md.model.name,
                model_version=md.model.version,
                artifact=artifact.artifact,
                load=artifact.load,
                registrations=ledger.registrations,
                revocations=ledger.revocations,
                ledger_error=ledger.error,
                ledger_unwitnessed=ledger.unwitnessed,
                ledger_inconsistent=ledger.inconsistent,
            ),
            policy,
        )
        return await _act(deps, fresh, policy, decision)


async def _act(deps: Deps, body: Mapping[str, Any], policy: TrustPolicy, decision: Decision) -> str:
    served = serving_model(body)
    assert served is not None
    md, verified = served
    status = body.get("status") or {}
    generation = int(status.get("observedGeneration") or 0)
    now = deps.clock()
    why = f"policy {policy.name!r} generation {policy.generation}"
    conditions = list(status.get("conditions") or [])
    detail = f"{policy.name}-{policy.generation}-{decision.reason.value}"
    if not decision.allowed and any(f.reason in UNDECIDABLE for f in decision.findings):
        message = f"{why}: could not re-verify the serving model, left running: {decision.message}"
        deps.events(body, "Warning", "ReverifyPending", message[:1024])
        return message

    if decision.allowed:
        message = f"re-verified under {why}: {decision.message}"
        await audit_best_effort(
            deps, body, md, action="reverify", decision=decision.verdict.value,
            digest=verified.digest, reasons=decision.reasons or (message,), detail=detail,
        )  # fmt: skip
        verified_status: ConditionStatus = (
            "True" if decision.verdict is Verdict.ALLOWED else "False"
        )
        conditions = set_condition(
            conditions, VERIFIED, verified_status, decision.reason.value, message, generation, now
        )
        patch: dict[str, Any] = {"conditions": conditions, "verifiedPolicy": policy_ref(policy)}
        if decision.verdict is Verdict.ALLOWED and is_revoked(status):
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
        kind = "Normal" if decision.verdict is Verdict.ALLOWED else "Warning"
        deps.events(body, kind, "Reverified", message[:1024])
        return message

    if is_revoked(status):
        await deps.kube.patch_model_deployment_status(
            md.ref.namespace, md.ref.name, {"verifiedPolicy": policy_ref(policy)}
        )
        return "already revoked"
    action = policy.revocation_action
    message = f"{why} no longer trusts the serving model: {decision.message}"
    deps.metrics.revocations.labels(action=action.value).inc()
    await audit_best_effort(
        deps, body, md, action="revoke", decision=action.value.lower(), digest=verified.digest,
        reasons=(*decision.reasons, message)[-32:], detail=detail,
    )  # fmt: skip
    if action is RevocationAction.SCALE_TO_ZERO:
        await deps.kube.scale_deployment(md.ref.namespace, builders.resource_name(md.ref.name), 0)
    reason = decision.reason.value
    conditions = set_condition(conditions, REVOKED, "True", reason, message, generation, now)
    conditions = set_condition(conditions, VERIFIED, "False", reason, message, generation, now)
    if action is RevocationAction.SCALE_TO_ZERO:
        conditions = with_readiness(conditions, readiness({}, revoked=True), generation, now)
    await deps.kube.patch_model_deployment_status(
        md.ref.namespace,
        md.ref.name,
        {
            "conditions": conditions,
            "revocationAction": action.value,
            "verifiedPolicy": policy_ref(policy),
        },
    )
    event = f"{action.value} {short_digest(verified.digest)}: {message}"
    deps.events(body, "Warning", "Revoked", event[:1024])
    log.warning("%s/%s: %s (%s)", md.ref.namespace, md.ref.name, message, action.value)
    return message
