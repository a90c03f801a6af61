"""What the operator does for one ModelDeployment generation: verify, audit, roll out or refuse.

kopf handlers (handlers.py) only call into here. Order matters for the trust model
(docs/architecture.md):
1. gather evidence (artifact bytes and onnxruntime load; ledger registrations and
   revocations, every answer verified) and `decide`;
2. append the audit entry BEFORE acting: a rollout that is not on the ledger never
   happens (the idempotency key makes a retry after a crash land on the same entry);
3. allowed: write the pod's offline proof, create/replace the Deployment pinned to the
   digest, then the Service; refused: leave the previously verified Deployment as it is;
4. apply the plan (plans.py): the status patch, the events, and the retry if any.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from modeltrust.operator import builders
from modeltrust.operator.artifact import ArtifactEvidence
from modeltrust.operator.audit import KEPT, record_audit
from modeltrust.operator.builders import VerifiedModel
from modeltrust.operator.conditions import rfc3339
from modeltrust.operator.decisions import ArtifactResult, Decision, Evidence, decide
from modeltrust.operator.deps import Deps, load_policy
from modeltrust.operator.errors import (
    Fatal,
    LedgerInconsistent,
    LedgerUnverified,
    ProvenancePending,
    Retry,
    SpecError,
    condition_reason,
)
from modeltrust.operator.ledger_access import LedgerEvidence
from modeltrust.operator.owned import apply_deployment, apply_service, ensure_serving
from modeltrust.operator.plans import (
    Plan,
    plan_audit,
    plan_policy_unusable,
    plan_refusal,
    plan_rollout,
    plan_unusable,
    plan_waiting,
)
from modeltrust.operator.pod_provenance import (
    PodProvenance,
    apply_provenance,
    planned_provenance,
)
from modeltrust.operator.runtime_policy import (
    audit_facts,
    boundary_findings,
    effective_image,
    pod_template_digest,
    refuse_with,
)
from modeltrust.operator.source_credentials import ChosenCredentials, read_credentials
from modeltrust.operator.status import controlled_uid
from modeltrust.operator.status_record import MDStatus
from modeltrust.operator.types import ModelDeployment, parse_model_deployment
from modeltrust.serving.credentials import CredentialsError, SourceCredentials

log = logging.getLogger("modeltrust.operator")


@dataclass(frozen=True)
class Outcome:
    decision: Decision | None
    audit_index: int | None
    message: str


async def apply_plan(deps: Deps, body: Mapping[str, Any], plan: Plan) -> None:
    """Write the plan's status patch, post its events, raise its Retry/Fatal."""
    meta = body.get("metadata") or {}
    if plan.status is not None:
        await deps.kube.patch_model_deployment_status(
            meta["namespace"], meta["name"], plan.status.to_status()
        )
    for event in plan.events:
        deps.events(body, event.type, event.reason, event.message)
    if plan.raise_after is not None:
        raise plan.raise_after


async def apply_and_stop(deps: Deps, body: Mapping[str, Any], plan: Plan) -> NoReturn:
    """Apply a plan that ends this pass (a refusal, a wait): it raises Retry or Fatal."""
    assert plan.raise_after is not None
    await apply_plan(deps, body, plan)
    raise AssertionError("unreachable")


async def reconcile(deps: Deps, body: Mapping[str, Any], *, retry: int = 0) -> Outcome:
    """Verify the ModelDeployment's current generation and act on the decision."""
    try:
        md = parse_model_deployment(body)
    except SpecError as exc:
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        record = MDStatus.from_status(body.get("status"))
        deps.metrics.decisions.labels(verdict="refused", reason="InvalidSpec").inc()
        plan = plan_unusable(record, generation, "InvalidSpec", str(exc), deps.clock())
        await apply_plan(deps, body, plan)
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


def _evidence(md: ModelDeployment, artifact: ArtifactEvidence, ledger: LedgerEvidence) -> Evidence:
    return Evidence(
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
        ledger_trust_missing=ledger.trust_missing,
    )


