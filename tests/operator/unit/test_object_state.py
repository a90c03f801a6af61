"""Per-object state (locks, drift-check marks) lives as long as the object: no leak."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest

from modeltrust.operator import handlers
from modeltrust.operator.deps import Deps, ObjectStates
from modeltrust.operator.metrics import Metrics

pytestmark = pytest.mark.unit


async def test_state_of_a_deleted_object_is_dropped() -> None:
    states = ObjectStates()
    for i in range(1000):
        async with states.lock(f"uid-{i}"):
            assert states.drift_check_due(f"uid-{i}", now=100.0, every=60)
    assert len(states) == 1000
    assert not states.drift_check_due("uid-0", now=120.0, every=60)
    for i in range(1000):
        states.forget(f"uid-{i}")
    assert len(states) == 0
    assert states.drift_check_due("uid-0", now=120.0, every=60)  # a new object, a new look


async def test_the_lock_is_one_per_object_while_it_exists() -> None:
    states = ObjectStates()
    assert states.lock("a") is states.lock("a")
    assert states.lock("a") is not states.lock("b")


def deps() -> Deps:
    none: Any = None
    return Deps(kube=none, ledger=none, artifacts=none, metrics=Metrics(), events=lambda *a: None)


async def test_the_delete_event_drops_the_objects_state() -> None:
    d = deps()
    d.lock("u1")
    d.objects.drift_check_due("u1", now=0.0, every=60)
    d.lock("u2")
    memo = kopf.Memo(deps=d)
    deleted = cast(kopf.RawEvent, {"type": "DELETED", "object": {"metadata": {"uid": "u1"}}})
    modified = cast(kopf.RawEvent, {"type": "MODIFIED", "object": {"metadata": {"uid": "u2"}}})
    await handlers.model_deployment_event(event=deleted, memo=memo)
    await handlers.model_deployment_event(event=modified, memo=memo)
    assert set(d.objects.locks) == {"u2"}
    assert d.objects.drift_checked == {}


def test_the_handlers_are_registered_with_the_configured_timer() -> None:
    from modeltrust.operator.config import OperatorConfig

    registry = kopf.OperatorRegistry()
    handlers.register(registry, OperatorConfig(timer_interval=2.5))
    timers = registry._spawning.get_all_handlers()  # kopf keeps timers and daemons here
    assert [getattr(h, "interval", None) for h in timers] == [2.5]
    # A registry of our own has no login unless we add one (the operator could not connect).
    activities = registry._activities.get_all_handlers()
    assert any(h.fn is kopf.login_via_client for h in activities)
