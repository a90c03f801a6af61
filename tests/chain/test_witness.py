"""Witnesses on loopback: a real ledger with two real witnesses (`WitnessService`), the
ledger sending them its checkpoints (C2SP tlog-witness) and serving their cosignatures.

What a user checks: every append's receipt and GET /v1/checkpoint carry both witnesses'
cosignatures, with their time; a witness that was down catches up, verifies and cosigns
again; a witness's copy that was edited on disk is found by its own audit; a checkpoint
signed by the log's key that contradicts a witness's copy is refused, kept as evidence
(served, counted in a metric), and nothing is cosigned until the evidence is acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from harness.dead_ends import SilentServer
from harness.ledger import (
    TOKEN,
    LedgerKeys,
    audit,
    free_port,
    make_keys,
    registration,
    service_config,
)
from harness.witness import WitnessSetup
from modeltrust.chain.checkpoint import (
    Checkpoint,
    sign_checkpoint,
    verify_checkpoint,
    witness_cosignatures,
)
from modeltrust.chain.client import AsyncLedgerClient, LedgerUnavailableError
from modeltrust.chain.cosigning import WitnessEndpoint
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.errors import UnknownVerifierError
from modeltrust.chain.merkle import consistency_proof, hash_from_b64, verify_consistency
from modeltrust.chain.note import NoteVerifier, parse_note, parse_signature_lines
from modeltrust.chain.sequencer import Sequencer, SignedCheckpoint, Submission
from modeltrust.chain.server import LedgerAPI
from modeltrust.chain.service import LedgerService
from modeltrust.chain.storage import SQLiteLedgerStore
from modeltrust.chain.tlog_witness import SIZE_CONTENT_TYPE, AddCheckpoint
from modeltrust.chain.trust_state import LedgerEquivocationError
from modeltrust.chain.witness import (
    WitnessLockedError,
    WitnessService,
    WitnessStoreDamagedError,
    acknowledge_evidence,
)
from modeltrust.cli.main import main as cli

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Deployment:
    keys: LedgerKeys
    ledger: LedgerService
    setups: dict[str, WitnessSetup]
    witnesses: dict[str, WitnessService | None]
    session: aiohttp.ClientSession
    overrides: dict[str, Any]

    @property
    def log_key(self) -> NoteVerifier:
        return self.keys.signer.verifier()

    def verifiers(self, *names: str) -> list[NoteVerifier]:
        return [self.setups[n].verifier for n in names or sorted(self.setups)]

    async def start_witness(self, name: str, **overrides: object) -> WitnessService:
        setup = self.setups[name]
        cfg = setup.config(self.ledger.url, self.log_key, **{**self.overrides, **overrides})
        service = WitnessService(cfg)
        await service.start()
        self.witnesses[name] = service
        return service

    async def stop_witness(self, name: str) -> None:
        service = self.witnesses.pop(name, None)
        if service is not None:
            await service.stop()

    async def append(self, *entries: Any) -> dict[str, Any]:
        body = orjson.dumps([entry_to_json(e) for e in entries])
        async with self.session.post(self.ledger.url + "/v1/entries", data=body, headers=AUTH) as r:
            doc = await r.json()
            assert r.status == 201, doc
            assert isinstance(doc, dict)
            return doc

    async def get(self, url: str) -> tuple[int, str]:
        async with self.session.get(url) as r:
            return r.status, await r.text()

    async def checkpoint(self, url: str | None = None) -> str:
        status, note = await self.get((url or self.ledger.url) + "/v1/checkpoint")
        assert status == 200, note
        return note

    async def add_checkpoint(self, name: str, old: int, note: str, proof: list[bytes] | None = None
                             ) -> tuple[int, str, str]:  # fmt: skip
        body = AddCheckpoint(old, tuple(proof or ()), note).encode()
        url = self.setups[name].url + "/add-checkpoint"
        async with self.session.post(url, data=body) as r:
            return r.status, r.content_type, await r.text()


def cosigners(note: str, verifiers: list[NoteVerifier]) -> dict[str, int | None]:
    return {c.name: c.timestamp for c in witness_cosignatures(note, verifiers)}


async def eventually(what: str, check: Callable[[], Awaitable[Any]], within: float = 20) -> Any:
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


@pytest.fixture
async def d(tmp_path: Path) -> AsyncIterator[Deployment]:
    """A ledger sending its checkpoints to witnesses "a" and "b", both running."""
    keys = make_keys(tmp_path / "keys")
    setups = {n: WitnessSetup(f"witness-{n}.test", tmp_path / f"witness-{n}") for n in "ab"}
    cfg = service_config(
        keys,
        tmp_path / "ledger.db",
        witnesses=tuple(s.endpoint() for s in setups.values()),
        witness_timeout=2.0,
        witness_refresh=0.5,
    )
    ledger = LedgerService(cfg)
    await ledger.start()
    async with aiohttp.ClientSession() as session:
        d = Deployment(keys, ledger, setups, {}, session, {})
        try:
            for name in setups:
                await d.start_witness(name)
            yield d
        finally:
            for name in list(d.witnesses):
                await d.stop_witness(name)
            await ledger.stop()


async def test_appends_are_answered_with_both_witnesses_cosignatures(d: Deployment) -> None:
    before = int(time.time())
    doc = await d.append(registration(d.keys, 1), audit(2))
    note = doc["checkpoint"]
    cp = verify_checkpoint(note, d.log_key, witnesses=d.verifiers(), witness_quorum=2)
    assert cp.size == 2
    stamps = cosigners(note, d.verifiers())
    assert set(stamps) == {"witness-a.test", "witness-b.test"}
    assert all(s is not None and before - 1 <= s <= time.time() + 1 for s in stamps.values())
    # Readers get the same cosigned checkpoint, from the ledger and from either witness.
    assert set(cosigners(await d.checkpoint(), d.verifiers())) == set(stamps)
    for name, setup in d.setups.items():
        served = await eventually(
            f"witness {name} to serve the checkpoint with both cosignatures",
            lambda s=setup: _with_cosigners(d, s.url, 2),  # type: ignore[misc]
        )
        assert verify_checkpoint(served, d.log_key).size == 2


async def _with_cosigners(d: Deployment, url: str, count: int) -> str | None:
    note = await d.checkpoint(url)
    return note if len(cosigners(note, d.verifiers())) == count else None


async def test_concurrent_appends_get_cosigned_receipts_that_prove_them(d: Deployment) -> None:
    # Blocks sealed while the witnesses cosign an earlier one are covered by the next
    # round: their receipts are proven again at the cosigned checkpoint's size. The
    # verifying client checks every one of those proofs.
    client = AsyncLedgerClient(d.ledger.url, verifier_key=d.keys.verifier_key, token=TOKEN)
    try:
        receipts = await asyncio.gather(*(client.append(audit(i)) for i in range(40)))
    finally:
        await client.close()
    assert sorted(r.index for r in receipts) == list(range(40))
    for r in receipts:
        assert set(cosigners(r.checkpoint.note, d.verifiers())) == {
            "witness-a.test",
            "witness-b.test",
        }
        assert r.checkpoint.size > r.index


class LaterRound:
    """A Cosigner whose round ends after more blocks were sealed (what a slow witness round
    does): it publishes the newer checkpoint, so the receipts must be proven again."""

    def __init__(self, sequencer: Sequencer) -> None:
        self.sequencer = sequencer

    @property
    def published(self) -> SignedCheckpoint:
        return self.sequencer.latest

    async def wait_published(self, size: int) -> SignedCheckpoint | None:
        for i in range(3):
            await self.sequencer.submit([Submission.of(audit(1000 + size * 10 + i))])
        return self.sequencer.latest


async def test_receipts_published_at_a_newer_checkpoint_are_proven_at_its_size(
    tmp_path: Path,
) -> None:
    keys = make_keys(tmp_path / "keys")
    service = LedgerService(service_config(keys, tmp_path / "l.db"))
    await service.start()
    assert service.sequencer is not None
    reader = SQLiteLedgerStore(tmp_path / "l.db", writer=False)
    api = LedgerAPI(
        service.sequencer, reader, publishers=service.config.publishers,
        tokens=service.config.tokens, verifier_key=keys.verifier_key, origin=keys.signer.name,
        metrics=service.metrics, cosigner=LaterRound(service.sequencer),
    )  # fmt: skip
    runner = web.AppRunner(api.application())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = AsyncLedgerClient(f"http://127.0.0.1:{port}", verifier_key=keys.verifier_key,
                               token=TOKEN)  # fmt: skip
    try:
        one = await client.append(registration(keys, 1))
        assert (one.index, one.checkpoint.size) == (0, 4)  # proven at size 4, not 1
        many = await client.append_many([audit(i) for i in range(5)])
        assert [r.index for r in many] == list(range(4, 9))
        assert {r.checkpoint.size for r in many} == {12}
    finally:
        await client.close()
        await runner.cleanup()
        reader.close()
        await service.stop()


async def test_a_witness_serves_the_read_api_from_its_own_verified_copy(d: Deployment) -> None:
    reg = registration(d.keys, 7)
    await d.append(reg, audit(8, uid="uid-w"))
    url = d.setups["a"].url
    await eventually("witness a to cosign size 2", lambda: _with_cosigners(d, url, 2))
    client = AsyncLedgerClient(url, verifier_key=d.keys.verifier_key)
    try:
        found = await client.find_registrations(reg.digest)
        assert [f.entry for f in found] == [reg]
        assert [a.entry.uid for a in await client.audit_trail(uid="uid-w")] == ["uid-w"]  # type: ignore[union-attr]
        assert (await client.entry(0)).entry == reg
    finally:
        await client.close()
    # It is a copy: appends go to the ledger.
    async with d.session.post(url + "/v1/entries", data=b"{}") as r:
        assert r.status == 403
        assert "read-only copy" in (await r.json())["error"]
    _status, keys = await d.get(url + "/v1/keys")
    assert json.loads(keys)["checkpoint_verifier_key"] == d.keys.verifier_key


async def test_a_stopped_witness_catches_up_verifies_and_cosigns_again(d: Deployment) -> None:
    await d.append(audit(1))
    await d.stop_witness("b")
    started = time.monotonic()
    doc = await d.append(*(audit(i) for i in range(10, 40)))
    assert time.monotonic() - started < 2.0, "an append waited for the stopped witness"
    assert set(cosigners(doc["checkpoint"], d.verifiers())) == {"witness-a.test"}
    for i in range(3):  # several blocks while it is away
        await d.append(audit(100 + i))
    ledger_size = d.ledger.sequencer.latest.size  # type: ignore[union-attr]
    b = await d.start_witness("b")
    note = await eventually(
        "the ledger to publish witness b's cosignature again",
        lambda: _with_cosigners(d, d.ledger.url, 2),
    )
    assert verify_checkpoint(note, d.log_key).size == ledger_size
    # b copied every block it missed, each one verified, before cosigning.
    assert b.copy.size == ledger_size
    _status, text = await d.get(d.setups["b"].url + "/v1/witness")
    assert json.loads(text)["cosigned"]["tree_size"] == ledger_size
    # And it keeps cosigning new appends.
    doc = await d.append(audit(200))
    assert set(cosigners(doc["checkpoint"], d.verifiers())) == {"witness-a.test", "witness-b.test"}


async def test_the_ledger_cosigns_again_while_idle_so_cosignatures_stay_fresh(
    d: Deployment,
) -> None:
    await d.append(audit(1))
    first = cosigners(await d.checkpoint(), d.verifiers())
    await asyncio.sleep(2.1)  # refresh is 0.5 s; cosignature times are whole seconds
    later = cosigners(await d.checkpoint(), d.verifiers())
    assert set(later) == set(first)
    assert all(later[n] > first[n] for n in first)  # type: ignore[operator]


async def test_a_tampered_copy_is_found_by_the_witnesss_own_audit(d: Deployment) -> None:
    await d.stop_witness("b")
    b = await d.start_witness("b", audit_interval=0.3)
    await d.append(audit(1), audit(2), audit(3))
    await eventually("witness b to copy 3 entries", lambda: _copied(b, 3))
    db = d.setups["b"].state_dir / "copy.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE entries SET data = CAST(? AS BLOB) WHERE idx = 1", (b'{"x":1}',))
    status, text = await eventually(
        "witness b's audit to find the edit", lambda: _not_ready(d, d.setups["b"].url)
    )
    assert status == 503
    assert "entry 1" in text
    assert "does not verify" in text
    status, metrics = await d.get(d.setups["b"].url + "/metrics")
    assert "modeltrust_witness_store_verified 0.0" in metrics
    # It cosigns nothing meanwhile: the next checkpoint carries a's cosignature only.
    doc = await d.append(audit(4))
    assert set(cosigners(doc["checkpoint"], d.verifiers())) == {"witness-a.test"}
    # Nor does it serve the edited entry.
    status, text = await d.get(d.setups["b"].url + "/v1/entries/1")
    assert status == 500
    assert "entry 1" in text
    # Restarted on the same copy, it refuses to start, naming the damage.
    await d.stop_witness("b")
    with pytest.raises(WitnessStoreDamagedError, match="entry 1"):
        await d.start_witness("b")


async def _copied(w: WitnessService, size: int) -> bool:
    return w.copy.size >= size


async def _not_ready(d: Deployment, url: str) -> tuple[int, str] | None:
    status, text = await d.get(url + "/readyz")
    return (status, text) if status == 503 else None


def forged(d: Deployment, size: int, marker: bytes = b"forged") -> str:
    """A checkpoint the ledger's key signed for a tree the ledger does not have."""
    root = (marker * 32)[:32]
    return sign_checkpoint(Checkpoint(d.keys.signer.name, size, root), d.keys.signer)


