"""The operator end to end: a real API server with kwok nodes, a real ledger process, the
operator as a process, real ONNX models. What a platform engineer would check: conditions,
the owned Deployment, and the audit trail on the ledger."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from harness.cluster import Cluster
from modeltrust.chain.client import LedgerHTTPError
from modeltrust.chain.signatures import sign_registration

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    Operator,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    deployment,
    get_md,
    model_deployment,
    wait_condition,
    wait_for,
    wait_replicas,
)

pytestmark = pytest.mark.usefixtures("operator")


def test_verified_model_rolls_out_and_is_audited(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    mnist = rolled_out("mnist", policy, seed=1, replicas=2)
    md, digest, index = mnist.md, mnist.digest, mnist.index
    status = md["status"]
    assert condition(md, "Verified")["reason"] == "Verified"
    assert status["verifiedDigest"] == status["servingDigest"] == digest
    assert status["signerKeyIds"] == [publishers["trusted"].key_id]
    assert status["registrationIndex"] == index
    assert status["checkpointSize"] > index
    assert status["readyReplicas"] == 2
    assert status["modelSignature"]["inputs"][0]["name"] == "input"

    dep = deployment(crds, namespace, "mnist")
    assert dep is not None
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"]["modeltrust.dev/digest"] == digest
    init = template["spec"]["initContainers"][0]
    assert init["args"][init["args"].index("--digest") + 1] == digest
    assert dep["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]

    audits = ledger.audits(md["metadata"]["uid"])
    assert [(a.action, a.decision, a.digest) for a in audits] == [("rollout", "allowed", digest)]
    assert status["lastAuditIndex"] >= 0
    row = crds.kubectl("get", "md", "mnist", "-n", namespace, "--no-headers").stdout.split()
    assert row[1:9] == [
        "mnist", "1.0.0", "1.0.0", digest[7:19], "Verified", "Enforced", "True", "2"
    ]  # fmt: skip


@pytest.mark.parametrize("case", ["wrong-digest", "unsigned", "not-registered", "untrusted-key"])
def test_unverifiable_models_are_refused_and_audited(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    policy: str,
    case: str,
) -> None:
    path, digest = models.make("m", seed=2)
    reason = {"wrong-digest": "DigestMismatch", "unsigned": "NotRegistered",
              "not-registered": "NotRegistered", "untrusted-key": "UntrustedKey"}[case]  # fmt: skip
    if case == "wrong-digest":
        ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
        _, digest = models.make("other", seed=3)  # pin other bytes than the URI serves
    elif case == "untrusted-key":
        ledger.register(publishers["outsider"], path, "mnist", "1.0.0")
    elif case == "unsigned":
        # A registration naming the trusted key but carrying no valid signature: the ledger
        # refuses it, so the model has no registration for the operator to find.
        signed = sign_registration(
            publishers["trusted"].key, name="mnist", version="1.0.0", digest=digest,
            size=path.stat().st_size,
        )  # fmt: skip
        unsigned = dataclasses.replace(signed, signature=base64.b64encode(bytes(64)).decode())
        with ledger.client() as c, pytest.raises(LedgerHTTPError, match="signature"):
            c.append(unsigned)
    apply(crds, model_deployment(namespace, "bad", policy, model_uri(path), digest))

    md = wait_condition(crds, namespace, "bad", "Verified", "False", reason)
    assert condition(md, "Ready")["status"] == "False"
    assert deployment(crds, namespace, "bad") is None
    audits = wait_for("the refusal on the ledger", lambda: ledger.audits(md["metadata"]["uid"]))
    assert [(a.action, a.decision) for a in audits] == [("refuse", "refused")]
    assert audits[0].reasons[0].startswith(reason)


def test_bad_update_keeps_the_verified_version_serving(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    d1 = rolled_out("m", policy, seed=4).digest
    v2, d2 = models.make("v2", seed=5)
    apply(
        crds, model_deployment(namespace, "m", policy, model_uri(v2), d2, version="2.0.0")
    )  # unregistered

    md = wait_condition(crds, namespace, "m", "Verified", "False", "NotRegistered")
    assert md["status"]["servingDigest"] == d1
    assert condition(md, "Ready")["status"] == "True"
    dep = deployment(crds, namespace, "m")
    assert dep is not None
    assert dep["spec"]["template"]["metadata"]["annotations"]["modeltrust.dev/digest"] == d1


def test_revocation_after_rollout_scales_to_zero(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    digest = rolled_out("r", policy, seed=6).digest
    ledger.revoke_digest(publishers["trusted"], digest, "training data poisoned")

    md = wait_condition(crds, namespace, "r", "Revoked", "True", timeout=60)
    assert "training data poisoned" in condition(md, "Revoked")["message"]
    wait_replicas(crds, namespace, "r", 0)
    actions = [a.action for a in ledger.audits(md["metadata"]["uid"])]
    assert actions == ["rollout", "revoke"]


def test_drift_is_restored_and_audited(
    crds: Cluster,
    pod_image: str,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    md = rolled_out("d", policy, seed=7).md
    crds.kubectl(
        "set", "image", "deployment/d", "-n", namespace, "model-server=evil.example/backdoor:1"
    )

    def restored() -> bool:
        dep = deployment(crds, namespace, "d") or {}
        images = [
            c["image"]
            for c in dep.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ]
        return images == [pod_image]

    wait_for("the verified template to be restored", restored)
    audits = wait_for(
        "a drift audit entry",
        lambda: [a for a in ledger.audits(md["metadata"]["uid"]) if a.action == "drift"],
    )
    assert "image" in audits[0].reasons[0]


def test_ledger_outage_fails_closed_then_recovers(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    policy: str,
) -> None:
    path, digest = models.make("m", seed=8)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    ledger.stop()
    apply(crds, model_deployment(namespace, "o", policy, model_uri(path), digest))
    wait_condition(crds, namespace, "o", "Verified", "False", "LedgerUnavailable")
    assert deployment(crds, namespace, "o") is None
    ledger.start()
    md = wait_condition(crds, namespace, "o", "Ready", "True", timeout=180)
    # The refusal taken during the outage was kept (audit outbox) and recorded before it.
    assert [a.action for a in ledger.audits(md["metadata"]["uid"])] == ["refuse", "rollout"]


def test_ledger_rollback_blocks_rollouts(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    policy: str,
) -> None:
    path, digest = models.make("m", seed=9)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    ledger.stop()
    ledger.snapshot("old")
    ledger.start()
    apply(crds, model_deployment(namespace, "first", policy, model_uri(path), digest))
    wait_condition(crds, namespace, "first", "Ready", "True")  # trusted checkpoint moves on
    ledger.stop()
    ledger.restore("old")  # the ledger forgets the audit entry: a rollback
    ledger.start()
    apply(crds, model_deployment(namespace, "second", policy, model_uri(path), digest))
    md = wait_condition(crds, namespace, "second", "Verified", "False", "LedgerInconsistent")
    assert "rollback" in condition(md, "Verified")["message"]
    assert deployment(crds, namespace, "second") is None
    # The already verified workload is untouched.
    assert condition(get_md(crds, namespace, "first"), "Ready")["status"] == "True"


def test_operator_killed_and_restarted_records_one_audit_entry(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    policy: str,
    operator: Operator,
) -> None:
    path, digest = models.make("m", seed=10)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    apply(crds, model_deployment(namespace, "k", policy, model_uri(path), digest))
    uid = wait_for("the object's uid", lambda: get_md(crds, namespace, "k")["metadata"].get("uid"))
    # Kill as soon as the decision is on the ledger: mid-rollout, before or after the
    # Deployment and status were written.
    wait_for("the audit entry", lambda: ledger.audits(uid), every=0.05)
    operator.kill()
    operator.start()
    wait_condition(crds, namespace, "k", "Ready", "True")
    operator.kill()
    operator.start()
    md = wait_condition(crds, namespace, "k", "Ready", "True")
    assert [a.action for a in ledger.audits(uid)] == ["rollout"]
    assert md["status"]["lastAuditIndex"] >= 0


def test_deletion_is_audited_and_owned_objects_collected(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    md = rolled_out("gone", policy, seed=11).md
    crds.kubectl("delete", "md", "gone", "-n", namespace, "--timeout=60s")
    actions = [a.action for a in ledger.audits(md["metadata"]["uid"])]
    assert actions == ["rollout", "delete"]
    wait_for(
        "garbage collection of the Deployment", lambda: deployment(crds, namespace, "gone") is None
    )


@pytest.mark.slow  # scale: a hundred rollouts
@pytest.mark.kwok_only(
    reason="the operator deciding 100 ModelDeployments at once; on one real node that is "
    "100 model-server pods (a fetch, then onnxruntime, each), which measures the node"
)
def test_a_hundred_model_deployments_become_ready(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    policy: str,
) -> None:
    count = 100
    path, digest = models.make("m", seed=12)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    items = [
        model_deployment(namespace, f"m{i:03d}", policy, model_uri(path), digest)
        for i in range(count)
    ]
    crds.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    )

    def all_ready() -> bool:
        listed = crds.kubectl_json("get", "md", "-n", namespace)["items"]
        assert isinstance(listed, list)
        return bool(sum(condition(md, "Ready").get("status") == "True" for md in listed) == count)

    wait_for(f"{count} ModelDeployments to be Ready", all_ready, timeout=600, every=2)
    with ledger.client() as c:
        trail = c.audit_trail(namespace=namespace, name="m042")
    assert [ve.entry.action for ve in trail] == ["rollout"]  # type: ignore[union-attr]
