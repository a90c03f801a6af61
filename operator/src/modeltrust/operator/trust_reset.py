"""Trust in a ledger is never reset silently (docs/operator.md, "Trust reset").

- First use: when no trusted-checkpoint record exists for a ledger, `first_use_refusal`
  decides whether the operator may trust the ledger as it is now. Not while a
  ModelDeployment verified against that ledger is serving (a deleted record plus a
  rolled-back ledger would otherwise be believed without a word): new rollouts are refused
  with TrustRecordMissing until a cluster operator resets trust explicitly. A brand-new
  install (nothing serving) may trust on first use; ledger_access logs that at WARNING and
  has it audited.
- Reset: the annotation `modeltrust.dev/trust-reset` on a ModelTrustPolicy names the
  checkpoint to trust, `{"size": N, "rootHash": "<base64>", "reason": "..."}`. The operator
  proves the ledger's current checkpoint contains that tree, makes it the trusted
  checkpoint (even when older than what was trusted), forgets the inconsistency judgement,
  logs at ERROR, posts a Warning Event, counts it, audits it (the audit outbox), records
  it in the policy's status.trustReset, and re-verifies every serving model under that
  ledger: its rollout entry is looked up on the ledger now trusted by content (uid,
  generation, digest, the idempotency key), status.lastAuditIndex is corrected or cleared,
  and status.verifiedPolicy is cleared so that the timer decides it again at once.
  Each annotation value is handled once (its hash is kept in status.trustReset.id).

Pure parts (parsing, matching) are separate from the thin I/O below them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import AuditEntry
from modeltrust.chain.trust_state import TrustedCheckpoint
from modeltrust.operator.conditions import rfc3339
from modeltrust.operator.errors import Fatal, LedgerInconsistent, LedgerUnverified, Retry, SpecError
from modeltrust.operator.kube import Kube
from modeltrust.operator.trust_store import config_map_name
from modeltrust.operator.types import (
    DEFAULT_POLICY,
    CheckpointRef,
    LedgerSpec,
    parse_checkpoint_ref,
    parse_trust_policy,
)

if TYPE_CHECKING:
    from modeltrust.operator.deps import Deps

log = logging.getLogger("modeltrust.operator.trust")

RESET_ANNOTATION = "modeltrust.dev/trust-reset"
MAX_REASON = 512
MAX_NAMED = 5


# --- pure ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResetRequest:
    id: str
    checkpoint: CheckpointRef
    reason: str


def reset_id(value: str) -> str:
    return hashlib.sha256(value.strip().encode()).hexdigest()[:16]


def parse_reset(value: str) -> ResetRequest:
    """The annotation's value: a JSON object {size, rootHash, reason?}; SpecError if not."""
    where = f"metadata.annotations[{RESET_ANNOTATION}]"
    try:
        doc = json.loads(value)
    except ValueError:
        raise SpecError(where, 'must be JSON: {"size": N, "rootHash": "<base64>"}') from None
    if not isinstance(doc, Mapping):
        raise SpecError(where, "must be a JSON object")
    unknown = set(doc) - {"size", "rootHash", "reason"}
    if unknown:
        raise SpecError(where, f"has unknown fields {sorted(unknown)}")
    ref = parse_checkpoint_ref(doc, where)
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise SpecError(f"{where}.reason", f"must be a string of at most {MAX_REASON} characters")
    return ResetRequest(reset_id(value), ref, reason)


def pending_reset(body: Mapping[str, Any]) -> str | None:
    """The policy's reset annotation when it has not been handled yet (by its id)."""
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(RESET_ANNOTATION)
    if not value:
        return None
    done = ((body.get("status") or {}).get("trustReset") or {}).get("id")
    return None if done == reset_id(str(value)) else str(value)


def policy_verifier_key(body: Mapping[str, Any]) -> str:
    return str(((body.get("spec") or {}).get("ledger") or {}).get("verifierKey") or "")


def serving_under(
    policies: Iterable[Mapping[str, Any]], mds: Iterable[Mapping[str, Any]], verifier_key: str
) -> list[str]:
    """namespace/name of every ModelDeployment serving a version verified under a policy
    whose ledger has `verifier_key` (status.servingDigest set, not being deleted)."""
    names = {
        str((p.get("metadata") or {}).get("name"))
        for p in policies
        if policy_verifier_key(p) == verifier_key
    }
    found = []
    for md in mds:
        meta = md.get("metadata") or {}
        policy = (md.get("spec") or {}).get("policy") or DEFAULT_POLICY
        if (
            policy in names
            and (md.get("status") or {}).get("servingDigest")
            and not meta.get("deletionTimestamp")
        ):
            found.append(f"{meta.get('namespace')}/{meta.get('name')}")
    return sorted(found)