async def test_a_split_view_is_refused_kept_as_evidence_and_stops_cosigning(
    d: Deployment,
) -> None:
    await d.append(audit(1), audit(2))
    await d.append(audit(3))
    size = 3
    honest = await eventually(
        "both witnesses to cosign size 3", lambda: _with_cosigners(d, d.ledger.url, 2)
    )
    assert verify_checkpoint(honest, d.log_key).size == size
    # The log's key signs another tree of the same size, shown to witness a.
    other = forged(d, size)
    status, ctype, body = await d.add_checkpoint("a", size, other)
    assert (status, ctype, body) == (409, SIZE_CONTENT_TYPE, f"{size}\n")
    status, text = await d.get(d.setups["a"].url + "/v1/witness/evidence")
    evidence = json.loads(text)
    assert evidence["split_view"] is True
    (item,) = evidence["evidence"]
    notes = item["checkpoints"]
    cps = [verify_checkpoint(n, d.log_key) for n in notes]  # both signed by the log's key
    assert {c.size for c in cps} == {size}
    assert cps[0].root_hash != cps[1].root_hash
    assert parse_note(other)[0] in {parse_note(n)[0] for n in notes}
    status, metrics = await d.get(d.setups["a"].url + "/metrics")
    assert "modeltrust_witness_split_view 1.0" in metrics
    # From now on a cosigns nothing for this log, not even the honest next checkpoint.
    doc = await d.append(audit(4))
    assert set(cosigners(doc["checkpoint"], d.verifiers())) == {"witness-b.test"}
    status, _, body = await d.add_checkpoint("a", size, log_only(doc["checkpoint"], d), [])
    assert status == 403
    assert "split-view evidence" in body
    # Acknowledging needs the witness stopped; then it cosigns again.
    with pytest.raises(WitnessLockedError):
        acknowledge_evidence(d.setups["a"].state_dir)
    await d.stop_witness("a")
    result = CliRunner().invoke(
        cli, ["ledger", "witness-acknowledge", "--state", str(d.setups["a"].state_dir)]
    )
    assert result.exit_code == 0, result.output
    assert f"acknowledged {item['id']}" in result.output
    assert (d.setups["a"].state_dir / "evidence" / "acknowledged" / f"{item['id']}.json").exists()
    await d.start_witness("a")
    await eventually("witness a to cosign again", lambda: _with_cosigners(d, d.ledger.url, 2))
    status, metrics = await d.get(d.setups["a"].url + "/metrics")
    assert "modeltrust_witness_split_view 0.0" in metrics


