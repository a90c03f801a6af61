"""The ledger HTTP API on a real loopback server: verifiable answers, clear 4xx for bad input.

Every test runs twice: on a SQLite file and on a PostgreSQL database (``ledger_db``)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from harness.ledger import TOKEN, LedgerKeys, audit, make_keys, registration, service_config
from modeltrust.chain.blocks import BlockHeader, check_link
from modeltrust.chain.canonical import canonical_json
from modeltrust.chain.checkpoint import Checkpoint, verify_checkpoint
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.merkle import leaf_hash, verify_consistency, verify_inclusion
from modeltrust.chain.openapi import openapi_document
from modeltrust.chain.server import Limits
from modeltrust.chain.service import LedgerService
from modeltrust.chain.signatures import sign_revocation

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    def __init__(self, service: LedgerService, session: aiohttp.ClientSession, keys: LedgerKeys):
        self.service, self.session, self.keys = service, session, keys
        self.url = service.url

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.get(self.url + path, **kw) as r:
            body = await r.read()
            if r.content_type == "application/json":
                return r.status, orjson.loads(body)
            return r.status, body.decode()

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.session.post(self.url + path, data=body, headers=headers or {}) as r:
            assert r.content_type == "application/json", await r.text()
            return r.status, orjson.loads(await r.read())

    async def checkpoint(self) -> Checkpoint:
        status, note = await self.get("/v1/checkpoint")
        assert status == 200
        return verify_checkpoint(note, self.keys.signer.verifier(), origin=self.keys.signer.name)


@pytest.fixture
async def api(tmp_path: Path, ledger_db: str) -> AsyncIterator[Api]:
    keys = make_keys(tmp_path / "keys")
    limits = Limits(max_body_bytes=64 * 1024, max_entries_per_request=50, max_range=7)
    service = LedgerService(service_config(keys, ledger_db, limits=limits))
    await service.start()
    async with aiohttp.ClientSession() as session:
        yield Api(service, session, keys)
    await service.stop()


def _b64list(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


async def test_append_returns_receipt_proven_by_signed_checkpoint(api: Api) -> None:
    reg = registration(api.keys, 1)
    status, doc = await api.post("/v1/entries", orjson.dumps(entry_to_json(reg)))
    assert status == 201, doc
    cp = verify_checkpoint(doc["checkpoint"], api.keys.signer.verifier())
    lh = leaf_hash(canonical_json(entry_to_json(reg)))
    assert base64.b64decode(doc["leaf_hash"]) == lh
    verify_inclusion(lh, doc["index"], cp.size, _b64list(doc["inclusion_proof"]), cp.root_hash)
    assert (await api.checkpoint()).size == 1


async def test_batch_append_is_one_block_and_every_receipt_verifies(api: Api) -> None:
    entries = [audit(i) for i in range(10)]
    body = orjson.dumps([entry_to_json(e) for e in entries])
    status, doc = await api.post("/v1/entries", body, AUTH)
    assert status == 201, doc
    cp = verify_checkpoint(doc["checkpoint"], api.keys.signer.verifier())
    assert cp.size == 10
    for e, r in zip(entries, doc["receipts"], strict=True):
        lh = leaf_hash(canonical_json(entry_to_json(e)))
        verify_inclusion(lh, r["index"], cp.size, _b64list(r["inclusion_proof"]), cp.root_hash)
    status, block = await api.get("/v1/blocks/0")
    assert status == 200
    header = BlockHeader.from_json(block["header"])
    assert (header.first_index, header.end_index) == (0, 10)


async def test_reads_proofs_and_blocks_agree_with_checkpoints(api: Api) -> None:
    for batch in range(3):
        body = orjson.dumps([entry_to_json(audit(batch * 10 + i)) for i in range(4)])
        assert (await api.post("/v1/entries", body, AUTH))[0] == 201
    cp = await api.checkpoint()
    assert cp.size == 12
    status, one = await api.get("/v1/entries/5")
    assert status == 200
    assert one["index"] == 5
    lh5 = leaf_hash(canonical_json(one["entry"]))
    assert base64.b64decode(one["leaf_hash"]) == lh5
    status, proof = await api.get("/v1/proofs/inclusion", params={"index": 5, "size": 12})
    verify_inclusion(lh5, 5, 12, _b64list(proof["inclusion_proof"]), cp.root_hash)
    # Range reads are capped (max_range=7 here) and ordered.
    status, rng = await api.get("/v1/entries", params={"start": 2, "end": 100})
    assert status == 200
    assert [e["index"] for e in rng["entries"]] == list(range(2, 9))
    # Consistency from every earlier block's checkpoint to the latest.
    status, blocks = await api.get("/v1/blocks", params={"start": 0})
    prev = None
    for b in blocks["blocks"]:
        header = BlockHeader.from_json(b["header"])
        check_link(prev, header)
        old = verify_checkpoint(b["checkpoint"], api.keys.signer.verifier())
        status, cons = await api.get("/v1/proofs/consistency", params={"from": old.size, "to": 12})
        assert status == 200
        verify_consistency(
            old.size, 12, _b64list(cons["consistency_proof"]), old.root_hash, cp.root_hash
        )
        prev = header


async def test_lookups_find_and_prove_entries(api: Api) -> None:
    reg = registration(api.keys, 3)
    await api.post("/v1/entries", orjson.dumps(entry_to_json(reg)))
    rev = sign_revocation(api.keys.publisher, target_kind="digest", target=reg.digest, reason="bad")
    status, _ = await api.post("/v1/entries", orjson.dumps(entry_to_json(rev)))
    assert status == 201
    await api.post("/v1/entries", orjson.dumps(entry_to_json(audit(1, uid="u-9"))), AUTH)
    for path, params, kind in (
        ("/v1/registrations", {"digest": reg.digest}, "registration"),
        ("/v1/revocations", {"digest": reg.digest}, "revocation"),
        ("/v1/revocations", {"key_id": reg.signer_key_id, "digest": reg.digest}, "revocation"),
        ("/v1/audit", {"uid": "u-9"}, "audit"),
        ("/v1/audit", {"namespace": "default", "name": "web"}, "audit"),
    ):
        status, doc = await api.get(path, params=params)
        assert status == 200, doc
        cp = verify_checkpoint(doc["checkpoint"], api.keys.signer.verifier())
        assert [e["entry"]["kind"] for e in doc["entries"]] == [kind]
        e = doc["entries"][0]
        lh = leaf_hash(canonical_json(e["entry"]))
        verify_inclusion(lh, e["index"], cp.size, _b64list(e["inclusion_proof"]), cp.root_hash)
    status, none = await api.get("/v1/registrations", params={"digest": "sha256:" + "f" * 64})
    assert status == 200
    assert none["entries"] == []


async def test_keys_health_metrics_and_openapi(api: Api) -> None:
    await api.post("/v1/entries", orjson.dumps(entry_to_json(audit(1))), AUTH)
    status, keys = await api.get("/v1/keys")
    assert keys["checkpoint_verifier_key"] == api.keys.verifier_key
    assert len(keys["publisher_key_ids"]) == 1
    assert (await api.get("/healthz"))[0] == 200
    status, ready = await api.get("/readyz")
    assert status == 200
    assert ready["tree_size"] == 1
    status, metrics = await api.get("/metrics")
    assert 'modeltrust_ledger_appends_total{kind="audit"} 1' in metrics
    assert "modeltrust_ledger_append_latency_seconds_count 1" in metrics
    status, doc = await api.get("/openapi.json")
    assert doc == openapi_document()
    assert doc["openapi"].startswith("3.1")


async def test_openapi_documents_exactly_the_served_routes(api: Api) -> None:
    app = api.service._runner.app  # type: ignore[union-attr]
    served = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method != "HEAD":
            served.add((path, route.method.lower()))
    documented = {(p, m) for p, ops in openapi_document()["paths"].items() for m in ops}
    assert served == documented


def _signed_json(api: Api, i: int) -> dict[str, Any]:
    return entry_to_json(registration(api.keys, i))


BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("not json", b"{nope", 400, "not acceptable JSON"),
    ("float", b'{"kind": "audit", "generation": 1.5}', 400, "float"),
    ("duplicate key", b'{"kind": "audit", "kind": "audit"}', 400, "duplicate"),
    ("scalar", b"42", 400, "one entry"),
    ("empty array", b"[]", 400, "empty"),
    ("unknown kind", b'{"kind": "payment"}', 400, "payment"),
    ("not an object in array", b'[{"kind":"x"}, 3]', 400, "entry 0"),
    ("invalid utf8", b'{"kind": "\xff"}', 400, "UTF-8"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "needle"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
async def test_bad_bodies_are_refused_clearly(
    api: Api, case: str, body: bytes, status: int, needle: str
) -> None:
    got, doc = await api.post("/v1/entries", body, AUTH)
    assert got == status, doc
    assert needle in doc["error"], doc
    assert (await api.checkpoint()).size == 0


def _mutations(api: Api) -> list[tuple[str, dict[str, Any], dict[str, str], int, str]]:
    good = _signed_json(api, 1)
    other = _signed_json(api, 2)
    audit_json = entry_to_json(audit(1))
    return [
        ("unknown field", {**good, "extra": 1}, {}, 400, "unknown field"),
        ("bad base64", {**good, "signature": "!!!"}, {}, 400, "base64"),
        ("short digest", {**good, "digest": "sha256:abcd"}, {}, 400, "digest"),
        ("long key id", {**good, "signer_key_id": "a" * 66}, {}, 400, "signer_key_id"),
        ("unknown signer", {**good, "signer_key_id": "b" * 64}, {}, 403, "publisher set"),
        ("wrong signature", {**good, "signature": other["signature"]}, {}, 403, "signature"),
        ("audit without token", audit_json, {}, 401, "Bearer"),
        ("audit with wrong token", audit_json, {"Authorization": "Bearer nope"}, 401, "token"),
    ]


async def test_bad_entries_are_refused_and_nothing_is_stored(api: Api) -> None:
    for case, doc, headers, status, needle in _mutations(api):
        got, answer = await api.post("/v1/entries", orjson.dumps(doc), headers)
        assert got == status, (case, answer)
        assert needle in answer["error"], (case, answer)
    assert (await api.checkpoint()).size == 0


async def test_large_signed_batch_names_its_first_bad_entry_and_stores_nothing(
    api: Api,
) -> None:
    # Over the offload threshold, signature checks run on several threads: the answer
    # must still name the lowest bad index, and the batch must stay all-or-nothing.
    docs = [_signed_json(api, i) for i in range(40)]
    for bad in (13, 31):
        docs[bad] = {**docs[bad], "signature": docs[bad + 1]["signature"]}
    status, answer = await api.post("/v1/entries", orjson.dumps(docs))
    assert status == 403, answer
    assert answer["error"].startswith("entry 13: publisher signature check failed"), answer
    assert (await api.checkpoint()).size == 0
    docs[13], docs[31] = _signed_json(api, 98), _signed_json(api, 99)  # fresh, valid
    status, answer = await api.post("/v1/entries", orjson.dumps(docs))
    assert status == 201, answer
    assert [r["index"] for r in answer["receipts"]] == list(range(40))


async def test_replay_is_409_naming_the_index(api: Api) -> None:
    body = orjson.dumps(_signed_json(api, 1))
    assert (await api.post("/v1/entries", body))[0] == 201
    status, doc = await api.post("/v1/entries", body)
    assert status == 409
    assert doc["index"] == 0
    assert "replay" in doc["error"]
    assert (await api.checkpoint()).size == 1


async def test_idempotent_audit_resubmission_is_200_with_the_same_index(api: Api) -> None:
    body = orjson.dumps(entry_to_json(audit(4)))
    first = await api.post("/v1/entries", body, AUTH)
    again = await api.post("/v1/entries", body, AUTH)
    assert first[0] == 201
    assert again[0] == 200
    assert again[1]["index"] == first[1]["index"]
    assert again[1]["existing"] is True


async def test_oversized_requests_are_413(api: Api) -> None:
    status, doc = await api.post("/v1/entries", b"[" + b" " * (70 * 1024) + b"]")
    assert status == 413
    assert "too large" in doc["error"]
    many = orjson.dumps([entry_to_json(audit(i)) for i in range(51)])
    status, doc = await api.post("/v1/entries", many, AUTH)
    assert status == 413
    assert "at most 50" in doc["error"]


BAD_QUERIES = [
    ("/v1/entries/abc", 400),
    ("/v1/entries/-1", 400),
    ("/v1/entries/0", 404),
    ("/v1/entries/99999999999999999999999", 400),
    ("/v1/entries?start=0", 404),
    ("/v1/entries?start=5&end=2", 400),
    ("/v1/entries", 400),
    ("/v1/proofs/inclusion?index=0&size=0", 400),
    ("/v1/proofs/inclusion?index=0", 400),
    ("/v1/proofs/inclusion?index=x&size=1", 400),
    ("/v1/proofs/consistency?from=0&to=1", 400),
    ("/v1/proofs/consistency?from=2&to=1", 400),
    ("/v1/blocks/0", 404),
    ("/v1/registrations", 400),
    ("/v1/registrations?digest=sha256:XYZ", 400),
    ("/v1/registrations?digest=sha256:" + "a" * 64 + "&limit=0", 400),
    ("/v1/revocations", 400),
    ("/v1/revocations?key_id=zz", 400),
    ("/v1/audit?namespace=default", 400),
    ("/v1/nothing", 404),
]


@pytest.mark.parametrize(("path", "status"), BAD_QUERIES)
async def test_bad_queries_get_json_4xx(api: Api, path: str, status: int) -> None:
    got, doc = await api.get(path)
    assert got == status, (path, doc)
    assert doc["error"], (path, doc)


async def test_wrong_method_is_405_json(api: Api) -> None:
    status, doc = await api.post("/v1/checkpoint", b"{}")
    assert status == 405
    assert "not allowed" in doc["error"]
