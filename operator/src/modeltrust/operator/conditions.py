"""metav1.Condition lists, updated the way Kubernetes controllers do it.

Conditions are a list keyed by type. The whole list is sent back in one status patch
(a merge patch replaces lists wholesale), so helpers here return a new list and never
mutate the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

VERIFIED = "Verified"
READY = "Ready"
REVOKED = "Revoked"

MAX_MESSAGE = 32768


def rfc3339(now: datetime) -> str:
    """Kubernetes timestamps: UTC, second precision, 'Z' suffix."""
    return now.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Return a copy of `conditions` with `type_` set.

    lastTransitionTime moves only when status changes, so "since when is it not Ready"
    stays answerable; reason, message and observedGeneration always follow the latest
    evaluation. Order is preserved; a new type is appended.
    """
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, got {status!r}")
    if not reason or not reason[0].isalpha() or not reason.replace("_", "").isalnum():
        raise ValueError(f"condition reason must be CamelCase letters and digits, got {reason!r}")
    new_list: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        copy = dict(cond)
        if copy.get("type") == type_:
            found = True
            if copy.get("status") != status or "lastTransitionTime" not in copy:
                copy["lastTransitionTime"] = rfc3339(now)
            copy.update(
                status=status,
                reason=reason,
                message=message[:MAX_MESSAGE],
                observedGeneration=generation,
            )
        new_list.append(copy)
    if not found:
        new_list.append(
            {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": message[:MAX_MESSAGE],
                "observedGeneration": generation,
                "lastTransitionTime": rfc3339(now),
            }
        )
    return new_list


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for cond in conditions:
        if cond.get("type") == type_:
            return cond
    return None


def is_true(conditions: Sequence[Mapping[str, Any]], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.get("status") == "True"
