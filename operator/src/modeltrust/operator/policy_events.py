"""A ModelTrustPolicy appeared or changed: its status, then its users re-verified.

1. Evaluate the policy (pure policy_status + one verified checkpoint read) and write its
   status: observedGeneration, Valid, LedgerReachable, publisher key ids.
2. Re-verify every ModelDeployment using it (reverify.reverify_users).
Periodically (handlers' background task, not a kopf timer: a timer would put a finalizer
on every policy and need patch rights on them) each handled policy's ledger is read again
and LedgerReachable rewritten when it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from modeltrust.operator.deps import Deps
from modeltrust.operator.errors import (
    LedgerInconsistent,
    LedgerTrustMissing,
    LedgerUnverified,
    LedgerUnwitnessed,
    SpecError,
)
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.policy_status import (
    ConditionValue,
    invalid,
    ledger_condition_changed,
    ledger_failed,
    ledger_read_from_mirror,
    ledger_verified,
    not_checked,
    policy_status,
    valid,
)
from modeltrust.operator.reverify import reverify_users
from modeltrust.operator.types import TrustPolicy, parse_trust_policy
from modeltrust.operator.witness import WitnessRequirement

log = logging.getLogger("modeltrust.operator.policy")


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
    except LedgerTrustMissing as exc:
        return ledger_failed("TrustRecordMissing", str(exc)), None
    except LedgerUnverified as exc:
        return ledger_failed("LedgerUnavailable", str(exc)), None
    answered_by = deps.ledger.answered_by(policy.ledger)
    if answered_by != policy.ledger.url:
        return ledger_read_from_mirror(vcp.size, vcp.checkpoint.origin, answered_by), vcp.size
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
