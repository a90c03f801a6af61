"""ModelTrustPolicy status, and what a policy change does to the models that use it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from harness.cluster import Cluster

from .conftest import (
    Ledger,
    Models,
    PolicyFactory,
    Publisher,
    RolloutFactory,
    condition,
    deployment,
    free_port,
    get_md,
    wait_condition,
    wait_for,
    wait_replicas,
)

pytestmark = pytest.mark.usefixtures("operator")


def get_policy(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", "mtp", name)


def wait_policy(
    cluster: Cluster, name: str, type_: str, status: str, reason: str | None = None
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        mtp = get_policy(cluster, name)
        c = condition(mtp, type_)
        ok = c.get("status") == status and (reason is None or c.get("reason") == reason)
        current = mtp.get("status", {}).get("observedGeneration") == mtp["metadata"]["generation"]
        return mtp if ok and current else None

    result: dict[str, Any] = wait_for(f"policy {name} {type_}={status} {reason or ''}", check)
    return result


def publisher_entry(p: Publisher) -> dict[str, str]:
    return {"name": p.name, "publicKey": p.pem}


def test_policy_status_reports_validity_and_ledger(
    crds: Cluster,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    make_policy: PolicyFactory,
) -> None:
    good = make_policy()
    mtp = wait_policy(crds, good, "LedgerReachable", "True", "CheckpointVerified")
    assert condition(mtp, "Valid")["status"] == "True"
    assert mtp["status"]["publisherKeyIds"] == [publishers["trusted"].key_id]
    assert mtp["status"]["checkpointSize"] >= 0
    row = crds.kubectl("get", "mtp", good, "--no-headers").stdout.split()
    assert row[-3:-1] == ["True", "CheckpointVerified"]

    wrong_id = make_policy(
        "badkey",
        publishers=[{**publisher_entry(publishers["trusted"]), "keyId": "0" * 64}],
    )
    mtp = wait_policy(crds, wrong_id, "Valid", "False", "InvalidPolicy")
    assert "spec.publishers[0].keyId" in condition(mtp, "Valid")["message"]
    assert condition(mtp, "LedgerReachable")["status"] == "Unknown"

    nowhere = f"http://127.0.0.1:{free_port()}"
    down = make_policy("down", ledger={"url": nowhere, "verifierKey": ledger.verifier_key})
    mtp = wait_policy(crds, down, "LedgerReachable", "False", "LedgerUnavailable")
    message = condition(mtp, "LedgerReachable")["message"]
    assert f"ledger at {nowhere} did not answer: connection refused" in message
    assert condition(mtp, "Valid")["status"] == "True"


@pytest.mark.parametrize("action", ["ScaleToZero", "KeepAndFlag"])
def test_removing_a_publisher_from_the_policy_acts_on_its_models(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
    action: str,
) -> None:
    both = [publisher_entry(publishers["trusted"]), publisher_entry(publishers["outsider"])]
    policy = make_policy(publishers=both, revocationAction=action)
    uid = rolled_out("pub", policy, seed=41, publisher="outsider", replicas=2).uid

    make_policy(publishers=[publisher_entry(publishers["trusted"])], revocationAction=action)
    md = wait_condition(crds, namespace, "pub", "Revoked", "True", "UntrustedKey")
    assert "no longer trusts the serving model" in condition(md, "Revoked")["message"]
    assert condition(md, "Verified")["status"] == "False"
    assert md["status"]["revocationAction"] == action
    revoke = [a for a in ledger.audits(uid) if a.action == "revoke"]
    assert [a.decision for a in revoke] == [action.lower()]
    assert any(r.startswith("UntrustedKey") for r in revoke[0].reasons)
    replicas = 0 if action == "ScaleToZero" else 2
    wait_replicas(crds, namespace, "pub", replicas)
    mtp = wait_policy(crds, policy, "Valid", "True")
    assert mtp["status"]["publisherKeyIds"] == [publishers["trusted"].key_id]

    # Trusting the publisher again restores the model (nothing on the ledger revokes it).
    make_policy(publishers=both, revocationAction=action)
    md = wait_condition(crds, namespace, "pub", "Revoked", "False", "Reverified")
    assert condition(md, "Verified")["status"] == "True"
    wait_replicas(crds, namespace, "pub", 2)
    wait_condition(crds, namespace, "pub", "Ready", "True")
    assert [a.action for a in ledger.audits(uid)] == ["rollout", "revoke", "reverify"]


def test_a_policy_change_that_keeps_trust_leaves_models_serving(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    policy = make_policy()
    md = rolled_out("keep", policy, seed=42).md
    make_policy(maxModelSize="1Gi")  # a new generation that still trusts the model

    audits = wait_for(
        "the re-verification on the ledger",
        lambda: [a for a in ledger.audits(md["metadata"]["uid"]) if a.action == "reverify"],
    )
    assert audits[0].decision == "allowed"
    md = get_md(crds, namespace, "keep")
    assert condition(md, "Revoked")["status"] == "False"
    assert condition(md, "Ready")["status"] == "True"
    assert "re-verified under policy" in condition(md, "Verified")["message"]


# --- narrowing trust never leaves a model running unjudged -------------------------------------


def test_a_removed_publisher_is_acted_on_even_when_the_artifact_is_gone(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    both = [publisher_entry(publishers["trusted"]), publisher_entry(publishers["outsider"])]
    policy = make_policy(publishers=both)
    gone = rolled_out("gone", policy, seed=43, publisher="outsider")
    gone.path.unlink()  # the artifact's URL now fails: the re-check must not need it

    make_policy(publishers=[publisher_entry(publishers["trusted"])])
    md = wait_condition(crds, namespace, "gone", "Revoked", "True", "UntrustedKey")
    wait_replicas(crds, namespace, "gone", 0)
    assert [a.action for a in ledger.audits(md["metadata"]["uid"])] == ["rollout", "revoke"]


def test_a_lower_max_model_size_is_acted_on(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    policy = make_policy()
    rolled_out("big", policy, seed=44)
    make_policy(maxModelSize="1Ki")  # the model is larger than that
    md = wait_condition(crds, namespace, "big", "Revoked", "True", "ModelTooLarge")
    assert "over the policy's maxModelSize of 1024 bytes" in condition(md, "Revoked")["message"]


def test_a_policy_change_during_a_ledger_outage_is_flagged_then_decided(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    both = [publisher_entry(publishers["trusted"]), publisher_entry(publishers["outsider"])]
    policy = make_policy(publishers=both)
    md = rolled_out("out", policy, seed=45, publisher="outsider", replicas=2).md
    verified_at = md["status"]["lastVerifiedTime"]

    ledger.stop()
    make_policy(publishers=[publisher_entry(publishers["trusted"])])
    md = wait_condition(crds, namespace, "out", "Verified", "Unknown", "ReverifyPending")
    assert (
        "could not re-verify the serving model, left running"
        in (condition(md, "Verified")["message"])
    )
    assert condition(md, "Ready")["status"] == "True"  # an outage takes nothing down
    assert md["status"]["lastVerifiedTime"] == verified_at  # nothing was verified
    assert (deployment(crds, namespace, "out") or {})["spec"]["replicas"] == 2

    # lastVerifiedTime has one-second precision: let the clock pass it, so the decision
    # below cannot land in the same second as the rollout and look unchanged.
    wait_for(
        "the clock to pass lastVerifiedTime",
        lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") > verified_at,
    )
    ledger.start()  # the timer retries and decides
    md = wait_condition(crds, namespace, "out", "Revoked", "True", "UntrustedKey")
    assert md["status"]["lastVerifiedTime"] != verified_at
    wait_replicas(crds, namespace, "out", 0)
