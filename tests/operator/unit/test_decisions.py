"""The verification decision, drift detection and idempotency keys, from their evidence."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.operator.builders import VerifiedModel, build_deployment
from modeltrust.operator.decisions import (
    ArtifactResult,
    Evidence,
    LoadResult,
    Reason,
    RegistrationCheck,
    RevocationFact,
    TensorInfo,
    Verdict,
    decide,
    decide_serving,
    idempotency_key,
    undecided,
)
from modeltrust.operator.drift import detect_drift
from modeltrust.operator.types import (
    Enforcement,
    TrustPolicy,
    parse_model_deployment,
    parse_trust_policy,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
KEY_A = "a1" * 32
KEY_B = "b2" * 32
KEY_X = "ee" * 32


@pytest.fixture
def policy(policy_body: Callable[[], dict[str, Any]]) -> TrustPolicy:
    return parse_trust_policy(policy_body())


def reg(
    key: str = KEY_A, publisher: str | None = "acme", index: int = 4, **kw: Any
) -> RegistrationCheck:
    fields: dict[str, Any] = {
        "ledger_index": index,
        "model_name": "resnet50",
        "model_version": "1.2.0",
        "digest": DIGEST,
        "signer_key_id": key,
        "inclusion_verified": True,
        "publisher": publisher,
        "signature_valid": True,
    }
    fields.update(kw)
    return RegistrationCheck(**fields)


def revocation(kind: str, target: str, *, valid: bool = True) -> RevocationFact:
    # Signed with authority: a key revokes itself, a digest is revoked by its registrant.
    return RevocationFact(
        ledger_index=11, target_kind=kind, target=target, reason="key leaked",
        signer_key_id=target if kind == "key" else KEY_A, signature_valid=valid,
    )  # fmt: skip


GOOD_LOAD = LoadResult(
    ok=True,
    inputs=(TensorInfo("x", "FP32", (-1, 3)),),
    outputs=(TensorInfo("y", "FP32", (-1, 1)),),
)


def evidence(**kw: Any) -> Evidence:
    base: dict[str, Any] = {
        "pinned_digest": DIGEST,
        "model_name": "resnet50",
        "model_version": "1.2.0",
        "artifact": ArtifactResult(digest=DIGEST, size=123),
        "load": GOOD_LOAD,
        "registrations": (reg(),),
    }
    base.update(kw)
    return Evidence(**base)


def audit_mode(policy: TrustPolicy) -> TrustPolicy:
    return dataclasses.replace(policy, enforcement=Enforcement.AUDIT)


def test_everything_verified_is_allowed(policy: TrustPolicy) -> None:
    d = decide(evidence(), policy)
    assert d.verdict is Verdict.ALLOWED
    assert d.reason is Reason.VERIFIED
    assert d.findings == ()
    assert d.signer_key_ids == (KEY_A,)
    assert d.registration_index == 4
    assert d.signature_json["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert "ledger index 4" in d.message


@pytest.mark.parametrize(
    ("ev", "reason", "words"),
    [
        (
            evidence(artifact=ArtifactResult(digest="sha256:" + "00" * 32, size=1)),
            Reason.DIGEST_MISMATCH,
            "does not match",
        ),
        (
            evidence(artifact=ArtifactResult(error="GET https://m/x: 404")),
            Reason.FETCH_FAILED,
            "404",
        ),
        (
            evidence(load=LoadResult(ok=False, error="not an ONNX model")),
            Reason.LOAD_FAILED,
            "not an ONNX",
        ),
        (
            evidence(ledger_inconsistent="consistency proof 5->3 failed"),
            Reason.LEDGER_INCONSISTENT,
            "blocked",
        ),
    ],
)
@pytest.mark.parametrize("mode", [Enforcement.ENFORCE, Enforcement.AUDIT])
def test_hard_failures_are_refused_in_every_mode(
    policy: TrustPolicy, ev: Evidence, reason: Reason, words: str, mode: Enforcement
) -> None:
    d = decide(ev, dataclasses.replace(policy, enforcement=mode))
    assert d.verdict is Verdict.REFUSED
    assert d.reason is reason
    assert words in d.message


@pytest.mark.parametrize(
    ("ev", "reason", "words"),
    [
        (evidence(registrations=()), Reason.NOT_REGISTERED, "no registration"),
        (
            evidence(registrations=(reg(publisher=None, key=KEY_X),)),
            Reason.UNTRUSTED_KEY,
            "not a publisher",
        ),
        (
            evidence(registrations=(reg(signature_valid=False, error="bad sig"),)),
            Reason.INVALID_SIGNATURE,
            "bad sig",
        ),
        (
            evidence(registrations=(reg(inclusion_verified=False, error="root mismatch"),)),
            Reason.INCLUSION_UNPROVEN,
            "root mismatch",
        ),
        (evidence(registrations=(reg(model_name="bert"),)), Reason.NAME_MISMATCH, "'bert'"),
        (
            evidence(registrations=(reg(publisher_may_vouch=False),)),
            Reason.PUBLISHER_NOT_ALLOWED,
            "modelNamePatterns",
        ),
        (
            evidence(revocations=(revocation("digest", DIGEST),)),
            Reason.REVOKED,
            "revokes the digest",
        ),
        (evidence(revocations=(revocation("key", KEY_A),)), Reason.REVOKED, "signer key"),
        (
            evidence(ledger_error="connection refused"),
            Reason.LEDGER_UNAVAILABLE,
            "connection refused",
        ),
    ],
)
def test_trust_failures_refuse_under_enforce_and_are_flagged_under_audit(
    policy: TrustPolicy, ev: Evidence, reason: Reason, words: str
) -> None:
    enforced = decide(ev, policy)
    assert enforced.verdict is Verdict.REFUSED
    assert enforced.reason is reason
    assert words in enforced.message
    assert enforced.reasons[0].startswith(reason.value + ": ")
    audited = decide(ev, audit_mode(policy))
    assert audited.verdict is Verdict.ALLOWED_AUDIT_ONLY
    assert audited.allowed
    assert audited.reason is Reason.VERIFIED_AUDIT_ONLY
    assert words in audited.message
    assert audited.reasons == enforced.reasons


def test_a_registration_for_another_digest_does_not_count(policy: TrustPolicy) -> None:
    d = decide(evidence(registrations=(reg(digest="sha256:" + "cd" * 32),)), policy)
    assert d.reason is Reason.NOT_REGISTERED


def test_threshold_counts_distinct_trusted_keys(policy: TrustPolicy) -> None:
    two = dataclasses.replace(policy, threshold=2)
    same_key_twice = evidence(registrations=(reg(index=1), reg(index=2)))
    d = decide(same_key_twice, two)
    assert d.reason is Reason.BELOW_THRESHOLD
    assert "1 valid trusted signature(s)" in d.message
    assert "requires 2" in d.message
    both = decide(evidence(registrations=(reg(index=9), reg(KEY_B, "vision", index=3))), two)
    assert both.verdict is Verdict.ALLOWED
    assert both.signer_key_ids == tuple(sorted((KEY_A, KEY_B)))
    assert both.registration_index == 3


def test_one_bad_registration_does_not_spoil_a_good_one(policy: TrustPolicy) -> None:
    ev = evidence(registrations=(reg(KEY_X, None, index=1), reg(index=2)))
    d = decide(ev, policy)
    assert d.verdict is Verdict.ALLOWED
    assert d.registration_index == 2


def test_revoking_one_of_two_keys_drops_below_threshold(policy: TrustPolicy) -> None:
    two = dataclasses.replace(policy, threshold=2)
    ev = evidence(
        registrations=(reg(index=1), reg(KEY_B, "vision", index=2)),
        revocations=(revocation("key", KEY_B),),
    )
    d = decide(ev, two)
    assert d.verdict is Verdict.REFUSED
    assert [f.reason for f in d.findings] == [Reason.REVOKED, Reason.BELOW_THRESHOLD]


def test_revocations_without_a_valid_trusted_signature_are_ignored(policy: TrustPolicy) -> None:
    ev = evidence(revocations=(revocation("digest", DIGEST, valid=False),))
    assert decide(ev, policy).verdict is Verdict.ALLOWED


def test_a_revocation_of_another_key_does_not_apply(policy: TrustPolicy) -> None:
    ev = evidence(
        revocations=(revocation("key", KEY_X), revocation("digest", "sha256:" + "cd" * 32))
    )
    assert decide(ev, policy).verdict is Verdict.ALLOWED


def test_findings_are_ordered_by_severity(policy: TrustPolicy) -> None:
    ev = evidence(
        registrations=(),
        artifact=ArtifactResult(digest="sha256:" + "00" * 32, size=1),
        ledger_inconsistent="fork",
    )
    d = decide(ev, policy)
    assert [f.reason for f in d.findings] == [
        Reason.LEDGER_INCONSISTENT, Reason.DIGEST_MISMATCH, Reason.NOT_REGISTERED,
    ]  # fmt: skip


def test_missing_load_result_is_a_refusal(policy: TrustPolicy) -> None:
    d = decide(evidence(load=None), policy)
    assert d.reason is Reason.LOAD_FAILED


def test_idempotency_keys_identify_object_generation_and_action() -> None:
    k = idempotency_key("uid-1", 3, "rollout")
    assert k == "uid-1/3/rollout"
    assert idempotency_key("uid-1", 3, "rollout") == k
    assert (
        len(
            {
                k,
                idempotency_key("uid-1", 4, "rollout"),
                idempotency_key("uid-1", 3, "refuse"),
                idempotency_key("uid-2", 3, "rollout"),
                idempotency_key("uid-1", 3, "rollout", "x"),
            }
        )
        == 5
    )
    with pytest.raises(ValueError, match="uid"):
        idempotency_key("", 1, "rollout")


# --- drift -------------------------------------------------------------------------------


@pytest.fixture
def template(md_body: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    md = parse_model_deployment(md_body())
    dep = build_deployment(md, VerifiedModel(digest=md.model.digest, size=1, generation=1))
    template: dict[str, Any] = dep["spec"]["template"]
    return template


def with_api_server_defaults(template: dict[str, Any]) -> dict[str, Any]:
    """What the API server adds to a template on create: none of it is drift."""
    t: dict[str, Any] = copy.deepcopy(template)
    t["metadata"]["creationTimestamp"] = None
    t["spec"].update(
        restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler"
    )
    for c in [*t["spec"]["containers"], *t["spec"]["initContainers"]]:
        c.update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
    t["spec"]["volumes"][0]["emptyDir"]["medium"] = ""
    return t


def test_api_server_defaults_are_not_drift(template: dict[str, Any]) -> None:
    assert detect_drift(with_api_server_defaults(template), template) == ()


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda t: t["spec"]["containers"][0].update(image="evil:latest"),
            "containers[model-server].image",
        ),
        (
            lambda t: t["spec"]["initContainers"][0]["args"].__setitem__(3, "sha256:" + "00" * 32),
            "initContainers[fetch].args",
        ),
        (lambda t: t["spec"].update(initContainers=[]), "template.spec.initContainers was removed"),
        (
            lambda t: t["spec"]["containers"].append({"name": "sidecar", "image": "x"}),
            "template.spec.containers[sidecar] was added",
        ),
        (
            lambda t: t["metadata"]["annotations"].update({"modeltrust.dev/digest": "sha256:00"}),
            "template.metadata.annotations.modeltrust.dev/digest differs",
        ),
        (
            lambda t: t["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
            "template.spec.volumes[host] was added",
        ),
        (
            lambda t: t["spec"]["containers"][0]["securityContext"].update(privileged=True),
            "securityContext",
        ),
    ],
)
def test_edits_that_change_what_runs_are_drift(
    template: dict[str, Any], edit: Callable[[dict[str, Any]], None], words: str
) -> None:
    actual = with_api_server_defaults(template)
    edit(actual)
    diffs = detect_drift(actual, template)
    assert any(words in d for d in diffs), diffs


# --- re-deciding a serving version -----------------------------------------------------------


def serving_evidence(**kw: Any) -> Evidence:
    """What a re-check has: the ledger's answer only (no artifact, no load)."""
    base: dict[str, Any] = {
        "pinned_digest": DIGEST,
        "model_name": "resnet50",
        "model_version": "1.2.0",
        "registrations": (reg(),),
    }
    base.update(kw)
    return Evidence(**base)


