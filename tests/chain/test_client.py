"""The verifying clients against real servers: verified answers, rollback and fork detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.dead_ends import SilentServer, StatusServer, closed_port
from harness.ledger import TOKEN, LedgerThread, audit, make_keys, registration, service_config
from harness.tampering_proxy import TamperingProxy, edit_json
from modeltrust.chain.client import (
    AsyncLedgerClient,
    EntryExistsError,
    LedgerClient,
    LedgerClientError,
    LedgerForkError,
    LedgerHTTPError,
    LedgerResponseError,
    LedgerRollbackError,
    LedgerTrustError,
    LedgerUnavailableError,
)
from modeltrust.chain.entries import AuditEntry, Registration
from modeltrust.chain.merkle import verify_inclusion
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.service import LedgerService
from modeltrust.chain.signatures import sign_revocation
from modeltrust.chain.trust_state import FileTrustStateStore, TrustedCheckpoint

pytestmark = pytest.mark.integration


def test_sync_client_appends_and_finds_verified_entries(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    trust = FileTrustStateStore(tmp_path / "trust.json")
    with (
        LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger,
        LedgerClient(
            ledger.url, verifier_key=keys.verifier_key, trust_store=trust, token=TOKEN
        ) as c,
    ):
        reg = registration(keys, 1)
        receipt = c.append(reg)
        assert receipt.index == 0
        assert not receipt.existing
        receipts = c.append_many([audit(i) for i in range(3)])
        assert [r.index for r in receipts] == [1, 2, 3]
        found = c.find_registrations(reg.digest)
        assert [(f.index, f.entry) for f in found] == [(0, reg)]
        assert found[0].checkpoint.size == 4
        assert isinstance(c.entry(2).entry, AuditEntry)
        trail = c.audit_trail(namespace="default", name="web")
        assert [t.index for t in trail] == [1, 2, 3]
        rev = sign_revocation(
            keys.publisher, target_kind="key", target=reg.signer_key_id, reason="lost"
        )
        c.append(rev)
        assert [
            r.entry for r in c.revocations_for(digest=reg.digest, key_id=reg.signer_key_id)
        ] == [rev]
        with pytest.raises(EntryExistsError) as caught:
            c.append(reg)
        assert caught.value.index == 0
        stored = trust.load()
        assert stored is not None
        assert stored.size == 5


def test_trust_file_detects_a_restored_older_database(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    db = tmp_path / "l.db"
    trust = FileTrustStateStore(tmp_path / "trust.json")
    with LedgerThread(service_config(keys, db)) as ledger:
        c = LedgerClient(ledger.url, verifier_key=keys.verifier_key, trust_store=trust, token=TOKEN)
        c.append_many([audit(i) for i in range(3)])
        c.close()
    backup = tmp_path / "backup.db"
    shutil.copy(db, backup)
    with LedgerThread(service_config(keys, db)) as ledger:
        c = LedgerClient(ledger.url, verifier_key=keys.verifier_key, trust_store=trust, token=TOKEN)
        c.append_many([audit(i) for i in range(3, 6)])
        assert c.checkpoint().size == 6
        c.close()
    shutil.copy(backup, db)  # the older copy comes back
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    with LedgerThread(service_config(keys, db)) as ledger:
        c = LedgerClient(ledger.url, verifier_key=keys.verifier_key, trust_store=trust, token=TOKEN)
        with pytest.raises(
            LedgerRollbackError, match="older than the verified checkpoint of size 6"
        ):
            c.checkpoint()
        # It grows past the trusted size with other entries: now it is a fork.
        fresh = LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN)
        fresh.append_many([audit(i) for i in range(100, 104)])
        with pytest.raises(LedgerForkError, match="not consistent"):
            c.checkpoint()
        with pytest.raises(LedgerTrustError):
            c.find_registrations("sha256:" + "0" * 64)
        c.close()
        fresh.close()
    final = trust.load()
    assert final is not None
    assert final.size == 6


def test_wrong_key_or_origin_is_refused(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger:
        other = NoteSigner.generate(keys.signer.name)
        with (
            LedgerClient(ledger.url, verifier_key=other.verifier_key()) as c,
            pytest.raises(LedgerTrustError, match="does not verify"),
        ):
            c.checkpoint()
        with (
            LedgerClient(ledger.url, verifier_key=keys.verifier_key, origin="elsewhere") as c,
            pytest.raises(LedgerTrustError),
        ):
            c.checkpoint()


def test_unreachable_ledger_is_a_clear_error(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        LedgerClient(url, verifier_key=keys.verifier_key) as c,
        pytest.raises(LedgerUnavailableError) as caught,
    ):
        c.checkpoint()
    assert str(caught.value) == (
        f"ledger at {url} did not answer: "
        "connection refused (nothing listens at that address and port)"
    )


class AsyncMemoryStore:
    def __init__(self) -> None:
        self.value: TrustedCheckpoint | None = None
        self.swaps = 0

    async def load(self) -> TrustedCheckpoint | None:
        return self.value

    async def compare_and_swap(
        self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint
    ) -> bool:
        if (self.value is None) != (expected is None) or (
            expected is not None and not expected.same_tree(self.value)
        ):
            return False
        self.value, self.swaps = new, self.swaps + 1
        return True


async def test_async_client_with_async_trust_store(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    service = LedgerService(service_config(keys, tmp_path / "l.db"))
    await service.start()
    store = AsyncMemoryStore()
    try:
        async with AsyncLedgerClient(
            service.url, verifier_key=keys.verifier_key, trust_store=store, token=TOKEN
        ) as c:
            reg = registration(keys, 9)
            r = await c.append(reg)
            await c.append(audit(1))
            found = await c.find_registrations(reg.digest)
            assert [(f.index, f.entry) for f in found] == [(r.index, reg)]
            assert isinstance(found[0].entry, Registration)
            trail = await c.audit_trail(uid="uid-1")
            assert len(trail) == 1
            assert (await c.checkpoint()).size == 2
            assert store.value is not None
            assert store.value.size == 2
            assert (await c.entry(1)).index == 1
    finally:
        await service.stop()


# -- a client that cannot be fooled: kept proofs, stale answers, answer and page caps, tokens


def test_verified_entries_keep_the_inclusion_proof_they_were_proven_with(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    with (
        LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger,
        LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c,
    ):
        reg = registration(keys, 1)
        c.append_many([audit(i) for i in range(5)])
        c.append(reg)
        for found in (c.find_registrations(reg.digest)[0], c.entry(5)):
            assert len(found.inclusion_proof) == 2  # leaf 5 of 6: leaf 4, then [0, 4)
            verify_inclusion(
                found.leaf_hash,
                found.index,
                found.checkpoint.size,
                found.inclusion_proof,
                found.checkpoint.checkpoint.root_hash,
            )


def test_a_stale_checkpoint_is_accepted_only_with_a_consistency_proof(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger:
        with LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append_many([audit(i) for i in range(3)])
            old_note = c.checkpoint().note
        refuse_proofs = False

        def stale(method: str, path_qs: str, status: int, body: bytes) -> tuple[int, bytes] | None:
            if path_qs == "/v1/checkpoint":
                return 200, old_note.encode()
            if refuse_proofs and path_qs.startswith("/v1/proofs/consistency"):
                return 400, b'{"error": "tree size 4 is not between 1 and the current size 3"}'
            return None

        trust = FileTrustStateStore(tmp_path / "trust.json")
        with (
            TamperingProxy(ledger.url, stale) as proxy,
            LedgerClient(proxy.url, verifier_key=keys.verifier_key, trust_store=trust) as c,
        ):
            fresh = LedgerClient(
                ledger.url, verifier_key=keys.verifier_key, trust_store=trust, token=TOKEN
            )
            fresh.append(audit(10, key="moves-trust-to-4"))
            fresh.close()
            # An answer older than the trusted checkpoint, provably a prefix of it: stale
            # (another request moved trust on meanwhile), not a rollback. "The latest
            # checkpoint" is then the trusted one: a stale answer never holds a caller back.
            latest = c.checkpoint()
            stored = trust.load()
            assert stored is not None
            assert latest.size == stored.size == 4
            assert latest.note == stored.note
            assert c.audit_trail(uid="uid-1")[0].checkpoint.size == 4  # lookups carry their own
            refuse_proofs = True  # a ledger that was rolled back cannot prove it
            with pytest.raises(LedgerRollbackError, match="older than the verified checkpoint"):
                c.checkpoint()


def test_answers_larger_than_the_cap_are_refused(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger:
        with LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append_many([audit(i) for i in range(50)])
        with LedgerClient(ledger.url, verifier_key=keys.verifier_key, max_response_bytes=4096) as c:
            assert c.checkpoint().size == 50  # small answers still pass
            with pytest.raises(LedgerResponseError, match="larger than 4096 bytes"):
                c.audit_trail(uid="uid-1")
            assert c.checkpoint().size == 50  # the connection was dropped, not left dirty


async def test_the_async_client_refuses_answers_larger_than_the_cap(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    service = LedgerService(service_config(keys, tmp_path / "l.db"))
    await service.start()
    try:
        async with AsyncLedgerClient(service.url, verifier_key=keys.verifier_key, token=TOKEN) as w:
            await w.append_many([audit(i) for i in range(50)])
        async with AsyncLedgerClient(
            service.url, verifier_key=keys.verifier_key, max_response_bytes=4096
        ) as c:
            with pytest.raises(LedgerResponseError, match="larger than 4096 bytes"):
                await c.audit_trail(uid="uid-1")
            assert (await c.checkpoint()).size == 50
    finally:
        await service.stop()


def test_lookups_stop_at_the_page_cap(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger:
        with LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append_many([audit(i) for i in range(1001)])
            assert len(c.audit_trail(uid="uid-1")) == 1001  # two pages
        with (
            LedgerClient(ledger.url, verifier_key=keys.verifier_key, max_lookup_pages=1) as c,
            pytest.raises(LedgerClientError, match="more than 1 pages"),
        ):
            c.audit_trail(uid="uid-1")

        def loop(method: str, path_qs: str, status: int, body: bytes) -> tuple[int, bytes] | None:
            if path_qs.startswith("/v1/audit"):
                return status, edit_json(body, lambda doc: doc.update(next_after=0))
            return None

        with (
            TamperingProxy(ledger.url, loop) as proxy,
            LedgerClient(proxy.url, verifier_key=keys.verifier_key) as c,
            pytest.raises(LedgerResponseError, match="next_after is not an index past"),
        ):
            c.audit_trail(uid="uid-1")


async def test_the_token_is_read_for_every_write(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    service = LedgerService(service_config(keys, tmp_path / "l.db"))
    await service.start()
    current = ["rotated-away"]
    try:
        async with AsyncLedgerClient(
            service.url, verifier_key=keys.verifier_key, token=lambda: current[0]
        ) as c:
            with pytest.raises(LedgerHTTPError, match="401"):
                await c.append(audit(1))
            current[0] = TOKEN  # the token file was rotated: the same client picks it up
            assert (await c.append(audit(1))).index == 0
    finally:
        await service.stop()


def test_a_ledger_that_does_not_answer_is_a_timeout_in_words(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    with (
        SilentServer() as silent,
        LedgerClient(silent.url, verifier_key=keys.verifier_key, timeout=0.5) as c,
        pytest.raises(LedgerUnavailableError) as caught,
    ):
        c.checkpoint()
    assert (
        str(caught.value)
        == f"ledger at {silent.url} did not answer: no answer within 0.5 s (timed out)"
    )


async def test_the_async_client_says_what_failed_in_words(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    url = f"http://127.0.0.1:{closed_port()}"
    async with AsyncLedgerClient(url, verifier_key=keys.verifier_key) as c:
        with pytest.raises(LedgerUnavailableError) as caught:
            await c.checkpoint()
    message = str(caught.value)
    assert message == (
        f"ledger at {url} did not answer: "
        "connection refused (nothing listens at that address and port)"
    )
    with SilentServer() as silent:
        async with AsyncLedgerClient(silent.url, verifier_key=keys.verifier_key, timeout=0.5) as c:
            with pytest.raises(LedgerUnavailableError) as caught:
                await c.checkpoint()
    message = str(caught.value)
    assert message == f"ledger at {silent.url} did not answer: no answer within 0.5 s (timed out)"
    for internal in ("ClientConnectorError", "ConnectionKey", "TimeoutError", "Errno"):
        assert internal not in message


async def test_an_http_error_page_is_named_by_status_in_one_line(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    page = "<html>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n"
    with StatusServer(502, "Bad Gateway", page) as proxy:
        async with AsyncLedgerClient(proxy.url, verifier_key=keys.verifier_key) as c:
            with pytest.raises(LedgerHTTPError) as caught:
                await c.checkpoint()
    assert str(caught.value) == (
        "ledger answered 502 Bad Gateway: <html> <body> <h1>502 Bad Gateway</h1> </body> </html>"
    )
