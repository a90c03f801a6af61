"""Trust in a ledger is never reset silently, on a real API server with a real ledger.

The incident this reproduces: the trusted-checkpoint ConfigMap deleted, the operator
restarted, the ledger rolled back. Without an explicit act the operator must refuse new
rollouts (TrustRecordMissing, logged at ERROR) and send nothing to that ledger; with the
explicit reset (an annotation on the policy naming the checkpoint) it trusts it, audits the
reset, and re-verifies every serving model against it, finding rollout entries by content."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from harness.cluster import Cluster
from modeltrust.chain.entries import AuditEntry
from modeltrust.operator.trust_store import config_map_name

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    Operator,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    get_md,
    model_deployment,
    wait_condition,
    wait_for,
    wait_replicas,
)

pytestmark = pytest.mark.usefixtures("operator")


def ledger_size(ledger: Ledger) -> int:
    with ledger.client() as c:
        return c.checkpoint().size


def trail(ledger: Ledger, uid: str) -> list[tuple[int, AuditEntry]]:
    with ledger.client() as c:
        found = c.audit_trail(uid=uid)
    return [(ve.index, ve.entry) for ve in found if isinstance(ve.entry, AuditEntry)]


def entry_at(ledger: Ledger, index: int) -> Any:
    with ledger.client() as c:
        return c.entry(index).entry


def error_lines(operator: Operator, words: str) -> list[str]:
    """Lines of these ERROR messages (the e2e operator logs in kopf's plain format, without
    levels; the integration tests check the level)."""
    return [line for line in operator.log().splitlines() if words in line]


def test_trust_is_never_reset_silently_and_an_explicit_reset_reverifies(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    operator: Operator,
    rolled_out: RolloutFactory,
    model_uri: ModelUri,
) -> None:
    record = config_map_name(ledger.verifier_key)
    # "c" is rolled out before the snapshot: its rollout is in both histories.
    c = rolled_out("c", policy, seed=41)
    # A brand-new install trusts on first use, at WARNING, and audits it.
    assert any("TRUST ON FIRST USE" in line for line in operator.log().splitlines())
    tofu = wait_for("the first-use audit entry", lambda: trail(ledger, record))
    assert [e.action for _, e in tofu] == ["trust-on-first-use"]
    c_index = c.md["status"]["lastAuditIndex"]

    path_a, digest_a = models.make("a", seed=42)
    ledger.register(publishers["trusted"], path_a, "mnist", "1.0.0")
    ledger.stop()
    ledger.snapshot("old")
    ledger.start()
    # "a" (registered before the snapshot) and "z" (registered after it) are rolled out
    # after it: the rollback loses both rollouts and z's registration.
    apply(crds, model_deployment(namespace, "a", policy, model_uri(path_a), digest_a))
    a = wait_condition(crds, namespace, "a", "Ready", "True")
    z = rolled_out("z", policy, seed=43)

    # The incident: record deleted, operator restarted, ledger rolled back.
    operator.stop()
    crds.kubectl("delete", "configmap", record, "-n", namespace)
    ledger.stop()
    ledger.restore("old")
    ledger.start()
    size_before = ledger_size(ledger)
    operator.start()

    apply(crds, model_deployment(namespace, "b", policy, model_uri(path_a), digest_a))
    md = wait_condition(crds, namespace, "b", "Verified", "False", "TrustRecordMissing")
    message = condition(md, "Verified")["message"]
    assert "modeltrust.dev/trust-reset" in message
    assert "silent trust reset" in message
    wait_for("the refusal logged at ERROR", lambda: error_lines(operator, "TRUST RECORD MISSING"))
    # Nothing was sent to the ledger it could not judge, and nothing serving was touched.
    assert ledger_size(ledger) == size_before
    for name in ("a", "c", "z"):
        assert condition(get_md(crds, namespace, name), "Ready")["status"] == "True"
    # The refusal itself waits in the audit outbox, visible on the object.
    wait_condition(crds, namespace, "b", "AuditPending", "True")
    assert ledger_size(ledger) == size_before

    # The explicit act: the cluster operator names the checkpoint to trust.
    with ledger.client() as cl:
        cp = cl.checkpoint()
    value = json.dumps(
        {
            "size": cp.size,
            "rootHash": base64.b64encode(cp.checkpoint.root_hash).decode(),
            "reason": "ledger restored from backup",
        }
    )
    crds.kubectl("annotate", "mtp", policy, f"modeltrust.dev/trust-reset={value}", "--overwrite")

    def reset_status() -> dict[str, Any] | None:
        got: dict[str, Any] = crds.kubectl_json("get", "mtp", policy)
        status = (got.get("status") or {}).get("trustReset")
        return status if isinstance(status, dict) and status.get("result") else None

    status = wait_for("the trust reset", reset_status)
    assert status["result"] == "Applied", status
    assert status["trustedSize"] >= cp.size
    wait_for("the reset logged at ERROR", lambda: error_lines(operator, "TRUST RESET"))
    resets = wait_for(
        "the trust-reset audit entry",
        lambda: [e for _, e in trail(ledger, record) if e.action == "trust-reset"],
    )
    assert any("ledger restored from backup" in r for r in resets[0].reasons)

    # New rollouts proceed; the refusal was recorded once, before the rollout.
    wait_condition(crds, namespace, "b", "Ready", "True", timeout=180)
    b_uid = get_md(crds, namespace, "b")["metadata"]["uid"]
    assert [e.action for _, e in trail(ledger, b_uid)] == ["refuse", "rollout"]
    assert trail(ledger, b_uid)[0][1].decision == "refused"

    # "c": its rollout is on the ledger now trusted, found by content.
    def c_found() -> bool:
        status = get_md(crds, namespace, "c")["status"]
        return bool(status.get("lastAuditIndex") == c_index and status.get("lastVerifiedTime"))

    wait_for("c re-verified with its rollout found", c_found)
    found = entry_at(ledger, c_index)
    assert (found.uid, found.action) == (c.uid, "rollout")

    # "a": its rollout was lost; lastAuditIndex was cleared, the re-verification audited.
    a_uid = a["metadata"]["uid"]

    def a_reverified() -> int | None:
        index = get_md(crds, namespace, "a")["status"].get("lastAuditIndex")
        actions = [(i, e.action) for i, e in trail(ledger, a_uid)]
        return index if (index, "reverify") in actions else None

    a_index = wait_for("a re-verified and audited on the trusted ledger", a_reverified)
    assert entry_at(ledger, a_index).uid == a_uid
    assert [e.action for _, e in trail(ledger, a_uid)] == ["reverify"]
    assert condition(get_md(crds, namespace, "a"), "Ready")["status"] == "True"

    # "z": its registration was lost with the rollback: not trusted on the ledger now trusted.
    wait_condition(crds, namespace, "z", "Revoked", "True", "NotRegistered")
    wait_replicas(crds, namespace, "z", 0)
    assert [e.action for _, e in trail(ledger, z.uid)] == ["revoke"]
    # Every lastAuditIndex points at an entry about its own object.
    for name in ("a", "b", "c", "z"):
        md = get_md(crds, namespace, name)
        index = md["status"].get("lastAuditIndex")
        if index is not None:
            assert entry_at(ledger, index).uid == md["metadata"]["uid"], name


def test_a_rolled_back_ledger_gets_no_entry_and_stays_refused(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    operator: Operator,
    rolled_out: RolloutFactory,
    model_uri: ModelUri,
) -> None:
    path, digest = models.make("m", seed=45)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    ledger.stop()
    ledger.snapshot("old")
    ledger.start()
    first = rolled_out("first", policy, seed=46)
    ledger.stop()
    ledger.restore("old")
    ledger.start()
    size_before = ledger_size(ledger)
    apply(crds, model_deployment(namespace, "second", policy, model_uri(path), digest))
    wait_condition(crds, namespace, "second", "Verified", "False", "LedgerInconsistent")
    # Drift on a serving model is corrected, but its audit is kept, not sent to that ledger.
    crds.kubectl("scale", "deployment", "first", "-n", namespace, "--replicas=3")
    wait_condition(crds, namespace, "first", "AuditPending", "True")
    wait_replicas(crds, namespace, "first", 1)
    assert ledger_size(ledger) == size_before
    assert error_lines(operator, "LEDGER INCONSISTENT")
    # Sticky: a restart of the ledger changes nothing.
    ledger.stop()
    ledger.start()
    crds.kubectl("scale", "deployment", "first", "-n", namespace, "--replicas=2")
    wait_replicas(crds, namespace, "first", 1)
    assert ledger_size(ledger) == size_before
    wait_condition(crds, namespace, "first", "Ready", "True")  # still serving
    assert ledger_size(ledger) == size_before
    del first


def test_minimum_checkpoint_refuses_a_ledger_below_it(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: Any,
    model_uri: ModelUri,
) -> None:
    path, digest = models.make("m", seed=47)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    with ledger.client() as c:
        cp = c.checkpoint()
    root = base64.b64encode(cp.checkpoint.root_hash).decode()
    ledger_spec = {"url": ledger.url, "verifierKey": ledger.verifier_key}
    above = make_policy(
        "above",
        ledger={**ledger_spec, "minimumCheckpoint": {"size": cp.size + 5, "rootHash": root}},
    )
    apply(crds, model_deployment(namespace, "refused", above, model_uri(path), digest))
    md = wait_condition(crds, namespace, "refused", "Verified", "False", "LedgerInconsistent")
    assert "minimumCheckpoint" in condition(md, "Verified")["message"]
    at = make_policy(
        "at", ledger={**ledger_spec, "minimumCheckpoint": {"size": cp.size, "rootHash": root}}
    )
    apply(crds, model_deployment(namespace, "allowed", at, model_uri(path), digest))
    wait_condition(crds, namespace, "allowed", "Ready", "True")
