"""The pure parts of the trust boundary: trust-reset annotations, the first-use check, finding
a rollout by content, trust audit entries, minimumCheckpoint, the outbox state and its
condition, and TrustRecordMissing in the decision."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import AuditEntry
from modeltrust.chain.trust import Reason
from modeltrust.chain.trust_state import TrustedCheckpoint
from modeltrust.operator.audit_outbox import (
    AUDIT_PENDING,
    OutboxState,
    ledger_from_json,
    ledger_identity,
    ledger_to_json,
    pending_condition,
    stats,
)
from modeltrust.operator.conditions import get_condition
from modeltrust.operator.decisions import Evidence, Verdict, decide, decide_serving, undecided
from modeltrust.operator.errors import SpecError
from modeltrust.operator.trust_reset import (
    RESET_ANNOTATION,
    find_rollout,
    parse_reset,
    pending_reset,
    reset_id,
    serving_under,
    trust_audit_entry,
)
from modeltrust.operator.types import CheckpointRef, LedgerSpec, parse_trust_policy

from .conftest import DIGEST, VERIFIER_KEY

pytestmark = pytest.mark.unit

ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
LEDGER = LedgerSpec("http://ledger:8443", VERIFIER_KEY)


def audit(
    action: str, uid: str, generation: int, digest: str = DIGEST, key: str | None = None
) -> AuditEntry:
    return AuditEntry(
        action=action, namespace="ml", name="m", uid=uid, generation=generation, digest=digest,
        decision="allowed", reasons=("r",), actor="op", time="2026-03-01T12:00:00Z",
        idempotency_key=key or f"{uid}/{generation}/{action}/Verified",
    )  # fmt: skip


def found(index: int, entry: AuditEntry) -> VerifiedEntry:
    return VerifiedEntry(index, entry, b"\0" * 32, None)  # type: ignore[arg-type]


# --- trust reset annotation -------------------------------------------------------------------


def test_a_reset_names_a_checkpoint_and_a_reason() -> None:
    value = json.dumps({"size": 12, "rootHash": ROOT_B64, "reason": "restored from backup"})
    req = parse_reset(value)
    assert req.checkpoint == CheckpointRef(12, ROOT)
    assert req.reason == "restored from backup"
    assert req.id == reset_id(value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("12:abc", "must be JSON"),
        ("[1]", "JSON object"),
        (json.dumps({"size": 0, "rootHash": ROOT_B64}), "between 1 and"),
        (json.dumps({"size": 3, "rootHash": "not base64!"}), "base64"),
        (json.dumps({"size": 3, "rootHash": base64.b64encode(b"x" * 31).decode()}), "32 bytes"),
        (json.dumps({"size": 3, "rootHash": ROOT_B64, "force": True}), "unknown fields"),
        (json.dumps({"size": 3}), "rootHash"),
    ],
)
def test_a_bad_reset_is_refused_with_the_field(value: str, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        parse_reset(value)


def test_each_annotation_value_is_handled_once(policy_body: Callable[[], dict[str, Any]]) -> None:
    body = policy_body()
    assert pending_reset(body) is None
    value = json.dumps({"size": 3, "rootHash": ROOT_B64})
    body["metadata"]["annotations"] = {RESET_ANNOTATION: value}
    assert pending_reset(body) == value
    body["status"] = {"trustReset": {"id": reset_id(value), "result": "Applied"}}
    assert pending_reset(body) is None
    # Another value (a new reason, or another checkpoint) is a new reset.
    body["metadata"]["annotations"][RESET_ANNOTATION] = value.replace("}", ', "reason": "x"}')
    assert pending_reset(body) is not None


# --- first use ----------------------------------------------------------------------------------


def test_first_use_is_refused_only_while_a_model_verified_on_that_ledger_serves(
    policy_body: Callable[[], dict[str, Any]], md_body: Callable[..., dict[str, Any]]
) -> None:
    policy = policy_body()  # "default", on VERIFIER_KEY
    other = policy_body()
    other["metadata"]["name"] = "other"
    other["spec"]["ledger"]["verifierKey"] = "other+00000000+AQID"
    serving = md_body()
    serving["status"] = {"servingDigest": DIGEST}
    pending = md_body()
    pending["metadata"]["name"] = "pending"
    elsewhere = md_body()
    elsewhere["metadata"]["name"] = "elsewhere"
    elsewhere["spec"]["policy"] = "other"
    elsewhere["status"] = {"servingDigest": DIGEST}
    going = md_body()
    going["metadata"].update(name="going", deletionTimestamp="2026-01-01T00:00:00Z")
    going["status"] = {"servingDigest": DIGEST}
    mds = [serving, pending, elsewhere, going]
    assert serving_under([policy, other], mds, VERIFIER_KEY) == ["ml/resnet"]
    assert serving_under([policy, other], [pending, going], VERIFIER_KEY) == []
    assert serving_under([policy, other], mds, "other+00000000+AQID") == ["ml/elsewhere"]


# --- rollout by content -------------------------------------------------------------------------


def test_a_rollout_is_found_by_content_never_by_index() -> None:
    uid = "u-1"
    entries = [
        found(3, audit("refuse", uid, 2)),
        found(4, audit("rollout", "someone-else", 2)),
        found(7, audit("rollout", uid, 1)),  # an older generation
        found(9, audit("rollout", uid, 2, digest="sha256:" + "ef" * 32)),  # another digest
        found(11, audit("rollout", uid, 2)),
        found(15, audit("rollout", uid, 2, key=f"{uid}/2/rollout/AuditOnly")),
    ]
    assert find_rollout(entries, uid, 2, DIGEST) == 11
    assert find_rollout(entries, uid, 3, DIGEST) is None
    assert find_rollout(reversed(entries), uid, 2, DIGEST) == 11
    # An entry claiming the object but under another object's key does not count.
    assert (
        find_rollout([found(1, audit("rollout", uid, 2, key="x/2/rollout"))], uid, 2, DIGEST)
        is None
    )


def test_a_trust_event_is_an_audit_entry_about_the_record() -> None:
    cp = TrustedCheckpoint("ledger.example", 12, ROOT, "note")
    e = trust_audit_entry(
        LEDGER, "trust-reset", cp, ("reason: backup",), namespace="ops", actor="op", now=NOW
    )
    assert (e.action, e.namespace, e.generation, e.digest) == (
        "trust-reset", "ops", 12, "sha256:" + ROOT.hex(),
    )  # fmt: skip
    assert e.uid == e.name
    assert e.name.startswith("modeltrust-ledger-")
    assert e.idempotency_key.startswith(f"trust/{e.name}/trust-reset/12-")
    assert "reason: backup" in e.reasons
    again = trust_audit_entry(
        LEDGER, "trust-reset", cp, ("reason: other",), namespace="ops", actor="op", now=NOW
    )
    assert again.idempotency_key != e.idempotency_key


# --- minimumCheckpoint --------------------------------------------------------------------------


def test_minimum_checkpoint_is_parsed(policy_body: Callable[[], dict[str, Any]]) -> None:
    body = policy_body()
    body["spec"]["ledger"]["minimumCheckpoint"] = {"size": 40, "rootHash": ROOT_B64}
    assert parse_trust_policy(body).ledger.minimum_checkpoint == CheckpointRef(40, ROOT)
    body["spec"]["ledger"]["minimumCheckpoint"] = {"size": 40, "rootHash": "AAAA"}
    with pytest.raises(SpecError, match=r"minimumCheckpoint\.rootHash"):
        parse_trust_policy(body)


# --- decisions ---------------------------------------------------------------------------------


def test_trust_record_missing_refuses_rollouts_and_leaves_serving_models(
    policy_body: Callable[[], dict[str, Any]],
) -> None:
    policy = parse_trust_policy(policy_body())
    ev = Evidence(DIGEST, "resnet50", "1.2.0", ledger_trust_missing="no trusted checkpoint")
    decision = decide(ev, policy)
    assert (decision.verdict, decision.reason) == (Verdict.REFUSED, Reason.TRUST_RECORD_MISSING)
    serving = decide_serving(ev, policy, None)
    assert serving.reason is Reason.TRUST_RECORD_MISSING
    assert undecided(serving)  # nothing known: the serving model is left running


# --- outbox state -------------------------------------------------------------------------------


def test_the_outbox_keeps_order_and_each_decision_once() -> None:
    state = OutboxState()
    a = state.add(LEDGER, audit("refuse", "u1", 1), "2026-03-01T12:00:00Z", "down", limit=10**6)
    b = state.add(LEDGER, audit("drift", "u2", 1), "2026-03-01T12:00:05Z", "down", limit=10**6)
    again = state.add(LEDGER, audit("refuse", "u1", 1), "2026-03-01T12:01:00Z", "x", limit=10**6)
    assert a is not None
    assert b is not None
    assert again == a  # the retry of one decision is not kept twice
    other = LedgerSpec("http://other", "other+00000000+AQID")
    state.add(other, audit("delete", "u3", 1), "2026-03-01T12:00:01Z", "down", limit=10**6)
    assert [p.key for p in state.for_ledger(ledger_identity(LEDGER))] == [a.key, b.key]
    assert state.ledgers() == [ledger_identity(LEDGER), ledger_identity(other)]
    # It survives a restart byte for byte (the entry appended later is the one kept).
    loaded = OutboxState.from_data(state.to_data())
    assert loaded.items == state.items
    assert loaded.next_seq == state.next_seq
    state.remove([a.seq])
    assert [p.seq for p in state.items] == [b.seq, 3]
    assert state.add(LEDGER, audit("refuse", "u9", 1), "t", "", limit=10) is None  # full
    assert count_age(state) == (2, 60.0 * 60 * 24)


def count_age(state: OutboxState) -> tuple[int, float]:
    return stats(state.items, datetime(2026, 3, 2, 12, 0, 1, tzinfo=UTC))


def test_a_ledger_spec_round_trips(policy_body: Callable[[], dict[str, Any]]) -> None:
    body = policy_body()
    body["spec"]["ledger"].update(
        origin="o", minimumCheckpoint={"size": 4, "rootHash": ROOT_B64},
    )  # fmt: skip
    spec = parse_trust_policy(body).ledger
    assert ledger_from_json(ledger_to_json(spec)) == spec
    witnessed = policy_body()
    witnessed["spec"]["ledger"].update(
        witnesses=["witness.example.org+f6fa284b+BJkEUYTx5mQTbzk+tl4kF/z/98+TaA2DL3CdY7LEvnXG"],
        witnessQuorum=1, maxCosignatureAge="90s",
    )  # fmt: skip
    spec = parse_trust_policy(witnessed).ledger
    assert ledger_from_json(ledger_to_json(spec)) == spec
    assert spec.max_cosignature_age == 90


def test_the_audit_pending_condition() -> None:
    state = OutboxState()
    state.add(LEDGER, audit("refuse", "u1", 4), "2026-03-01T12:00:00Z", "unreachable", limit=10**6)
    conds = pending_condition([], state.for_object("u1"), 4, NOW)
    c = get_condition(conds, AUDIT_PENDING)
    assert c is not None
    assert (c["status"], c["reason"]) == ("True", "LedgerUnavailable")
    assert "1 decision(s)" in c["message"]
    assert "unreachable" in c["message"]
    done = pending_condition(conds, [], 4, NOW + timedelta(seconds=5))
    assert get_condition(done, AUDIT_PENDING)["status"] == "False"  # type: ignore[index]
    assert pending_condition([], [], 4, NOW) == []  # never pending: no condition at all
