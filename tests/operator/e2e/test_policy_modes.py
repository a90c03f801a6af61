"""Policy modes end to end: enforcement Audit and revocation action KeepAndFlag.

Both keep a model serving that Enforce/ScaleToZero would stop, so what matters is that
the failure is still visible everywhere a platform engineer or auditor looks: the
condition, an Event, and the audit entry on the ledger.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.cluster import Cluster

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    PolicyFactory,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    deployment,
    get_md,
    model_deployment,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator")


def events(cluster: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl_json(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    assert isinstance(listed, list)
    return listed


def test_audit_mode_rolls_out_a_failing_model_and_records_the_failure(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
) -> None:
    policy = make_policy(enforcement="Audit")
    path, digest = models.make("unregistered", seed=31)  # nobody registered it
    apply(crds, model_deployment(namespace, "a", policy, model_uri(path), digest))

    md = wait_condition(crds, namespace, "a", "Ready", "True")
    verified = condition(md, "Verified")
    assert verified["status"] == "False"  # serving (Ready) but not verified
    assert verified["reason"] == "AuditOnly"
    assert "rolled out under Audit enforcement despite" in verified["message"]
    assert f"no registration for {digest}" in verified["message"]
    assert md["status"]["servingDigest"] == digest
    assert "provenance" not in md["status"]  # nothing registered, nothing to prove offline
    dep = deployment(crds, namespace, "a")
    assert dep is not None
    assert dep["spec"]["template"]["metadata"]["annotations"]["modeltrust.dev/digest"] == digest

    (audit,) = ledger.audits(md["metadata"]["uid"])
    assert (audit.action, audit.decision) == ("rollout", "allowed-audit-only")
    assert audit.reasons[0].startswith("NotRegistered: no registration for")

    flagged = wait_for(
        "a Warning event flagging the audit-only rollout",
        lambda: [
            e
            for e in events(crds, namespace, "a")
            if e["type"] == "Warning" and e["reason"] == "RolledOut"
        ],
    )
    assert "rolled out under Audit enforcement despite" in flagged[0]["message"]


def test_audit_mode_still_refuses_bytes_that_are_not_the_pin(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
) -> None:
    policy = make_policy(enforcement="Audit")
    path, _ = models.make("served", seed=32)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    _, other = models.make("pinned", seed=33)
    apply(crds, model_deployment(namespace, "h", policy, model_uri(path), other))
    md = wait_condition(crds, namespace, "h", "Verified", "False", "DigestMismatch")
    assert deployment(crds, namespace, "h") is None
    audits = wait_for("the refusal on the ledger", lambda: ledger.audits(md["metadata"]["uid"]))
    assert [(a.action, a.decision) for a in audits] == [("refuse", "refused")]


def test_keep_and_flag_keeps_serving_a_revoked_model_and_flags_it(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    policy = make_policy(revocationAction="KeepAndFlag")
    digest = rolled_out("k", policy, seed=34, replicas=2).digest
    ledger.revoke_digest(publishers["trusted"], digest, "license withdrawn")

    md = wait_condition(crds, namespace, "k", "Revoked", "True", timeout=60)
    assert "license withdrawn" in condition(md, "Revoked")["message"]
    assert condition(md, "Verified")["status"] == "False"
    assert md["status"]["revocationAction"] == "KeepAndFlag"
    audits = wait_for(
        "the revoke audit entry",
        lambda: [a for a in ledger.audits(md["metadata"]["uid"]) if a.action == "revoke"],
    )
    assert audits[0].decision == "keepandflag"
    assert "license withdrawn" in audits[0].reasons[0]
    # Events are posted after the status is written: wait for it as a user would.
    wait_for(
        "the Revoked event",
        lambda: any(e["reason"] == "Revoked" for e in events(crds, namespace, "k")) or None,
        timeout=30,
    )

    # Still serving, untouched: same replicas, same pinned digest, still Ready.
    dep = deployment(crds, namespace, "k")
    assert dep is not None
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["metadata"]["annotations"]["modeltrust.dev/digest"] == digest
    md = get_md(crds, namespace, "k")
    assert condition(md, "Ready")["status"] == "True"
    assert md["status"]["servingDigest"] == digest
