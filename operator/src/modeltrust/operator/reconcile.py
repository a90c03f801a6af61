"""What the operator does for one ModelDeployment: verify, audit, roll out or refuse.

kopf handlers (handlers.py) only call into here. Order matters for the trust model:
1. gather evidence (artifact bytes and onnxruntime load; ledger registrations and
   revocations, every answer verified) and `decide`;
2. append the audit entry BEFORE acting: a rollout that is not on the ledger never
   happens (the idempotency key makes a retry after a crash land on the same entry);
3. allowed: create/replace the Deployment pinned to the digest, then the Service;
   refused: leave the previously verified Deployment exactly as it is;
4. patch status explicitly and emit an Event.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from modeltrust.chain.entries import AuditEntry
from modeltrust.operator import builders
from modeltrust.operator.artifact import ArtifactChecker
from modeltrust.operator.builders import BuildSettings, VerifiedModel
from modeltrust.operator.conditions import (
    REVOKED,
    VERIFIED,
    ConditionStatus,
    rfc3339,
    set_condition,
)
from modeltrust.operator.decisions import (
    Decision,
    Evidence,
    Verdict,
    decide,
    detect_deployment_drift,
    drift_fingerprint,
    idempotency_key,
)
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Conflict, Kube
from modeltrust.operator.ledger_access import (
    LedgerAccess,
    LedgerEvidence,
    LedgerInconsistent,
    LedgerUnverified,
)
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.pod_provenance import (
    PodProvenance,
    ProvenanceError,
    apply_provenance,
    planned_provenance,
    restore_provenance,
)
from modeltrust.operator.runtime_policy import (
    audit_facts,
    boundary_findings,
    effective_image,
    pod_template_digest,
    refuse_with,
    serving_mode,
)
from modeltrust.operator.status import Readiness, readiness, short_digest, with_readiness
from modeltrust.operator.types import (
    ModelDeployment,
    RevocationAction,
    SpecError,
    TrustPolicy,
    parse_model_deployment,
    parse_trust_policy,
)
from modeltrust.operator.witness import WitnessRequirement

log = logging.getLogger("modeltrust.operator")

MAX_REASON_TEXT = 1000
MAX_REASONS = 32


class Retry(Exception):
    """Try again later (kopf.TemporaryError in the handlers)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Fatal(Exception):
    """Nothing will change until the object changes (kopf.PermanentError)."""


