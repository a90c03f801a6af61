"""Re-verifying a serving model after a policy change and on the timer, with the Kubernetes
API and the ledger answers kept in memory: a policy that stops trusting a model must never
leave it running unjudged (not even when its artifact URL is gone: the bytes are pinned by
digest and not fetched again), and an undecided check is flagged and retried, never
recorded as a verification (docs/architecture.md, fail-closed rules)"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeltrust.chain.signatures import generate_private_key, key_id, public_key_pem
from modeltrust.operator.artifact import ArtifactChecker
from modeltrust.operator.builders import BuildSettings, VerifiedModel, build_deployment
from modeltrust.operator.decisions import RegistrationCheck, RevocationFact
from modeltrust.operator.deps import Deps
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.ledger_access import LedgerEvidence
from modeltrust.operator.ledger_follower import reverify_now
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.reverify import recheck, reverify_serving
from modeltrust.operator.status_record import PolicyRef
from modeltrust.operator.types import parse_model_deployment, parse_trust_policy

pytestmark = pytest.mark.unit

A = generate_private_key("ed25519")
B = generate_private_key("ed25519")
KID_A = key_id(A.public_key())
DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.example/modeltrust@sha256:" + "0e" * 32
BUILD = BuildSettings(default_image=IMAGE)
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SPEC = {
    "model": {
        "name": "resnet",
        "version": "1",
        # Gone: a re-check must not depend on fetching it (the bytes are pinned by digest).
        "uri": "https://models.example/removed.onnx",
        "digest": DIGEST,
    },
    "replicas": 2,
    "policy": "default",
}


def pem(key: Any) -> str:
    return public_key_pem(key.public_key()).decode()


def policy_body(*publishers: Any, generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "default", "generation": generation, "uid": "policy-uid"},
        "spec": {
            "ledger": {"url": "http://127.0.0.1:1", "verifierKey": "l+01234567+AQ" + "A" * 42},
            "publishers": [
                {"name": f"p{i}", "publicKey": pem(k)} for i, k in enumerate(publishers)
            ],
            "reverifyInterval": "1m",
            **spec,
        },
    }


def registration(publisher: str | None = "p0") -> RegistrationCheck:
    return RegistrationCheck(
        ledger_index=0, model_name="resnet", model_version="1", digest=DIGEST,
        signer_key_id=KID_A, inclusion_verified=True, publisher=publisher,
        signature_valid=publisher is not None,
    )  # fmt: skip


@dataclass
class FakeKube:
    md: dict[str, Any]
    policy: dict[str, Any]
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    status_patches: list[dict[str, Any]] = field(default_factory=list)
    policy_reads: int = 0
    namespace_labels: dict[str, str] = field(default_factory=dict)

    async def get_model_deployment(self, ns: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.md)

    async def get_namespace(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": dict(self.namespace_labels)}}

    async def get_policy(self, name: str) -> dict[str, Any]:
        self.policy_reads += 1
        return copy.deepcopy(self.policy)

    async def patch_model_deployment_status(
        self, ns: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        self.status_patches.append(copy.deepcopy(status))
        merged = self.md.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = copy.deepcopy(v)
        return copy.deepcopy(self.md)

    async def get_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.deployments.get(name))

    async def replace_deployment(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.deployments[name] = copy.deepcopy(body)
        return copy.deepcopy(body)

    async def scale_deployment(self, ns: str, name: str, replicas: int) -> dict[str, Any]:
        self.deployments[name]["spec"]["replicas"] = replicas
        return copy.deepcopy(self.deployments[name])


@dataclass
class FakeLedger:
    answer: LedgerEvidence
    audits: list[Any] = field(default_factory=list)

    async def evidence(self, spec: Any, keys: Any, digest: str, name: str) -> LedgerEvidence:
        return self.answer

    async def append_audit(self, spec: Any, entry: Any) -> int:
        self.audits.append(entry)
        return 100 + len(self.audits)


class NoFetching(ArtifactChecker):
    async def check(self, uri: str, digest: str, *, max_size: int, **_: Any) -> Any:
        raise AssertionError("a re-check must not fetch the artifact")


@dataclass
class World:
    kube: FakeKube
    ledger: FakeLedger
    deps: Deps
    events: list[tuple[str, str]]

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.kube.md["status"])

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    @property
    def replicas(self) -> int:
        return int(self.kube.deployments["r"]["spec"]["replicas"])


def world(policy: dict[str, Any], answer: LedgerEvidence, **status: Any) -> World:
    md_body = {"metadata": {"name": "r", "namespace": "ml", "uid": "u1", "generation": 1},
               "spec": SPEC}  # fmt: skip
    md = parse_model_deployment(md_body)
    verified = VerifiedModel(DIGEST, size=1000, generation=1, signer_key_ids=(KID_A,))
    deployment = build_deployment(md, verified, BUILD)
    deployment["metadata"]["resourceVersion"] = "1"
    old_policy = parse_trust_policy(policy_body(A))
    md_body["status"] = {
        "observedGeneration": 1, "servingSpec": SPEC, "servingDigest": DIGEST,
        "servingGeneration": 1, "signerKeyIds": [KID_A], "registrationIndex": 0,
        "modelSize": 1000, "lastVerifiedTime": "2026-01-01T11:59:30Z",
        "verifiedPolicy": PolicyRef.of(old_policy).to_status(),
        "conditions": [
            {"type": "Verified", "status": "True", "reason": "Verified", "message": "ok"},
            {"type": "Revoked", "status": "False", "reason": "NotRevoked", "message": "-"},
            {"type": "Ready", "status": "True", "reason": "Available", "message": "2/2"},
        ],
        **status,
    }  # fmt: skip
    kube = FakeKube(md_body, policy, {"r": deployment})
    ledger = FakeLedger(answer)
    events: list[tuple[str, str]] = []
    deps = Deps(
        kube=kube,  # type: ignore[arg-type]
        ledger=ledger,  # type: ignore[arg-type]
        artifacts=NoFetching(),
        metrics=Metrics(),
        events=lambda body, kind, reason, message: events.append((reason, message)),
        clock=lambda: NOW,
        build=BUILD,
        drift_check_seconds=float("inf"),
    )
    deps.objects.drift_checked["u1"] = 0.0  # drift is tested elsewhere
    return World(kube, ledger, deps, events)


REMOVED_A = policy_body(B, generation=2)  # publisher A, who signed the model, removed
LEDGER_OK = LedgerEvidence(registrations=[registration(None)])
LEDGER_DOWN = LedgerEvidence(error="ledger http://127.0.0.1:1 unreachable")


async def run_policy_change(w: World) -> str:
    policy = parse_trust_policy(w.kube.policy)
    return await reverify_serving(w.deps, w.kube.md, policy, TrustedKeys.from_policy(policy))


async def test_removing_the_publisher_revokes_even_when_the_artifact_is_gone() -> None:
    # The publisher is removed while the model URL 404s: revoked all the same.
    w = world(REMOVED_A, LEDGER_OK)
    message = await run_policy_change(w)
    assert "no longer trusts the serving model" in message
    assert w.condition("Revoked")["status"] == "True"
    assert w.condition("Revoked")["reason"] == "UntrustedKey"
    assert w.replicas == 0
    assert [a.action for a in w.ledger.audits] == ["revoke"]
    assert w.status["verifiedPolicy"]["generation"] == 2


async def test_a_lower_max_model_size_revokes() -> None:
    w = world(policy_body(A, generation=2, maxModelSize="500"), LEDGER_OK)
    w.ledger.answer = LedgerEvidence(registrations=[registration("p0")])
    await run_policy_change(w)
    assert w.condition("Revoked")["reason"] == "ModelTooLarge"
    assert "over the policy's maxModelSize of 500" in w.condition("Revoked")["message"]
    assert w.replicas == 0


async def test_a_namespace_leaving_the_policys_scope_is_judged_at_reverification() -> None:
    # The policy now serves namespaces labelled team=a; "ml" is not (any longer).
    scoped = policy_body(A, generation=2, namespaceSelector={"matchLabels": {"team": "a"}})
    w = world(scoped, LedgerEvidence(registrations=[registration("p0")]))
    w.kube.namespace_labels = {"team": "b"}
    await run_policy_change(w)
    assert w.condition("Revoked")["reason"] == "PolicyNotInScope"
    assert w.replicas == 0
    assert [a.action for a in w.ledger.audits] == ["revoke"]
    assert w.ledger.audits[0].reasons[0].startswith("PolicyNotInScope: namespace 'ml'")


async def test_an_image_no_longer_allowed_is_judged_at_reverification() -> None:
    # Even under Audit: the runtime is outside what Audit relaxes.
    other = "registry.example/modeltrust@sha256:" + "0f" * 32
    narrowed = policy_body(
        A, generation=2, enforcement="Audit", namespaces=["ml"],
        runtime={"allowedImages": [other]},
    )  # fmt: skip
    w = world(narrowed, LedgerEvidence(registrations=[registration("p0")]))
    await run_policy_change(w)
    assert w.condition("Revoked")["reason"] == "RuntimeImageNotAllowed"
    assert w.replicas == 0
    # Allowed again: restored, and the mode of what serves is recorded.
    w.kube.policy = policy_body(
        A, generation=3, namespaces=["ml"], runtime={"allowedImages": [other, IMAGE]}
    )
    await run_policy_change(w)
    assert w.condition("Revoked")["status"] == "False"
    assert w.status["mode"] == "Enforced"
    assert w.replicas == 2


async def test_an_undecided_check_is_flagged_retried_and_never_counts_as_verified() -> None:
    w = world(REMOVED_A, LEDGER_DOWN)
    before = w.status["lastVerifiedTime"]
    await run_policy_change(w)
    assert w.condition("Verified")["status"] == "Unknown"
    assert w.condition("Verified")["reason"] == "ReverifyPending"
    assert w.replicas == 2  # an outage never takes a model down
    assert w.status["lastVerifiedTime"] == before
    assert w.status["verifiedPolicy"]["generation"] == 1  # not decided under generation 2
    assert [r for r, _ in w.events] == ["ReverifyPending"]
    # The timer retries at once (level-triggered on verifiedPolicy, not on "due"), again
    # without refreshing lastVerifiedTime or repeating the event while nothing changes.
    await recheck(w.deps, w.kube.md)
    assert w.status["lastVerifiedTime"] == before
    assert [r for r, _ in w.events] == ["ReverifyPending"]
    # The ledger answers again: the timer revokes.
    w.ledger.answer = LEDGER_OK
    await recheck(w.deps, w.kube.md)
    assert w.condition("Revoked")["status"] == "True"
    assert w.condition("Verified")["status"] == "False"
    assert w.replicas == 0
    assert w.status["lastVerifiedTime"] == "2026-01-01T12:00:00Z"


async def test_the_timer_judges_a_policy_change_no_event_handled() -> None:
    # No policy event reached this process (missed, or handled before a crash): the timer
    # sees verifiedPolicy differ from the current generation and decides at once.
    w = world(REMOVED_A, LEDGER_OK)
    await recheck(w.deps, w.kube.md)
    assert w.condition("Revoked")["reason"] == "UntrustedKey"
    assert w.replicas == 0


async def test_a_key_outside_the_publishers_patterns_no_longer_counts() -> None:
    narrowed = policy_body(A, generation=2)
    narrowed["spec"]["publishers"][0]["modelNamePatterns"] = ["bert-*"]
    w = world(narrowed, LedgerEvidence())
    no_vouch = RegistrationCheck(
        0, "resnet", "1", DIGEST, KID_A, True, "p0", True, publisher_may_vouch=False
    )
    w.ledger.answer = LedgerEvidence(registrations=[no_vouch])
    await recheck(w.deps, w.kube.md)
    assert w.condition("Revoked")["reason"] == "PublisherNotAllowed"


async def test_a_trusted_model_is_re_verified_when_due_and_left_alone_otherwise() -> None:
    same = policy_body(A)  # generation 1: what it was verified under
    w = world(same, LedgerEvidence(registrations=[registration("p0")]))
    assert await recheck(w.deps, w.kube.md) == "not due"  # verified 30 s ago, interval 1m
    assert w.kube.status_patches == []
    w.kube.md["status"]["lastVerifiedTime"] = (NOW - timedelta(minutes=2)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    await recheck(w.deps, w.kube.md)
    assert w.condition("Verified")["status"] == "True"
    assert w.status["lastVerifiedTime"] == "2026-01-01T12:00:00Z"
    assert w.ledger.audits == []  # a routine re-check that changes nothing is not audited
    # A revocation appears on the ledger: acted on at the next due check.
    w.kube.md["status"]["lastVerifiedTime"] = "2026-01-01T11:00:00Z"
    revoked = RevocationFact(9, "digest", DIGEST, "poisoned", KID_A, True)
    w.ledger.answer = LedgerEvidence(registrations=[registration("p0")], revocations=[revoked])
    await recheck(w.deps, w.kube.md)
    assert w.condition("Revoked")["status"] == "True"
    assert "poisoned" in w.condition("Revoked")["message"]
    assert [a.action for a in w.ledger.audits] == ["revoke"]


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (lambda: None, "PolicyNotFound"),
        (lambda: {"metadata": {"name": "default"}}, "InvalidPolicy"),
    ],
)
async def test_a_model_whose_policy_is_gone_is_flagged(
    policy: Callable[[], Any], reason: str
) -> None:
    w = world(policy_body(A), LEDGER_OK)
    w.kube.policy = policy()
    await recheck(w.deps, w.kube.md)
    assert w.condition("Verified")["status"] == "Unknown"
    assert w.condition("Verified")["reason"] == reason
    assert w.replicas == 2


async def test_a_refused_newer_generation_keeps_its_verified_condition() -> None:
    # Generation 2 was refused; generation 1 keeps serving and is re-checked. Verified is
    # about generation 2 and must keep saying why it was refused.
    w = world(policy_body(A), LedgerEvidence(registrations=[registration("p0")]))
    w.kube.md["metadata"]["generation"] = 2
    refused = {"type": "Verified", "status": "False", "reason": "NotRegistered", "message": "x"}
    w.kube.md["status"]["conditions"][0] = refused
    w.kube.md["status"]["lastVerifiedTime"] = "2026-01-01T11:00:00Z"
    await recheck(w.deps, w.kube.md)
    assert w.condition("Verified") == refused
    assert w.status["lastVerifiedTime"] == "2026-01-01T12:00:00Z"
    w.ledger.answer = LEDGER_DOWN
    w.kube.md["status"]["lastVerifiedTime"] = "2026-01-01T11:00:00Z"
    await recheck(w.deps, w.kube.md)
    assert w.condition("Verified") == refused


async def test_the_timer_takes_the_policy_from_the_watch_and_reads_it_only_when_missing() -> None:
    w = world(policy_body(A), LEDGER_OK)
    watched = {"default": policy_body(A)}  # the policy index, as the watch delivered it
    assert await recheck(w.deps, w.kube.md, watched=watched) == "not due"
    assert (w.kube.policy_reads, w.kube.status_patches) == (0, [])
    # The watch delivers generation 2 (A removed): the next tick decides under it, unread.
    watched["default"] = REMOVED_A
    await recheck(w.deps, w.kube.md, watched=watched)
    assert w.kube.policy_reads == 0
    assert w.condition("Revoked")["status"] == "True"
    assert w.status["verifiedPolicy"]["generation"] == 2
    # Deleted (kopf drops it from the index): the tick asks the API server, which has none.
    del watched["default"]
    w.kube.policy = None  # type: ignore[assignment]
    w.kube.md["status"]["conditions"][0]["status"] = "True"  # so the flag is visible
    w.kube.md["status"]["conditions"][1]["status"] = "False"
    await recheck(w.deps, w.kube.md, watched=watched)
    assert w.kube.policy_reads == 1
    assert w.condition("Verified")["reason"] == "PolicyNotFound"


async def test_the_ledger_follower_decides_at_once_as_the_timer_would_when_due() -> None:
    # A revocation appears on the ledger 30 s after the last re-check, reverifyInterval 1m:
    # the timer waits; the follower's reverify_now takes the timer's decision path now.
    w = world(policy_body(A), LEDGER_OK)
    watched = {"default": policy_body(A)}
    revoked = RevocationFact(9, "digest", DIGEST, "poisoned", KID_A, True)
    w.ledger.answer = LedgerEvidence(registrations=[registration("p0")], revocations=[revoked])
    assert await recheck(w.deps, w.kube.md) == "not due"
    assert w.replicas == 2
    message = await reverify_now(w.deps, w.kube.md, watched)
    assert "poisoned" in message
    assert w.condition("Revoked")["status"] == "True"
    assert w.condition("Revoked")["reason"] == "Revoked"
    assert w.replicas == 0
    assert [(a.action, a.decision) for a in w.ledger.audits] == [("revoke", "scaletozero")]
    assert [r for r, _ in w.events] == ["Revoked"]
    # Acting again changes nothing and audits nothing more.
    assert await reverify_now(w.deps, w.kube.md, watched) == "already revoked"
    assert len(w.ledger.audits) == 1