def log_only(note: str, d: Deployment) -> str:
    text, sigs = parse_note(note)
    mine = [s for s in sigs if s.name == d.keys.signer.name]
    return text + "\n" + "".join(s.line() for s in mine)


async def test_split_view_evidence_at_an_older_size_carries_a_checkable_proof(
    d: Deployment,
) -> None:
    await d.append(audit(0), audit(1), audit(2))  # one block ending at 3
    await d.append(audit(3), audit(4))  # one ending at 5: no checkpoint of size 2 exists
    a = d.witnesses["a"]
    assert a is not None
    await eventually("witness a to copy 5 entries", lambda: _copied(a, 5))
    other = forged(d, 2)
    status, ctype, _body = await d.add_checkpoint("a", 0, other)
    assert (status, ctype) == (409, SIZE_CONTENT_TYPE)
    status, text = await d.get(d.setups["a"].url + "/v1/witness/evidence")
    (item,) = json.loads(text)["evidence"]
    # Anyone can check it: the copy's head is signed by the log, and the proof shows the
    # log's tree has another root at size 2 than the forged checkpoint.
    head = verify_checkpoint(item["checkpoints"][0], d.log_key)
    assert verify_checkpoint(item["checkpoints"][1], d.log_key).size == 2
    proof = item["proof"]
    assert (proof["from"], proof["to"]) == (2, head.size)
    root_at_2 = hash_from_b64(proof["root_at_from"], "root")
    hashes = [base64.b64decode(h) for h in proof["consistency_proof"]]
    verify_consistency(2, head.size, hashes, root_at_2, head.root_hash)
    assert root_at_2 != verify_checkpoint(other, d.log_key).root_hash