async def check_artifact(
    deps: Deps, md: ModelDeployment, *, max_size: int
) -> tuple[ArtifactEvidence, ChosenCredentials | None]:
    """Fetch and load-check the artifact with the credentials the ModelDeployment names
    (or, when it names none, those its pods' ServiceAccount lists for the model's host)."""
    try:
        chosen = await read_credentials(
            deps.kube,
            md,
            default_service_account=deps.build.service_account_name,
            look_up_service_account=deps.read_source_credentials,
        )
    except CredentialsError as exc:
        return ArtifactEvidence(ArtifactResult(error=str(exc)), None), None
    credentials: SourceCredentials | None = chosen.credentials if chosen is not None else None
    evidence = await deps.artifacts.check(
        md.model.uri,
        md.model.digest,
        max_size=max_size,
        owner=md.ref.uid,
        credentials=credentials,
        s3=md.model.s3,
    )
    return evidence, chosen


def pinned_to_source(md: ModelDeployment, artifact: ArtifactEvidence) -> ModelDeployment:
    """`md` with its model URI replaced by the one the check read by digest, if different."""
    pinned = artifact.source_uri
    if pinned is None or pinned == md.model.uri:
        return md
    return dataclasses.replace(md, model=dataclasses.replace(md.model, uri=pinned))


def _with_pinned_uri(body: Mapping[str, Any], md: ModelDeployment) -> Mapping[str, Any]:
    """The object with spec.model.uri as verified, so the serving snapshot names it."""
    model = (body.get("spec") or {}).get("model") or {}
    if model.get("uri") == md.model.uri:
        return body
    copied = copy.deepcopy(dict(body))
    copied["spec"]["model"]["uri"] = md.model.uri
    return copied


def _spec_snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(dict(body.get("spec") or {}))
    return {k: spec[k] for k in ("model", "replicas", "policy", "runtime") if k in spec}


