"""The operator's registry: process metrics, and the revoked-but-serving gauge that follows
the ModelDeployments' status as the watch delivers it."""

from __future__ import annotations

from typing import Any, cast

import kopf
import pytest
from prometheus_client import generate_latest

from modeltrust.operator import handlers
from modeltrust.operator.deps import Deps
from modeltrust.operator.metrics import Metrics

pytestmark = pytest.mark.unit


def test_the_registry_has_process_and_platform_metrics() -> None:
    text = generate_latest(Metrics().registry).decode()
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
        "modeltrust_operator_build_info",
    ):
        assert f"\n{name}" in text, name


def _md(name: str, action: str | None, revoked: bool) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [{"type": "Revoked", "status": "True" if revoked else "False"}]
    }
    if action is not None:
        status["revocationAction"] = action
    return {"metadata": {"namespace": "ml", "name": name, "uid": f"u-{name}"}, "status": status}


def _kept(metrics: Metrics) -> dict[str, float]:
    return {
        s.labels["modeldeployment"]: s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if s.name == "modeltrust_operator_revoked_kept_serving"
    }


async def test_revoked_kept_serving_follows_watch_events() -> None:
    none: Any = None
    d = Deps(kube=none, ledger=none, artifacts=none, metrics=Metrics(), events=lambda *a: None)
    memo = kopf.Memo(deps=d)

    async def event(kind: str, body: dict[str, Any]) -> None:
        raw = cast(kopf.RawEvent, {"type": kind, "object": body})
        await handlers.model_deployment_event(event=raw, memo=memo)

    await event("ADDED", _md("kept", "KeepAndFlag", revoked=True))
    await event("ADDED", _md("scaled", "ScaleToZero", revoked=True))
    await event("ADDED", _md("fine", None, revoked=False))
    assert _kept(d.metrics) == {"ml/kept": 1.0}
    # A new, verified version clears the condition: the series goes away.
    await event("MODIFIED", _md("kept", "KeepAndFlag", revoked=False))
    assert _kept(d.metrics) == {}
    await event("MODIFIED", _md("kept", "KeepAndFlag", revoked=True))
    assert _kept(d.metrics) == {"ml/kept": 1.0}
    await event("DELETED", _md("kept", "KeepAndFlag", revoked=True))
    assert _kept(d.metrics) == {}