def test_a_serving_model_is_re_decided_without_its_bytes(policy: TrustPolicy) -> None:
    d = decide_serving(serving_evidence(), policy, model_size=123)
    assert d.verdict is Verdict.ALLOWED
    assert d.signer_key_ids == (KEY_A,)
    assert not undecided(d)


@pytest.mark.parametrize("mode", [Enforcement.ENFORCE, Enforcement.AUDIT])
def test_a_lower_max_model_size_is_a_decision_not_a_fetch_failure(
    policy: TrustPolicy, mode: Enforcement
) -> None:
    small = dataclasses.replace(policy, max_model_size=100, enforcement=mode)
    d = decide_serving(serving_evidence(), small, model_size=123)
    assert d.verdict is Verdict.REFUSED
    assert d.reason is Reason.MODEL_TOO_LARGE
    assert "123 bytes, over the policy's maxModelSize of 100" in d.message
    assert not undecided(d)
    # Even with the ledger down: the size alone decides.
    down = decide_serving(serving_evidence(ledger_error="refused"), small, model_size=123)
    assert down.reason is Reason.MODEL_TOO_LARGE
    assert not undecided(down)


@pytest.mark.parametrize(
    ("ev", "reason"),
    [
        (serving_evidence(registrations=(reg(publisher=None),)), Reason.UNTRUSTED_KEY),
        (
            serving_evidence(registrations=(reg(publisher_may_vouch=False),)),
            Reason.PUBLISHER_NOT_ALLOWED,
        ),
        (serving_evidence(registrations=()), Reason.NOT_REGISTERED),
    ],
)
def test_trust_the_policy_no_longer_gives_is_a_decision(
    policy: TrustPolicy, ev: Evidence, reason: Reason
) -> None:
    d = decide_serving(ev, policy, model_size=123)
    assert d.verdict is Verdict.REFUSED
    assert d.reason is reason
    assert not undecided(d)
    assert decide_serving(ev, audit_mode(policy), 123).verdict is Verdict.ALLOWED_AUDIT_ONLY


def test_a_revocation_is_acted_on_even_under_audit(policy: TrustPolicy) -> None:
    ev = serving_evidence(revocations=(revocation("digest", DIGEST),))
    for p in (policy, audit_mode(policy)):
        d = decide_serving(ev, p, model_size=123)
        assert d.verdict is Verdict.REFUSED
        assert Reason.REVOKED in [f.reason for f in d.findings]


@pytest.mark.parametrize(
    "ev",
    [
        serving_evidence(ledger_error="connection refused"),
        serving_evidence(ledger_unwitnessed="0 of 1 witnesses"),
        serving_evidence(ledger_inconsistent="fork at 7"),
    ],
)
def test_no_verified_ledger_answer_decides_nothing(policy: TrustPolicy, ev: Evidence) -> None:
    d = decide_serving(ev, policy, model_size=123)
    assert d.verdict is Verdict.REFUSED
    assert undecided(d)
    assert not undecided(decide(evidence(), policy))