async def test_a_hung_witness_delays_appends_by_its_timeout_only(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    setup = WitnessSetup("witness-a.test", tmp_path / "witness-a")
    hung_key = WitnessSetup("witness-hung.test", tmp_path / "hung").verifier
    with SilentServer() as hung:
        cfg = service_config(
            keys,
            tmp_path / "ledger.db",
            witnesses=(setup.endpoint(), WitnessEndpoint(hung.url, hung_key)),
            witness_timeout=0.5,
            witness_refresh=30.0,
        )
        ledger = LedgerService(cfg)
        await ledger.start()
        async with aiohttp.ClientSession() as session:
            d = Deployment(keys, ledger, {"a": setup}, {}, session, {})
            try:
                await d.start_witness("a")
                await d.append(audit(0))
                started = time.monotonic()
                doc = await d.append(audit(1))
                took = time.monotonic() - started
                # One round: a answers at once, the hung one is given up on after 0.5 s.
                assert took < 2.0
                assert set(cosigners(doc["checkpoint"], [setup.verifier, hung_key])) == {
                    "witness-a.test"
                }
                _status, text = await d.get(ledger.url + "/metrics")
                assert (
                    'modeltrust_ledger_witness_requests_total{outcome="unreachable",'
                    'witness="witness-hung.test"}'
                ) in text
            finally:
                await d.stop_witness("a")
                await ledger.stop()


@pytest.fixture
async def lone(tmp_path: Path) -> AsyncIterator[Deployment]:
    """A ledger without configured witnesses and one witness copying it: the test speaks
    tlog-witness to the witness itself."""
    keys = make_keys(tmp_path / "keys")
    setups = {"a": WitnessSetup("witness-a.test", tmp_path / "witness-a")}
    ledger = LedgerService(service_config(keys, tmp_path / "ledger.db"))
    await ledger.start()
    async with aiohttp.ClientSession() as session:
        d = Deployment(keys, ledger, setups, {}, session, {})
        try:
            await d.start_witness("a")
            yield d
        finally:
            await d.stop_witness("a")
            await ledger.stop()


async def test_the_witness_speaks_c2sp_tlog_witness(lone: Deployment) -> None:
    d = lone
    await d.append(audit(1), audit(2))
    first = await d.checkpoint()  # the ledger's own: no witnesses configured
    verifier = d.setups["a"].verifier
    # A first request with old size 0 gets the cosignature line.
    status, ctype, body = await d.add_checkpoint("a", 0, first)
    assert status == 200, body
    (line,) = parse_signature_lines(body)
    assert line.name == "witness-a.test"
    cosigned = first + line.line()
    verify_checkpoint(cosigned, d.log_key, witnesses=[verifier], witness_quorum=1)
    # A stale old size: 409 with the size it holds, as text/x.tlog.size.
    status, ctype, body = await d.add_checkpoint("a", 0, first)
    assert (status, ctype, body) == (409, SIZE_CONTENT_TYPE, "2\n")
    # The same checkpoint again (old = its size, no proof): cosigned again.
    status, _, body = await d.add_checkpoint("a", 2, first)
    assert status == 200
    # A newer one needs a consistency proof that verifies: 422 otherwise, 200 with it.
    await d.append(audit(3), audit(4), audit(5))
    newer = await d.checkpoint()
    status, _, body = await d.add_checkpoint("a", 2, newer, [b"\x00" * 32])
    assert status == 422, body
    store = SQLiteLedgerStore(d.ledger.config.db, writer=False)
    try:
        proof = consistency_proof(2, 5, store)
    finally:
        store.close()
    status, _, body = await d.add_checkpoint("a", 2, newer, proof)
    assert status == 200, body
    # Old size above the checkpoint's: 400. Another origin: 404. Not the log's key: 403.
    assert (await d.add_checkpoint("a", 9, newer))[0] == 400
    stranger = make_keys(d.setups["a"].state_dir.parent / "stranger", origin="other.test/log")
    alien = sign_checkpoint(Checkpoint("other.test/log", 5, b"\x01" * 32), stranger.signer)
    assert (await d.add_checkpoint("a", 5, alien))[0] == 404
    impostor = make_keys(d.setups["a"].state_dir.parent / "imp", origin=d.keys.signer.name)
    fake = sign_checkpoint(Checkpoint(d.keys.signer.name, 5, b"\x01" * 32), impostor.signer)
    status, _, body = await d.add_checkpoint("a", 5, fake)
    assert status == 403, body
    assert (await d.add_checkpoint("a", 0, "not a note"))[0] == 400


async def test_a_witness_refuses_a_checkpoint_beyond_what_the_log_serves_it(
    lone: Deployment,
) -> None:
    d = lone
    await d.append(audit(1))
    ahead = forged(d, 50)  # signed by the log's key, but no block of the log reaches 50
    status, _, body = await d.add_checkpoint("a", 0, ahead)
    assert status == 503, body
    assert "holds 1 entries" in body
    # A refusal is not evidence: a witness cannot tell a lagging log from a lying one.
    status, text = await d.get(d.setups["a"].url + "/v1/witness/evidence")
    assert json.loads(text)["evidence"] == []


async def test_a_checkpoint_without_the_witnesses_fails_a_quorum(lone: Deployment) -> None:
    # The ledger has no witnesses configured: its checkpoint carries its own signature only.
    await lone.append(audit(1))
    note = await lone.checkpoint()
    with pytest.raises(UnknownVerifierError):
        verify_checkpoint(note, lone.log_key, witnesses=lone.verifiers(), witness_quorum=1)


# --- reading from witnesses when the ledger is down (the operator's spec.ledger.mirrors) ---


async def _ledger_on(d: Deployment, db: Path, *entries: Any) -> LedgerService:
    """Another real ledger signing with the same key, on a store of its own."""
    other = LedgerService(service_config(d.keys, db))
    await other.start()
    if entries:
        body = orjson.dumps([entry_to_json(e) for e in entries])
        async with d.session.post(other.url + "/v1/entries", data=body, headers=AUTH) as r:
            assert r.status == 201, await r.text()
    return other


async def test_reads_move_to_a_witness_while_the_ledger_is_down(d: Deployment) -> None:
    reg = registration(d.keys, 3)
    await d.append(reg, audit(4))
    witness = d.setups["a"].url
    await eventually("witness a to copy size 2", lambda: _with_cosigners(d, witness, 2))
    client = AsyncLedgerClient(
        d.ledger.url, verifier_key=d.keys.verifier_key, token=TOKEN, mirrors=[witness]
    )
    try:
        assert (await client.checkpoint()).size == 2
        assert client.answered_by == d.ledger.url
        await d.ledger.stop()
        found = await client.find_registrations(reg.digest)
        assert [f.entry for f in found] == [reg]
        assert client.answered_by == witness
        # Appends never go to a copy: the ledger's absence is the answer.
        with pytest.raises(LedgerUnavailableError, match=d.ledger.url):
            await client.append(audit(5))
    finally:
        await client.close()


async def test_a_mirror_behind_the_verified_checkpoint_is_skipped_not_judged(
    d: Deployment, tmp_path: Path
) -> None:
    """A copy behind what the client verified cannot prove it a prefix. From the ledger that
    is a rollback; from a mirror it only means that copy cannot serve yet."""
    await d.append(audit(1))
    behind = await _ledger_on(d, tmp_path / "behind.db", audit(1))  # size 1, same key
    await d.append(audit(2), audit(3))
    witness = d.setups["a"].url
    await eventually("witness a to copy size 3", lambda: _with_cosigners(d, witness, 2))
    client = AsyncLedgerClient(
        d.ledger.url, verifier_key=d.keys.verifier_key, mirrors=[behind.url, witness]
    )
    alone = AsyncLedgerClient(d.ledger.url, verifier_key=d.keys.verifier_key, mirrors=[behind.url])
    try:
        assert (await client.checkpoint()).size == 3
        assert (await alone.checkpoint()).size == 3
        await d.ledger.stop()
        assert (await client.checkpoint()).size == 3
        assert client.answered_by == witness
        with pytest.raises(LedgerUnavailableError) as caught:
            await alone.checkpoint()
        assert f"mirror {behind.url}" in str(caught.value)
        assert "older than the verified checkpoint of size 3" in str(caught.value)
    finally:
        await client.close()
        await alone.close()
        await behind.stop()


async def test_a_mirror_relaying_a_second_signed_tree_of_one_size_is_evidence(
    d: Deployment, tmp_path: Path
) -> None:
    """Two checkpoints of one size with different roots, both signed by the ledger's key,
    prove the ledger forked whoever relays the second: that is never skipped."""
    await d.append(audit(1), audit(2))
    fork = await _ledger_on(d, tmp_path / "fork.db", audit(7), audit(8))
    client = AsyncLedgerClient(d.ledger.url, verifier_key=d.keys.verifier_key, mirrors=[fork.url])
    try:
        assert (await client.checkpoint()).size == 2
        await d.ledger.stop()
        with pytest.raises(LedgerEquivocationError, match="different root"):
            await client.checkpoint()
    finally:
        await client.close()
        await fork.stop()


async def test_a_tampered_mirror_is_caught_by_the_reader_and_the_next_one_answers(
    d: Deployment,
) -> None:
    """An edited copy (its own audit not run yet) serves an entry no proof can carry: the
    reader finds it and moves on, and never takes it for the ledger's fault."""
    reg = registration(d.keys, 9)
    await d.append(reg, audit(1))
    a, b = d.setups["a"].url, d.setups["b"].url
    for url in (a, b):
        await eventually(f"{url} to copy size 2", functools.partial(_with_cosigners, d, url, 2))
    client = AsyncLedgerClient(d.ledger.url, verifier_key=d.keys.verifier_key, mirrors=[a, b])
    only_a = AsyncLedgerClient(d.ledger.url, verifier_key=d.keys.verifier_key, mirrors=[a])
    try:
        assert (await client.checkpoint()).size == (await only_a.checkpoint()).size == 2
        await d.ledger.stop()
        edited = entry_to_json(registration(d.keys, 10))
        with sqlite3.connect(d.setups["a"].state_dir / "copy.db") as conn:
            conn.execute("UPDATE entries SET data = ? WHERE idx = 0", (orjson.dumps(edited),))
        found = await client.find_registrations(reg.digest)
        assert [f.entry for f in found] == [reg]
        assert client.answered_by == b
        with pytest.raises(LedgerUnavailableError) as caught:
            await only_a.entry(0)
        assert f"mirror {a}" in str(caught.value)
    finally:
        await client.close()
        await only_a.close()