async def _reconcile_locked(
    deps: Deps, body: Mapping[str, Any], md: ModelDeployment, retry: int
) -> Outcome:
    record = MDStatus.from_status(body.get("status"))
    generation = md.ref.generation
    # Already verified and rolled out (e.g. the operator restarted after finishing): only
    # make sure the owned objects are still there; no new decision, no new audit entry.
    if record.serving_generation == generation and record.last_audit_generation == generation:
        await ensure_serving(deps, body, md)
        return Outcome(None, record.last_audit_index, "already verified")

    try:
        policy, keys = await load_policy(deps, md)
    except SpecError as exc:
        deps.metrics.decisions.labels(verdict="refused", reason=condition_reason(exc)).inc()
        delay = deps.backoff.delay(deps.backoff.policy, retry)
        plan = plan_policy_unusable(record, md, exc, deps.clock(), delay)
        await apply_and_stop(deps, body, plan)

    # 1. Evidence and decision. The trust boundary (policy scope, allowed runtime) is
    # refused in every mode, ahead of anything about the artifact.
    boundary = await boundary_findings(deps.kube, md, policy, deps.build.default_image)
    started = deps.clock()
    (artifact, chosen), ledger = await asyncio.gather(
        check_artifact(deps, md, max_size=policy.max_model_size),
        deps.ledger.evidence(policy.ledger, keys, md.model.digest, md.model.name),
    )
    # The pod fetches what was checked: an oci:// tag is replaced by the manifest digest.
    md = pinned_to_source(md, artifact)
    credential_hosts = chosen.credentials.hosts if chosen is not None else ()
    # Kept in status only when the ServiceAccount named it: the pods mount the Secret that
    # was verified, even if the ServiceAccount's list changes later.
    credential_secret = None
    if chosen is not None and chosen.from_service_account:
        credential_secret = chosen.secret
    decision = refuse_with(decide(_evidence(md, artifact, ledger), policy), boundary)
    deps.metrics.decisions.labels(
        verdict=decision.verdict.value, reason=decision.reason.value
    ).inc()
    if ledger.inconsistent:
        deps.metrics.ledger_inconsistent.labels(ledger=policy.ledger.url).set(1)

    # What a rollout would apply, known before the audit entry that records it.
    image = effective_image(md, deps.build.default_image)
    index = decision.registration_index
    found = ledger.entries.get(index) if index is not None else None
    planned = planned_provenance(md, policy.ledger, found) if found is not None else None
    template_digest: str | None = None
    if decision.allowed:
        assert artifact.artifact.size is not None
        template_digest = pod_template_digest(
            builders.build_pod_template(
                md,
                _verified_model(
                    md, decision, artifact.artifact.size, ledger, planned, credential_hosts,
                    credential_secret,
                ),
                deps.build,
            )
        )  # fmt: skip

    # 2. The audit entry, before anything is acted on.
    audit_index: int | None = None
    audit_error: str | None = None
    try:
        facts = audit_facts(image, template_digest, artifact.read_at)
        entry = plan_audit(md, decision, deps.actor, deps.clock(), facts)
        # A refusal that cannot be recorded now is kept (audit outbox); a rollout waits.
        audit_index = await record_audit(deps, policy.ledger, entry, keep=not decision.allowed)
        if audit_index is None:
            audit_error = KEPT
            deps.metrics.audits.labels(result="kept").inc()
        else:
            deps.metrics.audits.labels(result="recorded").inc()
    except (LedgerUnverified, LedgerInconsistent) as exc:
        audit_error = str(exc)
        deps.metrics.audits.labels(result="failed").inc()

    # 3. Act on it.
    now = deps.clock()
    if decision.allowed and audit_error is not None:
        # Verified, but a rollout that is not on the ledger must not happen: wait for it.
        message = (
            f"verified, but the audit entry could not be recorded ({audit_error}); "
            "rollout waits for the ledger"
        )
        delay = deps.backoff.delay(deps.backoff.retry, retry)
        plan = plan_waiting(record, md, audit_index, "AuditPending", message, now, delay)
        await apply_and_stop(deps, body, plan)

    if not decision.allowed:
        current = None
        if record.deployment_name:
            current = await deps.kube.get_deployment(md.ref.namespace, record.deployment_name)
        log.warning(
            "refused %s/%s generation %d: %s",
            md.ref.namespace, md.ref.name, generation, decision.message,
        )  # fmt: skip
        plan = plan_refusal(
            record, md, decision, audit_index=audit_index, audit_error=audit_error,
            deployment=current, now=now,
            delay=deps.backoff.delay(deps.backoff.refused, retry),
        )  # fmt: skip
        await apply_and_stop(deps, body, plan)

    # Allowed: write the pod's offline proof, then roll out the pinned version.
    assert artifact.artifact.size is not None
    provenance: PodProvenance | None = None
    if found is not None:
        try:
            provenance = await apply_provenance(
                deps.kube, deps.ledger, md, policy.ledger, keys, found
            )
        except ProvenancePending as exc:
            message = f"verified, but {exc}; rollout waits"
            delay = deps.backoff.delay(deps.backoff.retry, retry)
            plan = plan_waiting(record, md, audit_index, "ProvenancePending", message, now, delay)
            await apply_and_stop(deps, body, plan)
    verified = _verified_model(
        md, decision, artifact.artifact.size, ledger, provenance, credential_hosts,
        credential_secret,
    )  # fmt: skip
    desired = builders.build_deployment(md, verified, deps.build)
    if pod_template_digest(desired["spec"]["template"]) != template_digest:
        # Never apply a template other than the one the audit entry records.
        raise Retry("the pod template differs from the audited one; deciding again", 5)
    deployment = await apply_deployment(deps, md, desired, made_uid=record.deployment_uid)
    service, _ = await apply_service(deps, md, made_uid=record.service_uid)

    # 4. Status and events.
    plan = plan_rollout(
        record, md, decision, verified=verified, provenance=provenance, policy=policy,
        serving_spec=_spec_snapshot(_with_pinned_uri(body, md)), deployment=deployment,
        audit_index=audit_index,
        now=now, runtime_image=image, pod_template_digest=template_digest,
        service_uid=controlled_uid(service, md.ref.uid),
        artifact_read_time=rfc3339(artifact.read_at) if artifact.read_at else None,
    )  # fmt: skip
    await apply_plan(deps, body, plan)
    deps.metrics.verify_seconds.observe((deps.clock() - started).total_seconds())
    return Outcome(decision, audit_index, decision.message)


def _verified_model(
    md: ModelDeployment,
    decision: Decision,
    size: int,
    ledger: LedgerEvidence,
    provenance: PodProvenance | None,
    credential_hosts: tuple[str, ...],
    credential_secret: str | None,
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
        credential_hosts=credential_hosts,
        credentials_secret=credential_secret,
    )
