"""Condition list updates keep Kubernetes semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modeltrust.operator.conditions import get_condition, is_true, set_condition

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_is_appended_with_transition_time() -> None:
    conds = set_condition([], "Verified", "True", "Verified", "ok", 1, T0)
    assert conds == [
        {
            "type": "Verified",
            "status": "True",
            "reason": "Verified",
            "message": "ok",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }
    ]


def test_same_status_keeps_transition_time_but_updates_the_rest() -> None:
    first = set_condition([], "Ready", "False", "Progressing", "0/2 ready", 1, T0)
    second = set_condition(first, "Ready", "False", "Progressing", "1/2 ready", 2, T1)
    cond = get_condition(second, "Ready")
    assert cond is not None
    assert cond["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert (cond["message"], cond["observedGeneration"]) == ("1/2 ready", 2)


def test_status_change_moves_transition_time() -> None:
    first = set_condition([], "Ready", "False", "Progressing", "", 1, T0)
    second = set_condition(first, "Ready", "True", "Available", "", 1, T1)
    assert second[0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"
    assert is_true(second, "Ready")


def test_input_list_is_not_mutated_and_order_is_kept() -> None:
    conds = set_condition([], "Verified", "True", "Verified", "", 1, T0)
    conds = set_condition(conds, "Ready", "True", "Available", "", 1, T0)
    before = [dict(c) for c in conds]
    after = set_condition(conds, "Verified", "False", "DigestMismatch", "x", 2, T1)
    assert conds == before
    assert [c["type"] for c in after] == ["Verified", "Ready"]
    assert not is_true(after, "Verified")
    assert is_true(after, "Ready")


@pytest.mark.parametrize(("status", "reason"), [("Yes", "Ok"), ("True", "not camel"), ("True", "")])
def test_invalid_status_or_reason_is_rejected(status: str, reason: str) -> None:
    with pytest.raises(ValueError, match="condition"):
        set_condition([], "Ready", status, reason, "", 1, T0)  # type: ignore[arg-type]
