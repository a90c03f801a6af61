"""The trusted-checkpoint record: two real ledgers with the same key (a fork), real signed
checkpoints, and a ConfigMap store kept in memory with the API server's resourceVersion
semantics: an edited record must not move trust."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.ledger import LedgerKeys, LedgerThread, make_keys, registration, service_config
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.client_flows import VerifiedCheckpoint
from modeltrust.operator.errors import (
    Conflict,
    LedgerInconsistent,
    LedgerTrustMissing,
    LedgerUnverified,
)
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.trust_store import DATA_KEY
from modeltrust.operator.types import CheckpointRef, LedgerSpec

pytestmark = pytest.mark.integration


class ConfigMaps:
    """ConfigMaps as the API server keeps them: create fails if present, replace needs the
    current resourceVersion."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.calls: Counter[str] = Counter()

    def _stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(self.version)
        return body

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls["get"] += 1
        found = self.items.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls["create"] += 1
        key = (namespace, body["metadata"]["name"])
        if key in self.items:
            raise Conflict("already exists")
        self.items[key] = self._stamp(body)
        return copy.deepcopy(self.items[key])

    async def replace_config_map(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        self.calls["replace"] += 1
        current = self.items.get((namespace, name))
        if current is None:
            return None
        if current["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            self.calls["conflict"] += 1
            raise Conflict("resourceVersion changed")
        self.items[(namespace, name)] = self._stamp(body)
        return copy.deepcopy(self.items[(namespace, name)])

    def edit_record(self, record: dict[str, Any]) -> None:
        """What someone with write access to the ConfigMap does, without the operator."""
        ((key, cm),) = self.items.items()
        cm = copy.deepcopy(cm)
        cm["data"][DATA_KEY] = json.dumps(record)
        self.items[key] = self._stamp(cm)

    def record(self) -> dict[str, Any]:
        ((_, cm),) = self.items.items()
        parsed: dict[str, Any] = json.loads(cm["data"][DATA_KEY])
        return parsed


@dataclass
class Fork:
    keys: LedgerKeys
    a: LedgerThread  # the ledger the operator trusts
    b: LedgerThread  # same key, another history, longer

    def spec(self, ledger: LedgerThread) -> LedgerSpec:
        return LedgerSpec(ledger.url, self.keys.verifier_key)

    def b_checkpoint(self) -> VerifiedCheckpoint:
        with LedgerClient(self.b.url, verifier_key=self.keys.verifier_key) as c:
            return c.checkpoint()

    def a_checkpoint(self) -> VerifiedCheckpoint:
        with LedgerClient(self.a.url, verifier_key=self.keys.verifier_key) as c:
            return c.checkpoint()

    def append(self, ledger: LedgerThread, start: int, count: int) -> None:
        with LedgerClient(ledger.url, verifier_key=self.keys.verifier_key) as c:
            for i in range(start, start + count):
                c.append(registration(self.keys, i))


@pytest.fixture
def fork(tmp_path: Path) -> Iterator[Fork]:
    keys = make_keys(tmp_path / "keys")
    with (
        LedgerThread(service_config(keys, tmp_path / "a.db")) as a,
        LedgerThread(service_config(keys, tmp_path / "b.db")) as b,
    ):
        f = Fork(keys, a, b)
        f.append(a, 0, 3)
        f.append(b, 100, 5)
        yield f


def record_of(vcp: VerifiedCheckpoint, note: str | None = None) -> dict[str, Any]:
    cp = vcp.checkpoint
    return {
        "origin": cp.origin,
        "size": cp.size,
        "root_hash": base64.b64encode(cp.root_hash).decode(),
        "note": vcp.note if note is None else note,
    }


async def run(fork: Fork, edit: str) -> tuple[LedgerAccess, ConfigMaps]:
    kube = ConfigMaps()
    access = LedgerAccess(kube, "ns", lambda: None)  # type: ignore[arg-type]
    assert (await access.checkpoint(fork.spec(fork.a))).size == 3
    b = await asyncio.to_thread(fork.b_checkpoint)
    kube.edit_record(record_of(b, note="not verified" if edit == "unsigned" else None))
    return access, kube


@pytest.mark.parametrize("edit", ["unsigned", "signed-by-the-fork"])
async def test_an_edited_record_does_not_move_trust_to_a_fork(fork: Fork, edit: str) -> None:
    # The review's proof of concept: the record is set to the forked ledger's checkpoint
    # (with or without its real signed note); without a restart, the fork must stay refused.
    access, kube = await run(fork, edit)
    try:
        with pytest.raises(LedgerInconsistent, match="fork"):
            await access.checkpoint(fork.spec(fork.b))
        # The judgement is sticky for the ledger's key: the same key signed two histories,
        # so nothing from it is believed (nor anything sent to it) until an explicit reset.
        with pytest.raises(LedgerInconsistent, match="sticky"):
            await access.checkpoint(fork.spec(fork.a))
        await asyncio.to_thread(fork.append, fork.a, 3, 3)
        a_now = await asyncio.to_thread(fork.a_checkpoint)
        named = CheckpointRef(a_now.size, a_now.checkpoint.root_hash)
        vcp, before = await access.reset_trust(fork.spec(fork.a), named, ("test",))
        assert (vcp.size, before is not None) == (6, True)
        assert (await access.checkpoint(fork.spec(fork.a))).size == 6
        assert kube.record()["size"] == 6  # the record is written back from the trusted one
    finally:
        await access.close()


async def test_an_ignored_record_is_replaced_once_trust_moves_on(fork: Fork) -> None:
    access, kube = await run(fork, "signed-by-the-fork")
    try:
        assert (await access.checkpoint(fork.spec(fork.a))).size == 3
        assert kube.record()["size"] == 5  # ignored, but not touched while nothing moves
        await asyncio.to_thread(fork.append, fork.a, 3, 1)
        assert (await access.checkpoint(fork.spec(fork.a))).size == 4
        a = await access.checkpoint(fork.spec(fork.a))
        assert kube.record() == record_of(a)
    finally:
        await access.close()


async def test_at_start_a_record_must_verify_and_match_its_note(fork: Fork) -> None:
    b = await asyncio.to_thread(fork.b_checkpoint)
    for record, words in [
        (record_of(b, note="garbage"), "does not verify with the ledger key"),
        ({**record_of(b), "size": 2}, "signed note is for origin"),
    ]:
        kube = ConfigMaps()
        await kube.create_config_map(
            "ns", {"metadata": {"name": "x"}, "data": {DATA_KEY: json.dumps(record)}}
        )
        # The record's name is derived from the key; create it under the right name.
        access = LedgerAccess(kube, "ns", lambda: None)  # type: ignore[arg-type]
        store = access.store(fork.spec(fork.a))
        kube.items = {("ns", store.name): kube.items[("ns", "x")]}  # type: ignore[union-attr]
        try:
            with pytest.raises(LedgerUnverified, match=words):
                await access.checkpoint(fork.spec(fork.a))
        finally:
            await access.close()


async def test_a_genuine_record_is_adopted_at_start_and_moved_forward(fork: Fork) -> None:
    kube = ConfigMaps()
    first = LedgerAccess(kube, "ns", lambda: None)  # type: ignore[arg-type]
    await first.checkpoint(fork.spec(fork.a))
    await first.close()
    await asyncio.to_thread(fork.append, fork.a, 3, 2)
    restarted = LedgerAccess(kube, "ns", lambda: None)  # type: ignore[arg-type]
    try:
        assert (await restarted.checkpoint(fork.spec(fork.a))).size == 5
        assert kube.record()["size"] == 5
        with pytest.raises(LedgerInconsistent):
            await restarted.checkpoint(fork.spec(fork.b))
    finally:
        await restarted.close()


async def test_reads_come_from_memory_and_only_a_forward_move_is_written(fork: Fork) -> None:
    # Every ledger call loads the trusted checkpoint; only the first reads the ConfigMap.
    # Concurrent calls that all verified the same newer checkpoint write it once.
    kube = ConfigMaps()
    access = LedgerAccess(kube, "ns", lambda: None)  # type: ignore[arg-type]
    spec = fork.spec(fork.a)
    try:
        assert (await access.checkpoint(spec)).size == 3
        assert kube.calls == Counter(get=1, create=1)
        await asyncio.gather(*(access.checkpoint(spec) for _ in range(8)))
        assert kube.calls == Counter(get=1, create=1)
        await asyncio.to_thread(fork.append, fork.a, 3, 2)
        moved = await asyncio.gather(*(access.checkpoint(spec) for _ in range(8)))
        assert {vcp.size for vcp in moved} == {5}
        assert kube.calls == Counter(get=1, create=1, replace=1)
        assert kube.record() == record_of(moved[0])
    finally:
        await access.close()


async def test_a_record_written_by_someone_else_costs_one_re_read(fork: Fork) -> None:
    kube = ConfigMaps()
    access = LedgerAccess(kube, "ns", lambda: None)  # type: ignore[arg-type]
    spec = fork.spec(fork.a)
    try:
        first = await access.checkpoint(spec)
        kube.edit_record(record_of(first))  # same content, new resourceVersion
        await asyncio.to_thread(fork.append, fork.a, 3, 1)
        assert (await access.checkpoint(spec)).size == 4
        assert kube.calls == Counter(get=2, create=1, replace=2, conflict=1)
        assert kube.record()["size"] == 4
    finally:
        await access.close()


async def test_first_use_is_refused_at_error_while_models_serve(
    fork: Fork, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[LedgerSpec] = []

    async def serving(ledger: LedgerSpec) -> str | None:
        calls.append(ledger)
        return "models serve; reset trust explicitly"

    kube = ConfigMaps()
    access = LedgerAccess(kube, "ns", lambda: "t", first_use=serving)  # type: ignore[arg-type]
    try:
        with pytest.raises(LedgerTrustMissing, match="reset trust explicitly"):
            await access.checkpoint(fork.spec(fork.a))
        with pytest.raises(LedgerTrustMissing):  # asked again only after a few seconds
            await access.checkpoint(fork.spec(fork.a))
        assert len(calls) == 1
        errors = [r for r in caplog.records if "TRUST RECORD MISSING" in r.getMessage()]
        assert [r.levelname for r in errors] == ["ERROR"]
        assert kube.items == {}  # nothing trusted, nothing written
        # Nothing is appended either: the append is refused before anything is sent.
        evidence = await access.evidence(fork.spec(fork.a), None, "sha256:" + "0" * 64, "m")  # type: ignore[arg-type]
        assert evidence.trust_missing is not None
    finally:
        await access.close()
