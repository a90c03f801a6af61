"""The verifying clients against real servers: verified answers, rollback and fork detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.ledger import TOKEN, LedgerThread, audit, make_keys, registration, service_config
from modeltrust.chain.client import (
    AsyncLedgerClient,
    EntryExistsError,
    LedgerClient,
    LedgerForkError,
    LedgerRollbackError,
    LedgerTrustError,
    LedgerUnavailableError,
)
from modeltrust.chain.entries import AuditEntry, Registration
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
    with (
        LedgerClient("http://127.0.0.1:9", verifier_key=keys.verifier_key) as c,
        pytest.raises(LedgerUnavailableError, match="unreachable"),
    ):
        c.checkpoint()


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
