"""The audit outbox against a real ledger: decisions kept while appends fail, kept across a
restart, appended in order, and never twice (the ledger answers a resubmitted entry with the
index it already has, so a crash between the append and the outbox write duplicates
nothing)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.config_maps import ConfigMaps
from harness.ledger import TOKEN, LedgerKeys, LedgerThread, make_keys, service_config
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import AuditEntry
from modeltrust.operator.audit_outbox import CONFIG_MAP, AuditOutbox
from modeltrust.operator.errors import LedgerUnverified
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.types import LedgerSpec

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[LedgerKeys, LedgerThread]]:
    keys = make_keys(tmp_path / "keys")
    with LedgerThread(service_config(keys, tmp_path / "a.db")) as ledger:
        yield keys, ledger


def entry(i: int, action: str = "refuse") -> AuditEntry:
    return AuditEntry(
        action=action, namespace="ml", name=f"m{i}", uid=f"uid-{i}", generation=1,
        digest="sha256:" + f"{i:064x}", decision="refused", reasons=("LedgerUnavailable",),
        actor="op", time="2026-03-01T12:00:00Z", idempotency_key=f"uid-{i}/1/{action}/x",
    )  # fmt: skip


def wire(kube: ConfigMaps, token: str | None) -> tuple[LedgerAccess, AuditOutbox]:
    async def nothing_serving(_: LedgerSpec) -> None:
        return None

    access = LedgerAccess(
        kube,  # type: ignore[arg-type]
        "ns",
        lambda: token,
        first_use=nothing_serving,
    )
    events: list[Any] = []
    outbox = AuditOutbox(
        kube,  # type: ignore[arg-type]
        "ns",
        access,
        Metrics(),
        lambda *a: events.append(a),
    )
    access.trust_events = outbox.trust_event
    return access, outbox


def audit_trail(keys: LedgerKeys, ledger: LedgerThread) -> list[tuple[int, str, str]]:
    with LedgerClient(ledger.url, verifier_key=keys.verifier_key) as c:
        size = c.checkpoint().size
        found = [c.entry(i) for i in range(size)]
    return [
        (ve.index, ve.entry.action, ve.entry.idempotency_key)
        for ve in found
        if isinstance(ve.entry, AuditEntry)
    ]


async def test_kept_decisions_survive_a_restart_and_are_recorded_once_in_order(
    served: tuple[LedgerKeys, LedgerThread],
) -> None:
    keys, ledger = served
    spec = LedgerSpec(ledger.url, keys.verifier_key)
    kube = ConfigMaps()
    # No token: every append fails before anything is sent; refusals are kept.
    access, outbox = wire(kube, None)
    assert await outbox.record(spec, entry(1), keep=True) is None
    assert await outbox.record(spec, entry(2, "drift"), keep=True) is None
    assert await outbox.record(spec, entry(1), keep=True) is None  # a retry: kept once
    # A rollout is never kept: it must be on the ledger before it happens.
    with pytest.raises(LedgerUnverified):
        await outbox.record(spec, entry(3, "rollout"), keep=False)
    assert [p.key for p in outbox.pending()] == ["uid-1/1/refuse/x", "uid-2/1/drift/x"]
    before_drain = copy.deepcopy(kube.items[("ns", CONFIG_MAP)])
    await access.close()

    # A restart: a new process reads the outbox. Its first ledger call trusts the ledger on
    # first use (nothing serving), which is itself kept for audit, from inside the drain.
    access2, outbox2 = wire(kube, TOKEN)
    assert await asyncio.wait_for(outbox2.drain(), timeout=30) == 2
    assert await asyncio.wait_for(outbox2.drain(), timeout=30) == 1  # the first-use entry
    assert outbox2.pending() == []
    trail = audit_trail(keys, ledger)
    assert [a for _, a, _ in trail] == ["refuse", "drift", "trust-on-first-use"]
    # A new decision goes straight to the ledger, after them.
    index = await outbox2.record(spec, entry(3, "rollout"), keep=False)
    assert index == max(i for i, _, _ in trail) + 1
    await access2.close()

    # A crash after the appends but before the outbox was written: the old outbox again.
    kube.items[("ns", CONFIG_MAP)] = before_drain
    access3, outbox3 = wire(kube, TOKEN)
    assert await asyncio.wait_for(outbox3.drain(), timeout=30) == 2
    assert audit_trail(keys, ledger) == [*trail, (index, "rollout", "uid-3/1/rollout/x")]
    await access3.close()


def test_the_ledger_answers_a_resubmitted_entry_with_its_index(
    served: tuple[LedgerKeys, LedgerThread],
) -> None:
    keys, ledger = served
    with LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
        first = c.append(entry(7))
        size = c.checkpoint().size
        again = c.append(entry(7))
        assert again.index == first.index
        assert again.existing
        assert c.checkpoint().size == size