def refusal_message(ledger: LedgerSpec, namespace: str, serving: Sequence[str]) -> str:
    named = ", ".join(serving[:MAX_NAMED]) + (
        f" and {len(serving) - MAX_NAMED} more" if len(serving) > MAX_NAMED else ""
    )
    return (
        f"no trusted checkpoint is recorded for ledger {ledger.url} (ConfigMap "
        f"{namespace}/{config_map_name(ledger.verifier_key)} or its witnessed variant is "
        f"missing) while {len(serving)} ModelDeployment(s) verified against it are serving "
        f"({named}); trusting the ledger as it is now would be a silent trust reset. "
        "Investigate, then reset trust explicitly: kubectl annotate modeltrustpolicy POLICY "
        f'{RESET_ANNOTATION}=\'{{"size":N,"rootHash":"BASE64","reason":"..."}}\' '
        "--overwrite (docs/operator.md, Trust reset)"
    )


def find_rollout(
    entries: Iterable[VerifiedEntry], uid: str, generation: int, digest: str
) -> int | None:
    """The ledger index of the rollout of (uid, generation, digest), found by content and
    idempotency key (decisions.idempotency_key: uid/generation/rollout/...), never by a
    remembered index; the first one when several match."""
    prefix = f"{uid}/{generation}/rollout"
    for ve in sorted(entries, key=lambda v: v.index):
        e = ve.entry
        if (
            isinstance(e, AuditEntry)
            and e.action == "rollout"
            and (e.uid, e.generation, e.digest) == (uid, generation, digest)
            and (e.idempotency_key == prefix or e.idempotency_key.startswith(prefix + "/"))
        ):
            return ve.index
    return None


def trust_audit_entry(
    ledger: LedgerSpec,
    kind: str,
    checkpoint: TrustedCheckpoint,
    reasons: tuple[str, ...],
    *,
    namespace: str,
    actor: str,
    now: datetime,
) -> AuditEntry:
    """The audit entry of a trust event (`trust-on-first-use`, `trust-reset`) about the
    trusted-checkpoint record of `ledger`: the object is that record (its ConfigMap name,
    in the operator's namespace), the digest is the trusted tree's root."""
    record = config_map_name(ledger.verifier_key)
    root = checkpoint.root_hash.hex()
    detail = (
        f"{checkpoint.size}-{root[:16]}-"
        + hashlib.sha256("\n".join(reasons).encode()).hexdigest()[:8]
    )
    return AuditEntry(
        action=kind,
        namespace=namespace,
        name=record,
        uid=record,
        generation=checkpoint.size,
        digest="sha256:" + root,
        decision="trusted",
        reasons=(
            f"trusting ledger {ledger.url} (origin {checkpoint.origin}) at checkpoint size "
            f"{checkpoint.size}, root {root}",
            *(r[:1000] for r in reasons[:8]),
        ),
        actor=actor,
        time=rfc3339(now),
        idempotency_key=f"trust/{record}/{kind}/{detail}",
    )


def reset_status(
    req: ResetRequest | None,
    value: str,
    result: str,
    message: str,
    now: datetime,
    trusted_size: int | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "id": reset_id(value),
        "result": result,
        "message": message[:4096],
        "time": rfc3339(now),
    }
    if req is not None:
        status["size"] = req.checkpoint.size
        status["rootHash"] = base64.b64encode(req.checkpoint.root_hash).decode()
    if trusted_size is not None:
        status["trustedSize"] = trusted_size
    return status


# --- I/O -----------------------------------------------------------------------------------


async def first_use_refusal(
    kube: Kube, namespaces: Sequence[str], operator_namespace: str, ledger: LedgerSpec
) -> str | None:
    """None when this ledger may be trusted on first use (nothing verified against it is
    serving), else the refusal (TrustRecordMissing)."""
    policies = await kube.list_policies()
    mds: list[dict[str, Any]] = []
    scopes: list[str | None] = [*namespaces] or [None]
    for ns in scopes:
        mds.extend(await kube.list_model_deployments(ns))
    serving = serving_under(policies, mds, ledger.verifier_key)
    if not serving:
        return None
    return refusal_message(ledger, operator_namespace, serving)