class EventSink(Protocol):
    def __call__(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


@dataclass
class Deps:
    kube: Kube
    ledger: LedgerAccess
    artifacts: ArtifactChecker
    metrics: Metrics
    events: EventSink
    build: BuildSettings = field(default_factory=BuildSettings)
    actor: str = "modeltrust-operator"
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # Namespaces the operator serves (empty: all); policy generations handled by this process.
    namespaces: tuple[str, ...] = ()
    policies_seen: dict[str, int] = field(default_factory=dict)
    # ModelTrustPolicy bodies as the policy watch last delivered them (by name), so the
    # timer's tick reads no policy from the API server.
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The timer looks at each owned Deployment at most this often (monotonic time by uid).
    drift_check_seconds: float = 60.0
    drift_checked: dict[str, float] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        # Change handlers, the timer and the Deployment watcher never act on one object at once.
        return self.locks.setdefault(uid, asyncio.Lock())


def backoff(retry: int, base: float = 10.0, cap: float = 300.0) -> float:
    return float(min(cap, base * 2.0 ** min(retry, 10)))


def _audit_reasons(
    decision_reasons: tuple[str, ...], fallback: str, facts: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The decision's reasons, then `facts` (runtime_policy.audit_facts), which always fit."""
    reasons = (*(decision_reasons or (fallback,))[: MAX_REASONS - len(facts)], *facts)
    return tuple(r[:MAX_REASON_TEXT] for r in reasons)


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
    generation: int | None = None,
) -> AuditEntry:
    return AuditEntry(
        action=action,
        namespace=md.ref.namespace,
        name=md.ref.name,
        uid=md.ref.uid,
        generation=md.ref.generation if generation is None else generation,
        digest=digest,
        decision=decision,
        reasons=reasons,
        actor=actor,
        time=rfc3339(now),
        idempotency_key=key,
    )


async def load_policy(
    deps: Deps, md: ModelDeployment, *, from_watch: bool = False
) -> tuple[TrustPolicy, TrustedKeys]:
    """The policy `md` names, parsed with every key in it. Decisions on a new generation
    read it from the API server; `from_watch` (the timer) takes the copy the policy watch
    delivered, reading it only when the watch has not delivered that policy (yet)."""
    body = deps.policies.get(md.policy) if from_watch else None
    if body is None:
        body = await deps.kube.get_policy(md.policy)
    if body is None:
        raise SpecError("spec.policy", f"ModelTrustPolicy {md.policy!r} does not exist")
    policy = parse_trust_policy(body)
    keys = TrustedKeys.from_policy(policy)
    WitnessRequirement.from_ledger(policy.ledger)  # refuses witness keys that do not parse
    return policy, keys


def _spec_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(dict(body.get("spec") or {}))
    return {k: spec[k] for k in ("model", "replicas", "policy", "runtime") if k in spec}


async def _patch_status(deps: Deps, md: ModelDeployment, status: Mapping[str, Any]) -> None:
    await deps.kube.patch_model_deployment_status(md.ref.namespace, md.ref.name, status)


# --- owned objects ---------------------------------------------------------------------------


def _controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


async def apply_deployment(
    deps: Deps, md: ModelDeployment, desired: dict[str, Any]
) -> dict[str, Any]:
    ns, name = md.ref.namespace, desired["metadata"]["name"]
    for _ in range(5):
        current = await deps.kube.get_deployment(ns, name)
        try:
            if current is None:
                return await deps.kube.create_deployment(ns, desired)
            if not _controlled_by(current, md.ref.uid):
                raise Fatal(
                    f"Deployment {ns}/{name} exists and is not controlled by this ModelDeployment; "
                    "rename or delete it"
                )
            body = copy.deepcopy(desired)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            replaced = await deps.kube.replace_deployment(ns, name, body)
            if replaced is not None:
                return replaced
        except Conflict:
            continue
    raise Retry(f"Deployment {ns}/{name} kept changing while being updated", 5)


async def apply_service(deps: Deps, md: ModelDeployment) -> None:
    desired = builders.build_service(md)
    ns, name = md.ref.namespace, desired["metadata"]["name"]
    current = await deps.kube.get_service(ns, name)
    if current is None:
        with contextlib.suppress(Conflict):  # created concurrently; the next pass patches it
            await deps.kube.create_service(ns, desired)
        return
    if not _controlled_by(current, md.ref.uid):
        raise Fatal(f"Service {ns}/{name} exists and is not controlled by this ModelDeployment")
    if current.get("spec", {}).get("selector") != desired["spec"]["selector"] or [
        (p.get("port"), p.get("targetPort")) for p in current.get("spec", {}).get("ports", [])
    ] != [(p["port"], p["targetPort"]) for p in desired["spec"]["ports"]]:
        await deps.kube.patch_service(ns, name, {"spec": desired["spec"]})


# --- the main reconcile ----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    decision: Decision | None
    audit_index: int | None
    message: str


async def reconcile(deps: Deps, body: Mapping[str, Any], *, retry: int = 0) -> Outcome:
    """Verify the ModelDeployment's current generation and act on the decision."""
    try:
        md = parse_model_deployment(body)
    except SpecError as exc:
        await _refuse_without_ledger(deps, body, "InvalidSpec", str(exc))
        raise Fatal(str(exc)) from exc
    async with deps.lock(md.ref.uid):
        # Another handler may have decided this generation while we waited for the lock:
        # act on the object as it is now (no second decision, no second download).
        fresh = await deps.kube.get_model_deployment(md.ref.namespace, md.ref.name)
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != md.ref.uid:
            return Outcome(None, None, "gone")
        if (fresh.get("metadata") or {}).get("generation") == md.ref.generation:
            body = fresh
        return await _reconcile_locked(deps, body, md, retry)


async def _refuse_without_ledger(
    deps: Deps, body: Mapping[str, Any], reason: str, message: str
) -> None:
    meta = body.get("metadata") or {}
    status = dict(body.get("status") or {})
    now = deps.clock()
    generation = int(meta.get("generation") or 0)
    conditions = set_condition(
        status.get("conditions") or [], VERIFIED, "False", reason, message, generation, now
    )
    deps.metrics.decisions.labels(verdict="refused", reason=reason).inc()
    await deps.kube.patch_model_deployment_status(
        meta["namespace"],
        meta["name"],
        {"observedGeneration": generation, "conditions": conditions},
    )
    deps.events(body, "Warning", reason, message)


async def _reconcile_locked(
    deps: Deps, body: Mapping[str, Any], md: ModelDeployment, retry: int
) -> Outcome:
    status = dict(body.get("status") or {})
    # Already verified and rolled out (e.g. the operator restarted after finishing): only
    # make sure the owned objects are still there; no new decision, no new audit entry.
    if (
        status.get("servingGeneration") == md.ref.generation
        and status.get("lastAuditGeneration") == md.ref.generation
    ):
        await ensure_serving(deps, body, md)
        return Outcome(None, status.get("lastAuditIndex"), "already verified")

    try:
        policy, keys = await load_policy(deps, md)
    except SpecError as exc:
        reason = "PolicyNotFound" if "does not exist" in exc.problem else "InvalidPolicy"
        await _refuse_without_ledger(deps, body, reason, str(exc))
        raise Retry(str(exc), backoff(retry, base=15)) from exc

    # The trust boundary (policy scope, allowed runtime): refused in every mode.
    boundary = await boundary_findings(deps.kube, md, policy, deps.build.default_image)
    started = deps.clock()
    artifact, ledger = await asyncio.gather(
        deps.artifacts.check(
            md.model.uri, md.model.digest, max_size=policy.max_model_size, owner=md.ref.uid
        ),
        deps.ledger.evidence(policy.ledger, keys, md.model.digest, md.model.name),
    )
    evidence = Evidence(
        pinned_digest=md.model.digest,
        model_name=md.model.name,
        model_version=md.model.version,
        artifact=artifact.artifact,
        load=artifact.load,
        registrations=ledger.registrations,
        revocations=ledger.revocations,
        ledger_error=ledger.error,
        ledger_unwitnessed=ledger.unwitnessed,
        ledger_inconsistent=ledger.inconsistent,
    )
    decision = refuse_with(decide(evidence, policy), boundary)
    deps.metrics.decisions.labels(
        verdict=decision.verdict.value, reason=decision.reason.value
    ).inc()
    if ledger.inconsistent:
        deps.metrics.ledger_inconsistent.labels(ledger=policy.ledger.url).set(1)

    # What a rollout would apply, known before the audit entry that records it.
    image = effective_image(md, deps.build.default_image)
    found = None
    if decision.registration_index is not None:
        found = ledger.entries.get(decision.registration_index)
    planned = planned_provenance(md, policy.ledger, found) if found is not None else None
    template_digest: str | None = None
    if decision.allowed:
        assert artifact.artifact.size is not None
        template_digest = pod_template_digest(
            builders.build_pod_template(
                md, _verified_model(md, decision, artifact.artifact.size, ledger, planned),
                deps.build,
            )
        )  # fmt: skip
    action = "rollout" if decision.allowed else "refuse"
    key = idempotency_key(md.ref.uid, md.ref.generation, action, decision.reason.value)
    entry = audit_entry(
        md,
        action=action,
        decision=decision.verdict.value,
        digest=md.model.digest,
        reasons=_audit_reasons(
            decision.reasons,
            f"{decision.reason.value}: {decision.message}",
            audit_facts(image, template_digest, artifact.read_at),
        ),
        key=key,
        actor=deps.actor,
        now=deps.clock(),
    )
    audit_index: int | None = None
    audit_error: str | None = None
    try:
        audit_index = await deps.ledger.append_audit(policy.ledger, entry)
        deps.metrics.audits.labels(result="recorded").inc()
    except (LedgerUnverified, LedgerInconsistent) as exc:
        audit_error = str(exc)
        deps.metrics.audits.labels(result="failed").inc()

    now = deps.clock()
    conditions = list(status.get("conditions") or [])
    new_status: dict[str, Any] = {"observedGeneration": md.ref.generation}
    if audit_index is not None:
        new_status["lastAuditIndex"] = audit_index
        new_status["lastAuditGeneration"] = md.ref.generation

    if decision.allowed and audit_error is not None:
        # Verified, but a rollout that is not on the ledger must not happen: wait for it.
        message = (
            f"verified, but the audit entry could not be recorded ({audit_error}); "
            "rollout waits for the ledger"
        )
        conditions = set_condition(
            conditions, VERIFIED, "False", "AuditPending", message, md.ref.generation, now
        )
        new_status["conditions"] = conditions
        await _patch_status(deps, md, new_status)
        deps.events(body, "Warning", "AuditPending", message)
        raise Retry(message, backoff(retry))

    if not decision.allowed:
        conditions = set_condition(
            conditions,
            VERIFIED,
            "False",
            decision.reason.value,
            decision.message,
            md.ref.generation,
            now,
        )
        current = None
        if status.get("deploymentName"):
            current = await deps.kube.get_deployment(md.ref.namespace, status["deploymentName"])
        r = readiness(current, revoked=scaled_down_for_revocation(status))
        if current is not None and status.get("servingDigest"):
            r = Readiness(
                r.status,
                r.reason,
                f"{r.message}; still serving the previously verified "
                f"{short_digest(status['servingDigest'])}",
                r.replicas,
                r.ready_replicas,
            )
        new_status.update(
            conditions=with_readiness(conditions, r, md.ref.generation, now),
            replicas=r.replicas,
            readyReplicas=r.ready_replicas,
        )
        await _patch_status(deps, md, new_status)
        deps.events(
            body, "Warning", "Refused", f"{decision.reason.value}: {decision.message}"[:1024]
        )
        log.warning(
            "refused %s/%s generation %d: %s",
            md.ref.namespace,
            md.ref.name,
            md.ref.generation,
            decision.message,
        )
        if audit_error is not None:
            deps.events(
                body, "Warning", "AuditPending", f"refusal not yet on the ledger: {audit_error}"
            )
        raise Retry(decision.message, backoff(retry, base=30))

    # Allowed: write the pod's offline proof, then roll out the pinned version.
    assert artifact.artifact.size is not None
    provenance: PodProvenance | None = None
    if found is not None:
        try:
            provenance = await apply_provenance(
                deps.kube, deps.ledger, md, policy.ledger, keys, found
            )
        except ProvenanceError as exc:
            message = f"verified, but {exc}; rollout waits"
            conditions = set_condition(
                conditions, VERIFIED, "False", "ProvenancePending", message, md.ref.generation, now
            )
            await _patch_status(deps, md, {**new_status, "conditions": conditions})
            deps.events(body, "Warning", "ProvenancePending", message[:1024])
            raise Retry(message, backoff(retry)) from exc
    verified = _verified_model(md, decision, artifact.artifact.size, ledger, provenance)
    desired = builders.build_deployment(md, verified, deps.build)
    if pod_template_digest(desired["spec"]["template"]) != template_digest:
        # Never apply a template other than the one the audit entry records.
        raise Retry("the pod template differs from the audited one; deciding again", 5)
    deployment = await apply_deployment(deps, md, desired)
    await apply_service(deps, md)
    # Under Audit a model that failed trust checks is rolled out, but it is not verified:
    # Verified=False/AuditOnly says so; Ready says whether it serves.
    verified_status: ConditionStatus = "True" if decision.verdict is Verdict.ALLOWED else "False"
    conditions = set_condition(
        conditions, VERIFIED, verified_status, decision.reason.value, decision.message,
        md.ref.generation, now,
    )  # fmt: skip
    conditions = set_condition(
        conditions, REVOKED, "False", "NotRevoked", "no revocation applies", md.ref.generation, now
    )
    r = readiness(deployment)
    new_status.update(
        conditions=with_readiness(conditions, r, md.ref.generation, now),
        verifiedDigest=md.model.digest,
        shortDigest=short_digest(md.model.digest),
        servingDigest=md.model.digest,
        servingGeneration=md.ref.generation,
        servingSpec=_spec_snapshot(body),
        modelSize=verified.size,
        signerKeyIds=list(decision.signer_key_ids),
        registrationIndex=decision.registration_index,
        checkpointSize=ledger.checkpoint_size,
        lastVerifiedTime=rfc3339(now),
        replicas=r.replicas,
        readyReplicas=r.ready_replicas,
        selector=builders.selector_string(md),
        deploymentName=builders.resource_name(md.ref.name),
        modelSignature=dict(decision.signature_json),
        provenance=provenance.to_status() if provenance else None,
        revocationAction=None,
        verifiedPolicy=policy_ref(policy),
        runtimeImage=image,
        podTemplateDigest=template_digest,
        mode=serving_mode(decision),
        artifactReadTime=rfc3339(artifact.read_at) if artifact.read_at else None,
    )
    await _patch_status(deps, md, new_status)
    deps.metrics.verify_seconds.observe((deps.clock() - started).total_seconds())
    kind = "Normal" if decision.verdict is Verdict.ALLOWED else "Warning"
    deps.events(
        body, kind, "RolledOut", f"{short_digest(md.model.digest)}: {decision.message}"[:1024]
    )
    return Outcome(decision, audit_index, decision.message)


def _verified_model(
    md: ModelDeployment,
    decision: Decision,
    size: int,
    ledger: LedgerEvidence,
    provenance: PodProvenance | None,
) -> VerifiedModel:
    return VerifiedModel(
        digest=md.model.digest,
        size=size,
        generation=md.ref.generation,
        signer_key_ids=decision.signer_key_ids,
        registration_index=decision.registration_index,
        checkpoint_size=ledger.checkpoint_size,
        fetch_args=provenance.fetch_args if provenance else (),
        provenance_config_map=provenance.config_map if provenance else None,
    )


def policy_ref(policy: TrustPolicy) -> dict[str, Any]:
    """Which policy generation the serving version was last decided under (a policy change
    re-verifies exactly the ModelDeployments whose record differs)."""
    return {"name": policy.name, "uid": policy.uid, "generation": policy.generation}


def _revoked(status: Mapping[str, Any]) -> bool:
    for c in status.get("conditions") or []:
        if c.get("type") == REVOKED:
            return bool(c.get("status") == "True")
    return False


def scaled_down_for_revocation(status: Mapping[str, Any]) -> bool:
    """Revoked and scaled to zero; under KeepAndFlag the model keeps serving (and can be
    Ready), only flagged."""
    return _revoked(status) and (
        status.get("revocationAction") == RevocationAction.SCALE_TO_ZERO.value
    )


# --- serving state: restore, drift, readiness --------------------------------------------------


def serving_model(body: Mapping[str, Any]) -> tuple[ModelDeployment, VerifiedModel] | None:
    """The ModelDeployment as it was when its serving version was verified, from status."""
    status = body.get("status") or {}
    snapshot = status.get("servingSpec")
    digest = status.get("servingDigest")
    if not snapshot or not digest:
        return None
    served = {"metadata": dict(body.get("metadata") or {}), "spec": snapshot}
    served["metadata"]["generation"] = status.get("servingGeneration") or 0
    md = parse_model_deployment(served)
    provenance = PodProvenance.from_status(status)
    verified = VerifiedModel(
        digest=digest,
        size=int(status.get("modelSize") or 0),
        generation=int(status.get("servingGeneration") or 0),
        signer_key_ids=tuple(status.get("signerKeyIds") or ()),
        registration_index=status.get("registrationIndex"),
        checkpoint_size=status.get("checkpointSize"),
        fetch_args=provenance.fetch_args if provenance else (),
        provenance_config_map=provenance.config_map if provenance else None,
    )
    return md, verified


def expected_deployment(deps: Deps, body: Mapping[str, Any]) -> dict[str, Any] | None:
    served = serving_model(body)
    if served is None:
        return None
    md, verified = served
    revoked_scale = scaled_down_for_revocation(body.get("status") or {})
    return builders.build_deployment(
        md, verified, deps.build, replicas=0 if revoked_scale else None
    )


async def ensure_provenance(deps: Deps, body: Mapping[str, Any]) -> None:
    """Re-create the serving version's proof ConfigMap if someone deleted it (its pods
    could not start their init step without it)."""
    served = serving_model(body)
    status = body.get("status") or {}
    provenance = PodProvenance.from_status(status)
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
    except (SpecError, ProvenanceError) as exc:
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
        await apply_deployment(deps, md, expected)
    await apply_service(deps, md)


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
        if expected is None:
            return
        served = serving_model(fresh)
        assert served is not None
        md, verified = served
        status = fresh.get("status") or {}
        deployment = await deps.kube.get_deployment(md.ref.namespace, expected["metadata"]["name"])
        diffs: tuple[str, ...] = ()
        if deployment is None:
            diffs = ("the Deployment was deleted",)
        else:
            diffs = detect_deployment_drift(deployment, expected)
        if diffs:
            deployment_seen = deployment
            deployment = await apply_deployment(deps, md, expected)
            deps.metrics.drift.inc()
            message = "restored the verified Deployment: " + "; ".join(diffs)
            deps.events(fresh, "Warning", "DriftCorrected", message[:1024])
            log.warning("%s/%s: %s", md.ref.namespace, md.ref.name, message)
            await audit_best_effort(
                deps,
                fresh,
                md,
                action="drift",
                decision="corrected",
                digest=verified.digest,
                reasons=diffs,
                # The live object's resourceVersion: a retry of this correction lands on
                # the same entry, the same edit made again later gets its own.
                detail=drift_fingerprint(expected)
                + "-"
                + hashlib.sha256(
                    "|".join((*diffs, _resource_version(deployment_seen))).encode()
                ).hexdigest()[:8],
            )
        r = readiness(deployment, revoked=scaled_down_for_revocation(status))
        now = deps.clock()
        conds = with_readiness(
            status.get("conditions") or [], r, int(status.get("observedGeneration") or 0), now
        )
        if (
            conds != status.get("conditions")
            or r.replicas != status.get("replicas")
            or r.ready_replicas != status.get("readyReplicas")
        ):
            await deps.kube.patch_model_deployment_status(
                md.ref.namespace,
                md.ref.name,
                {"conditions": conds, "replicas": r.replicas, "readyReplicas": r.ready_replicas},
            )


async def check_owned_deployment(deps: Deps, body: Mapping[str, Any]) -> None:
    """The timer's look at the owned Deployment, at most every `drift_check_seconds`: the
    Deployment watch selects by a label anyone who can edit the Deployment can remove, so
    drift must also be found from the ModelDeployment's side."""
    uid = str((body.get("metadata") or {}).get("uid") or "")
    now = time.monotonic()
    if now - deps.drift_checked.get(uid, -math.inf) < deps.drift_check_seconds:
        return
    deps.drift_checked[uid] = now
    served = serving_model(body)
    if served is None:
        return
    md, _ = served
    name = builders.resource_name(md.ref.name)
    try:
        await on_deployment_change(deps, body)
    except (Retry, Fatal, Conflict) as exc:
        deps.events(body, "Warning", "DriftNotCorrected", f"Deployment {name}: {exc}"[:1024])
        log.warning("%s/%s: drift not corrected: %s", md.ref.namespace, md.ref.name, exc)


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
        policy_body = await deps.kube.get_policy(md.policy)
        if policy_body is None:
            deps.events(
                body, "Warning", "AuditFailed",
                f"{action} not recorded: policy {md.policy!r} is gone",
            )  # fmt: skip
            return None
        policy = parse_trust_policy(policy_body)
    key = idempotency_key(md.ref.uid, md.ref.generation, action, detail)
    entry = audit_entry(
        md, action=action, decision=decision, digest=digest,
        reasons=_audit_reasons(reasons, action), key=key, actor=deps.actor, now=deps.clock(),
    )  # fmt: skip
    try:
        index = await deps.ledger.append_audit(policy.ledger, entry)
    except (LedgerUnverified, LedgerInconsistent) as exc:
        deps.metrics.audits.labels(result="failed").inc()
        deps.events(
            body, "Warning", "AuditFailed", f"{action} not recorded on the ledger: {exc}"[:1024]
        )
        return None
    deps.metrics.audits.labels(result="recorded").inc()
    await deps.kube.patch_model_deployment_status(
        md.ref.namespace, md.ref.name, {"lastAuditIndex": index}
    )
    return index


async def audit_deletion(deps: Deps, body: Mapping[str, Any]) -> int | None:
    md = parse_model_deployment(body)
    status = body.get("status") or {}
    digest = status.get("servingDigest") or md.model.digest
    policy_body = await deps.kube.get_policy(md.policy)
    if policy_body is None:
        deps.events(
            body, "Warning", "AuditFailed", f"deletion not recorded: policy {md.policy!r} is gone"
        )
        return None
    policy = parse_trust_policy(policy_body)
    entry = audit_entry(
        md, action="delete", decision="deleted", digest=digest,
        reasons=(f"ModelDeployment deleted while serving {short_digest(digest)}",),
        key=idempotency_key(md.ref.uid, md.ref.generation, "delete"),
        actor=deps.actor, now=deps.clock(),
    )  # fmt: skip
    index = await deps.ledger.append_audit(policy.ledger, entry)
    deps.metrics.audits.labels(result="recorded").inc()
    return index
