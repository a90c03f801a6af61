"""ModelTrustPolicy status computed from what the operator found."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from modeltrust.operator.conditions import get_condition
from modeltrust.operator.policy_status import (
    invalid,
    ledger_condition_changed,
    ledger_failed,
    ledger_verified,
    not_checked,
    policy_status,
    valid,
)
from modeltrust.operator.status_record import MDStatus, PolicyRef
from modeltrust.operator.types import parse_trust_policy

pytestmark = pytest.mark.unit

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def test_a_valid_reachable_policy() -> None:
    status = policy_status(
        {}, 4, T0,
        validity=valid(2, 1, 3, 2), ledger=ledger_verified(17, "ledger.example"),
        key_ids=["aa", "bb"], checkpoint_size=17,
    )  # fmt: skip
    assert status["observedGeneration"] == 4
    assert status["publisherKeyIds"] == ["aa", "bb"]
    assert status["checkpointSize"] == 17
    v = get_condition(status["conditions"], "Valid")
    assert v is not None
    assert (v["status"], v["reason"]) == ("True", "Valid")
    assert "2 of 3 witness" in v["message"]
    r = get_condition(status["conditions"], "LedgerReachable")
    assert r is not None
    assert (r["status"], r["reason"], r["observedGeneration"]) == ("True", "CheckpointVerified", 4)
    assert "size 17" in r["message"]


def test_an_invalid_policy_is_not_checked_against_the_ledger() -> None:
    status = policy_status(
        {}, 1, T0, validity=invalid("spec.publishers[0].keyId: mismatch"), ledger=not_checked()
    )
    v = get_condition(status["conditions"], "Valid")
    r = get_condition(status["conditions"], "LedgerReachable")
    assert v is not None
    assert r is not None
    assert (v["status"], v["reason"]) == ("False", "InvalidPolicy")
    assert "keyId" in v["message"]
    assert r["status"] == "Unknown"


def test_transition_time_moves_only_when_status_changes() -> None:
    ok = valid(1, 1, 0, 0)
    first = policy_status({}, 1, T0, validity=ok, ledger=ledger_verified(1, "o"))
    later = T0 + timedelta(minutes=5)
    same = policy_status(first, 2, later, validity=ok, ledger=ledger_verified(2, "o"))
    unavailable = ledger_failed("LedgerUnavailable", "x")
    down = policy_status(same, 2, later, validity=ok, ledger=unavailable)

    def when(status: dict[str, Any], type_: str) -> str:
        c = get_condition(status["conditions"], type_)
        assert c is not None
        return str(c["lastTransitionTime"])

    assert when(same, "LedgerReachable") == when(first, "LedgerReachable")
    assert when(down, "LedgerReachable") != when(first, "LedgerReachable")
    assert when(down, "Valid") == when(first, "Valid")


def test_periodic_recheck_writes_only_on_a_change() -> None:
    status = policy_status({}, 1, T0, validity=valid(1, 1, 0, 0), ledger=ledger_verified(5, "o"))
    assert not ledger_condition_changed(status, ledger_verified(9, "o"))
    assert ledger_condition_changed(status, ledger_failed("LedgerUnavailable", "down"))
    assert ledger_condition_changed(status, ledger_failed("WitnessQuorumNotMet", "1 of 2"))
    assert ledger_condition_changed({}, ledger_verified(1, "o"))


def served_under(policy: Any) -> MDStatus:
    return MDStatus.from_status({"verifiedPolicy": PolicyRef.of(policy).to_status()})


def test_a_policy_change_reverifies_only_what_was_decided_under_another_generation(
    policy_body: Callable[[], dict[str, Any]],
) -> None:
    body = policy_body()
    body["metadata"]["uid"] = "policy-uid-1"
    policy = parse_trust_policy(body)
    assert served_under(policy).decided_under(policy)
    body["metadata"]["generation"] = 2
    assert not served_under(policy).decided_under(parse_trust_policy(body))
    body["metadata"].update(generation=1, uid="recreated")
    assert not served_under(policy).decided_under(parse_trust_policy(body))
    assert not MDStatus.from_status({}).decided_under(policy)