async def handle_policy(deps: Deps, body: Mapping[str, Any]) -> None:
    """Apply the policy's trust-reset annotation if it has not been handled yet."""
    value = pending_reset(body)
    if value is None:
        return
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    rid = reset_id(value)
    handled = deps.trust_resets_handled
    if f"{name}/{rid}" in handled:
        return  # our own status write has not come back through the watch yet
    now = deps.clock()
    req: ResetRequest | None = None
    try:
        req = parse_reset(value)
        policy = parse_trust_policy(body)
        reasons = (
            f"explicit trust reset from ModelTrustPolicy {name} annotation {RESET_ANNOTATION}",
            f"named checkpoint: {req.checkpoint.describe()}",
            *((f"reason: {req.reason}",) if req.reason else ()),
        )
        vcp, before = await deps.ledger.reset_trust(policy.ledger, req.checkpoint, reasons)
    except SpecError as exc:
        await _refused(deps, body, req, value, f"trust reset refused: {exc}", retry=False)
        return
    except LedgerInconsistent as exc:
        await _refused(
            deps, body, req, value,
            f"trust reset refused: the ledger does not contain the named checkpoint: {exc}",
            retry=False,
        )  # fmt: skip
        return
    except LedgerUnverified as exc:
        # Unreachable or unwitnessed: nothing is known; tried again at the next round.
        await _refused(deps, body, req, value, f"trust reset pending: {exc}", retry=True)
        return
    handled.add(f"{name}/{rid}")
    before_text = "nothing" if before is None else f"size {before.size}"
    message = (
        f"TRUST RESET by policy {name}: ledger {policy.ledger.url} is trusted at its checkpoint "
        f"of size {vcp.size} (proven to contain {req.checkpoint.describe()}); trusted before: "
        f"{before_text}" + (f"; reason: {req.reason}" if req.reason else "")
    )
    log.error("%s", message)
    deps.metrics.trust_resets.labels(ledger=policy.ledger.url).inc()
    deps.metrics.ledger_inconsistent.labels(ledger=policy.ledger.url).set(0)
    deps.events(body, "Warning", "TrustReset", message[:1024])
    await deps.kube.patch_policy_status(
        name,
        {"trustReset": reset_status(req, value, "Applied", message, now, trusted_size=vcp.size)},
    )
    await reverify_after_reset(deps, policy.ledger)


async def _refused(
    deps: Deps,
    body: Mapping[str, Any],
    req: ResetRequest | None,
    value: str,
    message: str,
    *,
    retry: bool,
) -> None:
    name = str((body.get("metadata") or {}).get("name") or "")
    log.error("policy %s: %s", name, message)
    deps.events(body, "Warning", "TrustResetRefused", message[:1024])
    result = "Pending" if retry else "Refused"
    status = reset_status(req, value, result, message, deps.clock())
    if retry:
        status.pop("id")  # not handled: the next round tries again
        if ((body.get("status") or {}).get("trustReset") or {}).get("result") == "Pending":
            return  # already said so; a status write per try would wake the watch again
    else:
        deps.trust_resets_handled.add(f"{name}/{status['id']}")
    await deps.kube.patch_policy_status(name, {"trustReset": status})


async def reverify_after_reset(deps: Deps, ledger: LedgerSpec) -> None:
    """Every model serving under a policy on this ledger: find its rollout on the ledger now
    trusted by content and correct (or clear) lastAuditIndex; then have it re-verified by
    the timer at once (found: lastVerifiedTime cleared, decided again as a periodic check;
    not found: verifiedPolicy cleared too, so the re-verification is audited as `reverify`
    and lastAuditIndex points at it). Generations not serving yet are reconciled now."""
    from modeltrust.operator.reconcile import reconcile

    policies = [
        p for p in await deps.kube.list_policies() if policy_verifier_key(p) == ledger.verifier_key
    ]
    names = {str((p.get("metadata") or {}).get("name")) for p in policies}
    mds: list[dict[str, Any]] = []
    scopes: list[str | None] = [*deps.namespaces] or [None]
    for ns in scopes:
        mds.extend(await deps.kube.list_model_deployments(ns))
    serving = set(serving_under(policies, mds, ledger.verifier_key))
    for md in mds:
        meta = md.get("metadata") or {}
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        status = md.get("status") or {}
        if where not in serving:
            if ((md.get("spec") or {}).get("policy") or DEFAULT_POLICY) in names and not meta.get(
                "deletionTimestamp"
            ):
                try:
                    await reconcile(deps, md)
                except (Retry, Fatal) as exc:
                    log.info("%s after the trust reset: %s", where, exc)
            continue
        uid = str(meta.get("uid") or "")
        try:
            entries = await deps.ledger.audit_trail(ledger, uid)
        except (LedgerUnverified, LedgerInconsistent) as exc:
            log.warning("%s: audit trail not read after the trust reset: %s", where, exc)
            entries = []
        index = find_rollout(
            entries, uid, int(status.get("servingGeneration") or 0), str(status["servingDigest"])
        )
        patch: dict[str, Any] = {"lastAuditIndex": index, "lastVerifiedTime": None}
        if index is None:
            patch["verifiedPolicy"] = None
            message = (
                "after the trust reset, the serving version's rollout is not on the ledger now "
                "trusted: status.lastAuditIndex cleared; re-verifying (audited)"
            )
            deps.events(md, "Warning", "TrustResetReverify", message)
            log.warning("%s: %s", where, message)
        else:
            log.info("%s: rollout found at ledger index %d after the trust reset", where, index)
        await deps.kube.patch_model_deployment_status(
            str(meta["namespace"]), str(meta["name"]), patch
        )
