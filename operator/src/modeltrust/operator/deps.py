"""What every reconcile step works with: the API, the ledger, the clock, per-object state,
and the policy a ModelDeployment names.

`Deps` is built once at start (handlers.configure, from the OperatorConfig) and passed
down; tests build one around in-memory fakes. Per-object state (the lock that keeps the
change handlers, the timer and the Deployment watcher off one object at once, and when
the timer last looked at its Deployment) lives in `ObjectStates` and is dropped when the
object is deleted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from modeltrust.operator.artifact import ArtifactChecker
from modeltrust.operator.audit_outbox import AuditOutbox
from modeltrust.operator.builders import BuildSettings
from modeltrust.operator.config import Backoff
from modeltrust.operator.errors import PolicyNotFound
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.types import ModelDeployment, TrustPolicy, parse_trust_policy
from modeltrust.operator.witness import WitnessRequirement


class EventSink(Protocol):
    def __call__(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None: ...


class ObjectStates:
    """In-memory state per ModelDeployment uid, for as long as the object exists."""

    def __init__(self) -> None:
        self.locks: dict[str, asyncio.Lock] = {}
        # When the timer last read each owned Deployment (monotonic seconds).
        self.drift_checked: dict[str, float] = {}

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    def drift_check_due(self, uid: str, now: float, every: float) -> bool:
        """True (and noted) when the last look is at least `every` seconds ago."""
        if now - self.drift_checked.get(uid, -math.inf) < every:
            return False
        self.drift_checked[uid] = now
        return True

    def forget(self, uid: str) -> None:
        """The object is gone: drop its state (a waiter on its lock keeps its reference)."""
        self.locks.pop(uid, None)
        self.drift_checked.pop(uid, None)

    def __len__(self) -> int:
        return len(self.locks.keys() | self.drift_checked.keys())


@dataclass
class Deps:
    kube: Kube
    ledger: LedgerAccess
    artifacts: ArtifactChecker
    metrics: Metrics
    events: EventSink
    build: BuildSettings = field(default_factory=BuildSettings)
    # May the operator read ServiceAccounts and Secrets for source credentials (the chart's
    # operator.readSourceCredentials)? Without it a ServiceAccount is never looked up.
    read_source_credentials: bool = False
    actor: str = "modeltrust-operator"
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    backoff: Backoff = field(default_factory=Backoff)
    # Namespaces the operator serves (empty: all); policy generations handled by this process.
    namespaces: tuple[str, ...] = ()
    policies_seen: dict[str, int] = field(default_factory=dict)
    # The timer looks at each owned Deployment at most this often.
    drift_check_seconds: float = 60.0
    objects: ObjectStates = field(default_factory=ObjectStates)
    # Decisions that cannot be recorded now are kept here (audit_outbox; None: not kept).
    outbox: AuditOutbox | None = None
    # policy/reset-id of trust resets handled by this process (trust_reset.py).
    trust_resets_handled: set[str] = field(default_factory=set)

    def lock(self, uid: str) -> asyncio.Lock:
        # Change handlers, the timer and the Deployment watcher never act on one object at once.
        return self.objects.lock(uid)


async def load_policy(
    deps: Deps,
    md: ModelDeployment,
    *,
    watched: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[TrustPolicy, TrustedKeys]:
    """The policy `md` names, parsed with every key in it. Decisions on a new generation
    read it from the API server; the timer passes the policies its watch delivered
    (`watched`, by name) and the API server is asked only for one not among them.

    PolicyNotFound when it does not exist; SpecError when it does not parse."""
    body = watched.get(md.policy) if watched is not None else None
    if body is None:
        body = await deps.kube.get_policy(md.policy)
    if body is None:
        raise PolicyNotFound(md.policy)
    policy = parse_trust_policy(body)
    keys = TrustedKeys.from_policy(policy)
    WitnessRequirement.from_ledger(policy.ledger)  # refuses witness keys that do not parse
    return policy, keys


async def get_policy(deps: Deps, name: str) -> TrustPolicy:
    """The policy `name` as the API server has it now (PolicyNotFound, SpecError)."""
    body = await deps.kube.get_policy(name)
    if body is None:
        raise PolicyNotFound(name)
    return parse_trust_policy(body)
