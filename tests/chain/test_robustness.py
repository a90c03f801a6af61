"""What the first auditors reported: duplicates within a request, and damaged stores.

Every test runs on a SQLite file and on a PostgreSQL database (``ledger_db``); a store is
damaged with SQL on its tables (PostgreSQL's append-only triggers bypassed, as by a
superuser)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, LiteralString

import aiohttp
import orjson
import pytest

from harness.ledger import TOKEN, LedgerKeys, audit, make_keys, registration, service_config
from harness.postgres import store_sql
from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.merkle import NodeID
from modeltrust.chain.service import LedgerService
from modeltrust.chain.storage import StorageCorruptError, node_position

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    def __init__(self, service: LedgerService, session: aiohttp.ClientSession, keys: LedgerKeys):
        self.service, self.session, self.keys = service, session, keys

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.session.get(self.service.url + path) as r:
            return r.status, await r.read()

    async def post(self, body: object, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.post(
            self.service.url + "/v1/entries", data=orjson.dumps(body), headers=headers or {}
        ) as r:
            return r.status, orjson.loads(await r.read())

    async def size(self) -> int:
        status, note = await self.get("/v1/checkpoint")
        assert status == 200
        return verify_checkpoint(note.decode(), self.keys.signer.verifier()).size


@pytest.fixture
def keys(tmp_path: Path) -> LedgerKeys:
    return make_keys(tmp_path / "keys")


async def _serve(keys: LedgerKeys, db: str) -> LedgerService:
    service = LedgerService(service_config(keys, db))
    await service.start()
    return service


@pytest.fixture
async def api(ledger_db: str, keys: LedgerKeys) -> AsyncIterator[Api]:
    service = await _serve(keys, ledger_db)
    async with aiohttp.ClientSession() as session:
        yield Api(service, session, keys)
    await service.stop()


# Duplicates within one request ---------------------------------------------------------------


async def test_same_entry_twice_in_one_request_is_409_naming_no_index(api: Api) -> None:
    reg = entry_to_json(registration(api.keys, 1))
    status, doc = await api.post([reg, reg])
    assert status == 409, doc
    assert "index" not in doc  # before: "already in the ledger at index 0", which did not exist
    assert "entries 0 and 1 of this request" in doc["error"]
    assert await api.size() == 0
    # The entry is appended alone at 0; a replay of it names 0, which exists.
    status, doc = await api.post(reg)
    assert (status, doc["index"]) == (201, 0)
    status, doc = await api.post([entry_to_json(registration(api.keys, 2)), reg])
    assert (status, doc["index"]) == (409, 0)
    assert (await api.get("/v1/entries/0"))[0] == 200
    assert await api.size() == 1


async def test_same_audit_entry_twice_with_its_key_is_appended_once(api: Api) -> None:
    entry = entry_to_json(audit(1))
    status, doc = await api.post([entry, entry], AUTH)
    assert status == 201, doc
    assert [r["index"] for r in doc["receipts"]] == [0, 0]
    assert await api.size() == 1


async def test_one_key_on_two_entries_of_a_request_names_no_missing_index(api: Api) -> None:
    first, second = entry_to_json(audit(1, key="k")), entry_to_json(audit(2, key="k"))
    status, doc = await api.post([first, second], AUTH)
    assert status == 409, doc
    assert "index" not in doc  # neither entry is in the ledger: no index to name
    assert "entries 0 and 1" in doc["error"]
    assert await api.size() == 0
    # Nothing was taken: the next append is index 0, and a 409 about it names 0.
    assert (await api.post(first, AUTH))[1]["index"] == 0
    status, doc = await api.post(second, AUTH)
    assert (status, doc["index"]) == (409, 0)
    assert (await api.get(f"/v1/entries/{doc['index']}"))[0] == 200


async def test_replay_within_a_batch_of_requests_names_an_index_that_exists(api: Api) -> None:
    reg = entry_to_json(registration(api.keys, 5))
    other = entry_to_json(registration(api.keys, 6))
    results = await asyncio.gather(api.post([other, reg]), api.post(reg), api.post(reg))
    indexes = [doc["index"] for status, doc in results if status == 409]
    size = await api.size()
    for index in indexes:
        assert index < size
        assert (await api.get(f"/v1/entries/{index}"))[0] == 200


# A damaged store --------------------------------------------------------------------------------


async def _ledger_of_four(keys: LedgerKeys, db: str, session: aiohttp.ClientSession) -> Api:
    service = await _serve(keys, db)
    api = Api(service, session, keys)
    regs = [entry_to_json(registration(keys, i)) for i in range(4)]
    assert (await api.post(regs))[0] == 201
    return api


def _damage(db: str, sql: LiteralString, *params: object) -> None:
    assert store_sql(db, sql, *params) == 1


def _damage_report(body: bytes, index: int) -> str:
    doc = orjson.loads(body)  # always JSON, never the damaged bytes
    assert doc["index"] == index, doc
    assert "store is damaged" in doc["error"]
    assert "ledger verify" in doc["error"]  # what the operator should do
    assert "backup" in doc["error"]
    return str(doc["error"])


async def _refuses_to_start(keys: LedgerKeys, db: str) -> str:
    with pytest.raises(StorageCorruptError) as failure:
        await _serve(keys, db)
    message = str(failure.value)
    assert "refusing to start" in message
    assert "backup" in message
    return message


async def test_deleted_entry_row_is_a_500_naming_it_never_a_silent_skip(
    ledger_db: str, keys: LedgerKeys
) -> None:
    db = ledger_db
    async with aiohttp.ClientSession() as session:
        api = await _ledger_of_four(keys, db, session)
        try:
            _damage(db, "DELETE FROM entries WHERE idx = 1")
            status, body = await api.get("/v1/entries/1")
            assert status == 500
            assert "entry 1 is missing" in _damage_report(body, 1)
            status, body = await api.get("/v1/entries?start=0&end=4")  # was 200 with 3 entries
            assert status == 500
            _damage_report(body, 1)
            status, body = await api.get("/v1/proofs/inclusion?index=1&size=4")
            assert status == 500
            _damage_report(body, 1)
            assert (await api.get("/v1/entries/2"))[0] == 200  # undamaged entries still serve
        finally:
            await api.service.stop()
    assert "entry 1 is missing" in await _refuses_to_start(keys, db)


async def test_corrupt_entry_bytes_are_a_500_json_naming_the_index(
    ledger_db: str, keys: LedgerKeys
) -> None:
    db = ledger_db
    async with aiohttp.ClientSession() as session:
        api = await _ledger_of_four(keys, db, session)
        try:
            _damage(db, "UPDATE entries SET data = ? WHERE idx = 2", b'{"kind": "regis')
            for path in (
                "/v1/entries/2",
                "/v1/entries?start=0",
                "/v1/proofs/inclusion?index=2&size=4",
            ):
                status, body = await api.get(path)
                assert status == 500, path  # was 200 with invalid JSON
                assert "entry 2" in _damage_report(body, 2)
        finally:
            await api.service.stop()
    assert "entry 2" in await _refuses_to_start(keys, db)


async def test_corrupt_tree_node_gives_no_wrong_proof_and_blocks_the_start(
    ledger_db: str, keys: LedgerKeys
) -> None:
    db = ledger_db
    async with aiohttp.ClientSession() as session:
        api = await _ledger_of_four(keys, db, session)
        try:
            # The node over entries [0, 2) (level 1): in the proofs of entries 2 and 3.
            position = node_position(NodeID(1, 0))
            _damage(db, "UPDATE nodes SET hash = ? WHERE pos = ?", b"\x07" * 32, position)
            status, body = await api.get("/v1/proofs/inclusion?index=3&size=4")
            assert status == 500  # was 200 with a proof that does not verify
            _damage_report(body, 3)
            status, body = await api.get("/v1/proofs/consistency?from=3&to=4")
            assert status == 500
            _damage_report(body, 3)
            assert (await api.get("/v1/proofs/inclusion?index=0&size=4"))[0] == 200
        finally:
            await api.service.stop()
    message = await _refuses_to_start(keys, db)
    assert "level 1 over entries [0, 2)" in message
