"""The plan functions: from a decision and the status record to the status patch, events
and retry, without I/O."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from modeltrust.operator.builders import VerifiedModel
from modeltrust.operator.conditions import get_condition
from modeltrust.operator.decisions import Decision, Finding, Reason, Verdict
from modeltrust.operator.errors import PolicyNotFound, Retry, SpecError
from modeltrust.operator.plans import (
    plan_audit,
    plan_policy_gone,
    plan_policy_unusable,
    plan_readiness,
    plan_refusal,
    plan_revocation,
    plan_rollout,
    plan_still_trusted,
    plan_waiting,
)
from modeltrust.operator.status_record import MDStatus, PolicyRef
from modeltrust.operator.types import ModelDeployment, parse_model_deployment, parse_trust_policy

pytestmark = pytest.mark.unit

ED25519_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
KEY = "ab" * 32
ALLOWED = Decision(Verdict.ALLOWED, (), (KEY,), 7, {"inputs": [], "outputs": []})
REFUSED = Decision(Verdict.REFUSED, (Finding(Reason.NOT_REGISTERED, "no registration"),))


@pytest.fixture
def md(md_body: Callable[..., dict[str, Any]]) -> ModelDeployment:
    return parse_model_deployment(md_body())


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = get_condition(status["conditions"], type_)
    assert found is not None, type_
    return dict(found)


MD_UID = "0b6c1f3e-2f43-4d6e-9a53-6f1f4b0e2a11"  # the unit tests' ModelDeployment


def deployment(replicas: int, ready: int) -> dict[str, Any]:
    owner = {"kind": "ModelDeployment", "name": "resnet", "uid": MD_UID, "controller": True}
    return {
        "metadata": {"generation": 1, "uid": "dep-1", "ownerReferences": [owner]},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 1, "replicas": ready, "readyReplicas": ready,
                   "updatedReplicas": ready, "availableReplicas": ready},
    }  # fmt: skip


def serving(generation: int = 2, **status: Any) -> MDStatus:
    return MDStatus.from_status(
        {"observedGeneration": generation, "servingGeneration": generation,
         "servingDigest": "sha256:" + "cd" * 32, "deploymentName": "resnet",
         "conditions": [{"type": "Verified", "status": "True", "reason": "Verified",
                         "message": "ok"}], **status}
    )  # fmt: skip


def test_the_record_reads_back_what_it_writes() -> None:
    record = serving(signerKeyIds=[KEY], verifiedPolicy={"name": "p", "uid": "u", "generation": 3})
    again = MDStatus.from_status(record.to_status())
    assert again == record
    assert again.verified_policy == PolicyRef("p", "u", 3)


def test_a_hand_edited_status_is_never_read_into_a_wrong_type() -> None:
    record = MDStatus.from_status(
        {"servingGeneration": "3", "modelSize": True, "signerKeyIds": "k", "conditions": {},
         "verifiedPolicy": {"name": "p"}, "provenance": {"configMap": 1}}
    )  # fmt: skip
    assert record == MDStatus()


def test_a_patch_holds_exactly_the_fields_set_and_none_clears() -> None:
    patch = serving().patch(revocation_action=None, replicas=2)
    assert patch.to_status() == {"revocationAction": None, "replicas": 2}
    with pytest.raises(TypeError, match="not status fields"):
        serving().patch(servingDigest="x")


def test_rollout_records_the_serving_version(md: ModelDeployment) -> None:
    policy = _policy(4)
    verified = VerifiedModel(md.model.digest, 1000, 3, (KEY,), 7, checkpoint_size=9)
    plan = plan_rollout(
        MDStatus(), md, ALLOWED, verified=verified, provenance=None, policy=policy,
        serving_spec={"replicas": 2}, deployment=deployment(2, 2), audit_index=11, now=NOW,
    )  # fmt: skip
    assert plan.status is not None
    assert plan.raise_after is None
    status = plan.status.to_status()
    assert status["servingGeneration"] == status["lastAuditGeneration"] == 3
    assert status["lastAuditIndex"] == 11
    assert status["servingDigest"] == md.model.digest
    assert status["signerKeyIds"] == [KEY]
    assert status["checkpointSize"] == 9
    assert status["verifiedPolicy"] == {"name": "default", "uid": "pu", "generation": 4}
    assert status["revocationAction"] is None
    assert status["provenance"] is None
    assert status["lastVerifiedTime"] == "2026-01-01T12:00:00Z"
    assert [condition(status, t)["status"] for t in ("Verified", "Revoked", "Ready")] == [
        "True", "False", "True",
    ]  # fmt: skip
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "RolledOut")]


def test_a_refusal_keeps_the_previous_version_and_retries(md: ModelDeployment) -> None:
    plan = plan_refusal(
        serving(), md, REFUSED, audit_index=None, audit_error="ledger down",
        deployment=deployment(2, 2), now=NOW, delay=30,
    )  # fmt: skip
    assert plan.status is not None
    status = plan.status.to_status()
    assert "servingGeneration" not in status  # the previous version stays the serving one
    assert "lastAuditIndex" not in status  # not recorded: nothing to point at
    assert condition(status, "Verified")["reason"] == "NotRegistered"
    assert (
        "still serving the previously verified cdcdcdcdcdcd"
        in condition(status, "Ready")["message"]
    )
    assert [e.reason for e in plan.events] == ["Refused", "AuditPending"]
    assert isinstance(plan.raise_after, Retry)
    assert plan.raise_after.delay == 30


def test_waiting_for_the_ledger_or_the_proof_is_not_verified(md: ModelDeployment) -> None:
    plan = plan_waiting(MDStatus(), md, None, "AuditPending", "x" * 2000, NOW, delay=10)
    assert plan.status is not None
    assert condition(plan.status.to_status(), "Verified")["status"] == "False"
    assert len(plan.events[0].message) == 1024
    assert isinstance(plan.raise_after, Retry)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [(PolicyNotFound("default"), "PolicyNotFound"), (SpecError("spec.x", "bad"), "InvalidPolicy")],
)
def test_a_policy_problem_is_named_by_its_type(
    md: ModelDeployment, exc: SpecError, reason: str
) -> None:
    plan = plan_policy_unusable(MDStatus(), md, exc, NOW, delay=15)
    assert plan.status is not None
    assert condition(plan.status.to_status(), "Verified")["reason"] == reason
    gone = plan_policy_gone(serving(), True, exc, NOW)
    assert gone.status is not None
    assert condition(gone.status.to_status(), "Verified")["reason"] == reason
    # A serving version that is not the current generation: Verified is the newer one's.
    assert plan_policy_gone(serving(), False, exc, NOW).status is None


def test_the_audit_entry_is_keyed_on_the_decision(md: ModelDeployment) -> None:
    entry = plan_audit(md, REFUSED, "op", NOW)
    assert (entry.action, entry.decision) == ("refuse", "refused")
    assert entry.idempotency_key == f"{md.ref.uid}/3/refuse/NotRegistered"
    assert plan_audit(md, REFUSED, "op", NOW) == entry


def test_readiness_is_written_only_when_it_changes() -> None:
    patch = plan_readiness(serving(), deployment(2, 1), MD_UID, NOW)
    assert patch is not None
    assert patch.to_status()["readyReplicas"] == 1
    assert patch.to_status()["deploymentUID"] == "dep-1"  # the object it made, remembered
    assert plan_readiness(patch.record, deployment(2, 1), MD_UID, NOW) is None


def test_an_orphaned_deployment_is_not_ready_and_keeps_the_remembered_uid() -> None:
    record = serving(deploymentUID="dep-1", readyReplicas=2, replicas=2)
    orphan = deployment(2, 2)
    orphan["metadata"]["ownerReferences"] = []
    patch = plan_readiness(record, orphan, MD_UID, NOW)
    assert patch is not None
    ready = next(c for c in patch.to_status()["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NotControlled")
    assert patch.record.deployment_uid == "dep-1"


def _policy(generation: int, action: str = "ScaleToZero") -> Any:
    return parse_trust_policy(
        {"metadata": {"name": "default", "generation": generation, "uid": "pu"},
         "spec": {"ledger": {"url": "http://l", "verifierKey": "l+01234567+AQ" + "A" * 42},
                  "publishers": [{"name": "acme", "publicKey": ED25519_PEM}],
                  "revocationAction": action}}
    )  # fmt: skip


def test_a_revocation_scales_down_audits_and_says_so() -> None:
    revoked = Decision(Verdict.REFUSED, (Finding(Reason.REVOKED, "revoked: poisoned"),))
    step = plan_revocation(serving(), policy=_policy(2), decision=revoked, digest="d", now=NOW)
    assert step.scale_to_zero
    assert step.audit is not None
    assert step.audit.action == "revoke"
    assert step.plan.status is not None
    status = step.plan.status.to_status()
    assert status["revocationAction"] == "ScaleToZero"
    assert condition(status, "Revoked")["status"] == "True"
    assert condition(status, "Ready")["reason"] == "Revoked"
    again = plan_revocation(
        step.plan.status.record, policy=_policy(2), decision=revoked, digest="d", now=NOW
    )
    assert again.message == "already revoked"
    assert again.audit is None


def test_keep_and_flag_leaves_it_running() -> None:
    revoked = Decision(Verdict.REFUSED, (Finding(Reason.REVOKED, "revoked"),))
    step = plan_revocation(
        serving(), policy=_policy(2, "KeepAndFlag"), decision=revoked, digest="d", now=NOW
    )
    assert not step.scale_to_zero
    assert step.plan.status is not None
    assert "Ready" not in {c["type"] for c in step.plan.status.to_status()["conditions"]}


def test_trusted_again_is_restored_and_audited() -> None:
    revoked = serving(
        revocationAction="ScaleToZero",
        conditions=[{"type": "Revoked", "status": "True", "reason": "Revoked", "message": "x"}],
        verifiedPolicy={"name": "default", "uid": "pu", "generation": 2},
    )
    step = plan_still_trusted(
        revoked, current=True, policy=_policy(2), decision=ALLOWED, digest="d", now=NOW
    )
    assert step.restore
    assert step.audit is not None
    assert step.audit.action == "reverify"
    assert step.plan.status is not None
    status = step.plan.status.to_status()
    assert status["revocationAction"] is None
    assert condition(status, "Revoked")["reason"] == "Reverified"
    # Still trusted under the same generation: no audit, no event.
    quiet = plan_still_trusted(
        step.plan.status.record, current=True, policy=_policy(2), decision=ALLOWED,
        digest="d", now=NOW,
    )  # fmt: skip
    assert quiet.audit is None
    assert not quiet.restore
