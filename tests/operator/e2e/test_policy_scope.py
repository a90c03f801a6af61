"""Policies have a scope (issue "Close the trust boundary", item 2).

The attack: a user in team-b named an admin's cluster-scoped `enforcement: Audit` lab
policy and got an unregistered model rolled out (Ready=True), with the default `kubectl
get md` columns hiding Verified=False. Now a namespace outside a policy's scope is refused
(PolicyNotInScope, audited), re-checked at every re-verification, an Audit policy must
name its scope, and the default columns show what serves next to what was asked.
"""

from __future__ import annotations

import pytest

from harness.cluster import Cluster, ClusterError

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
    model_deployment,
    trust_policy_body,
    wait_condition,
    wait_for,
    wait_replicas,
)

pytestmark = pytest.mark.usefixtures("operator")

TEAM = "modeltrust.dev/e2e-team"


def test_a_namespace_outside_the_policys_scope_is_refused(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    models: Models,
    make_policy: PolicyFactory,
    model_uri: ModelUri,
) -> None:
    # The admin's lab policy: Audit, for the lab namespace only.
    lab = make_policy("lab", enforcement="Audit", namespaces=[f"lab-{namespace}"[:63]])
    path, digest = models.make("unregistered", seed=71)  # nobody registered it
    apply(crds, model_deployment(namespace, "x", lab, model_uri(path), digest))

    md = wait_condition(crds, namespace, "x", "Verified", "False", "PolicyNotInScope")
    assert (
        f"namespace {namespace!r} may not use ModelTrustPolicy {lab!r}"
        in (condition(md, "Verified")["message"])
    )
    assert deployment(crds, namespace, "x") is None
    audits = wait_for("the refusal on the ledger", lambda: ledger.audits(md["metadata"]["uid"]))
    assert [(a.action, a.decision) for a in audits] == [("refuse", "refused")]
    assert audits[0].reasons[0].startswith("PolicyNotInScope: ")


def test_an_audit_policy_without_a_scope_is_rejected_by_the_api_server(
    crds: Cluster, namespace: str, ledger: Ledger, publishers: dict[str, Publisher]
) -> None:
    body = trust_policy_body(
        f"unscoped-{namespace}", ledger, publishers["trusted"], {"enforcement": "Audit"}
    )
    with pytest.raises(ClusterError, match="an Audit policy must name its scope"):
        apply(crds, body)
    body["spec"]["namespaceSelector"] = {}  # "every namespace", said explicitly
    try:
        apply(crds, body)
    finally:
        crds.kubectl("delete", "mtp", body["metadata"]["name"], "--wait=false", check=False)


def test_a_namespace_leaving_the_selector_is_refused_at_reverification(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    crds.kubectl("label", "namespace", namespace, f"{TEAM}=a")
    policy = make_policy("team-a", namespaces=None, namespaceSelector={"matchLabels": {TEAM: "a"}})
    served = rolled_out("t", policy, seed=72, replicas=2)
    crds.kubectl("label", "namespace", namespace, f"{TEAM}=b", "--overwrite")

    # Re-checked on re-verification (reverifyInterval 10s): handled like a revocation.
    md = wait_condition(crds, namespace, "t", "Revoked", "True", "PolicyNotInScope", timeout=60)
    assert condition(md, "Verified")["reason"] == "PolicyNotInScope"
    wait_replicas(crds, namespace, "t", 0)
    revokes = wait_for(
        "the revoke audit entry",
        lambda: [a for a in ledger.audits(served.uid) if a.action == "revoke"],
    )
    assert revokes[0].reasons[0].startswith("PolicyNotInScope: ")


def columns(cluster: Cluster, ns: str, name: str) -> dict[str, str]:
    """The default `kubectl get md` row of `name`, by column header."""
    out = cluster.kubectl("get", "md", name, "-n", ns).stdout.splitlines()
    header, row = out[0], out[1]
    names = header.split()
    starts = [header.index(f" {n} ") + 1 if i else 0 for i, n in enumerate(names[:-1])]
    starts.append(header.rindex(names[-1]))
    bounds = [*starts[1:], None]
    return {n: row[s:e].strip() for n, s, e in zip(names, starts, bounds, strict=True)}


def test_default_columns_show_what_serves_next_to_what_was_asked(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    models: Models,
    policy: str,
    rolled_out: RolloutFactory,
    model_uri: ModelUri,
) -> None:
    served = rolled_out("p", policy, seed=73)
    row = columns(crds, namespace, "p")
    assert row["REQUESTED"] == row["SERVING"] == "1.0.0"
    assert (row["VERIFIED"], row["MODE"], row["READY"]) == ("Verified", "Enforced", "True")
    assert row["DIGEST"] == served.digest.removeprefix("sha256:")[:12]
    # 1.1.0 is refused: the row must not read "1.1.0 ... True" while 1.0.0 serves.
    path, digest = models.make("p-next", seed=74)  # not registered
    apply(crds, model_deployment(namespace, "p", policy, model_uri(path), digest, version="1.1.0"))
    wait_condition(crds, namespace, "p", "Verified", "False", "NotRegistered")
    row = columns(crds, namespace, "p")
    assert (row["REQUESTED"], row["SERVING"]) == ("1.1.0", "1.0.0")
    assert row["VERIFIED"] == "NotRegistered"
    assert row["DIGEST"] == served.digest.removeprefix("sha256:")[:12]
    assert row["READY"] == "True"  # 1.0.0 still serves, and the row says so


def test_default_columns_show_an_audit_only_rollout(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    models: Models,
    make_policy: PolicyFactory,
    model_uri: ModelUri,
) -> None:
    policy = make_policy(enforcement="Audit")
    path, digest = models.make("unregistered", seed=75)
    apply(crds, model_deployment(namespace, "a", policy, model_uri(path), digest))
    md = wait_condition(crds, namespace, "a", "Ready", "True")
    assert md["status"]["mode"] == "AuditOnly"
    assert md["status"]["servingDigest"] == digest
    row = columns(crds, namespace, "a")
    assert (row["VERIFIED"], row["MODE"], row["READY"]) == ("AuditOnly", "AuditOnly", "True")
