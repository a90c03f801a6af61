"""ModelTrustPolicy status as pure functions: what the operator understood of a policy.

Two conditions, in the metav1.Condition shape:
- `Valid`: the spec parsed, every publisher key loaded and matched its keyId, witness keys
  parsed. False/InvalidPolicy names the field, as a refused ModelDeployment would.
- `LedgerReachable`: the ledger answered with a checkpoint that verified with the policy's
  key (and witness quorum), consistent with the trusted one. False with reason
  LedgerUnavailable, WitnessQuorumNotMet or LedgerInconsistent (rollback/fork).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeltrust.operator.conditions import ConditionStatus, rfc3339, set_condition

VALID = "Valid"
LEDGER_REACHABLE = "LedgerReachable"


@dataclass(frozen=True)
class ConditionValue:
    status: ConditionStatus
    reason: str
    message: str


def valid(publishers: int, threshold: int, witnesses: int, quorum: int) -> ConditionValue:
    witnessed = f", {quorum} of {witnesses} witness cosignature(s) required" if quorum else ""
    return ConditionValue(
        "True",
        "Valid",
        f"{publishers} trusted publisher key(s), {threshold} signature(s) required{witnessed}",
    )


def invalid(problem: str) -> ConditionValue:
    return ConditionValue("False", "InvalidPolicy", problem)


def ledger_verified(size: int, origin: str) -> ConditionValue:
    return ConditionValue(
        "True", "CheckpointVerified", f"verified checkpoint of {origin!r} at size {size}"
    )


def ledger_read_from_mirror(size: int, origin: str, mirror: str) -> ConditionValue:
    """The ledger gave no answer; a mirror served a checkpoint that verified. Decisions go
    on from the mirror, audit entries wait: the ledger itself is not reachable."""
    return ConditionValue(
        "False",
        "ReadFromMirror",
        f"the ledger did not answer; verified checkpoint of {origin!r} at size {size} read "
        f"from mirror {mirror} (audit entries wait in the outbox for the ledger)",
    )


def ledger_failed(reason: str, problem: str) -> ConditionValue:
    return ConditionValue("False", reason, problem)


def not_checked() -> ConditionValue:
    return ConditionValue("Unknown", "PolicyInvalid", "not checked: the policy is not valid")


def policy_status(
    current: Mapping[str, Any],
    generation: int,
    now: datetime,
    *,
    validity: ConditionValue,
    ledger: ConditionValue,
    key_ids: Sequence[str] = (),
    checkpoint_size: int | None = None,
) -> dict[str, Any]:
    """The status to write (whole conditions list, as a merge patch replaces lists)."""
    conditions = list(current.get("conditions") or [])
    for type_, value in ((VALID, validity), (LEDGER_REACHABLE, ledger)):
        conditions = set_condition(
            conditions, type_, value.status, value.reason, value.message, generation, now
        )
    return {
        "observedGeneration": generation,
        "conditions": conditions,
        "publisherKeyIds": list(key_ids),
        "checkpointSize": checkpoint_size,
        "lastCheckedTime": rfc3339(now),
    }


def ledger_condition_changed(current: Mapping[str, Any], ledger: ConditionValue) -> bool:
    """Whether LedgerReachable would change status or reason (a periodic re-check writes
    only then, so a healthy cluster does not rewrite every policy every minute)."""
    for cond in current.get("conditions") or []:
        if cond.get("type") == LEDGER_REACHABLE:
            return bool(cond.get("status") != ledger.status or cond.get("reason") != ledger.reason)
    return True
