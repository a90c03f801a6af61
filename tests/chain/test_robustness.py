"""What the first auditors reported: duplicates within a request, and damaged stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from harness.ledger import TOKEN, LedgerKeys, audit, make_keys, registration, service_config
from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.service import LedgerService

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


async def _serve(keys: LedgerKeys, db: Path) -> LedgerService:
    service = LedgerService(service_config(keys, db))
    await service.start()
    return service


@pytest.fixture
async def api(tmp_path: Path, keys: LedgerKeys) -> AsyncIterator[Api]:
    service = await _serve(keys, tmp_path / "l.db")
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
    import asyncio

    reg = entry_to_json(registration(api.keys, 5))
    other = entry_to_json(registration(api.keys, 6))
    results = await asyncio.gather(api.post([other, reg]), api.post(reg), api.post(reg))
    indexes = [doc["index"] for status, doc in results if status == 409]
    size = await api.size()
    for index in indexes:
        assert index < size
        assert (await api.get(f"/v1/entries/{index}"))[0] == 200
