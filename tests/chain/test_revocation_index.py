"""The revocation index's own rules (reading the log is tested against a real ledger in
tests/operator/integration/test_ledger_access.py)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from modeltrust.chain.checkpoint import Checkpoint
from modeltrust.chain.client import AsyncLedgerClient, LoggedEntry, VerifiedCheckpoint
from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import Registration, Revocation
from modeltrust.chain.merkle import empty_root
from modeltrust.chain.revocation_index import IncompleteLookup, RevocationIndex
from modeltrust.chain.trust_state import LedgerForkError

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
KEY = "a1" * 32


def checkpoint(size: int, root: bytes) -> VerifiedCheckpoint:
    return VerifiedCheckpoint(Checkpoint("ledger.test", size, root), "note")


class NoClient:
    async def tail(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing should be read")


async def test_another_root_at_the_covered_size_is_a_fork() -> None:
    index = RevocationIndex()
    client = cast(AsyncLedgerClient, NoClient())
    await index.advance(client, checkpoint(0, empty_root()))  # same tree: nothing to read
    with pytest.raises(LedgerForkError, match="another root"):
        await index.advance(client, checkpoint(0, b"\x01" * 32))
    assert index.size == 0


def registration_at(index: int) -> LoggedEntry:
    reg = Registration("m", "1", DIGEST, 1, "onnx", KEY, "modeltrust-v1", "c2ln")
    return LoggedEntry(index, reg, b"\x00" * 32)


def found(index: int) -> VerifiedEntry:
    le = registration_at(index)
    return VerifiedEntry(index, le.entry, le.leaf_hash, checkpoint(10, b"\x00" * 32))


def test_the_registration_lookup_must_hold_every_registration_below_its_size() -> None:
    index = RevocationIndex()
    index._add([registration_at(2), registration_at(7)])
    index.require_all_registrations(DIGEST, [found(2), found(7)], below=10)
    index.require_all_registrations(DIGEST, [found(2)], below=7)  # 7 is newer than the answer
    with pytest.raises(IncompleteLookup, match="at index 7"):
        index.require_all_registrations(DIGEST, [found(2)], below=8)
    index.require_all_registrations("sha256:" + "cd" * 32, [], below=10)


def test_revocations_are_found_by_digest_and_by_key_once_each() -> None:
    index = RevocationIndex()
    by_digest = Revocation("digest", DIGEST, "r", KEY, "2025-01-01T00:00:00Z", "c2ln")
    by_key = Revocation("key", KEY, "r", KEY, "2025-01-01T00:00:00Z", "c2ln")
    index._add([LoggedEntry(5, by_key, b"\x00" * 32), LoggedEntry(3, by_digest, b"\x00" * 32)])
    assert [le.index for le in index.revocations(DIGEST, [KEY, KEY])] == [3, 5]
    assert index.revocations("sha256:" + "cd" * 32, []) == []


def test_revocations_since_gives_each_revocation_once_in_ledger_order() -> None:
    index = RevocationIndex()
    revs = [
        Revocation("digest", DIGEST, "r", KEY, "2025-01-01T00:00:00Z", "c2ln"),
        Revocation("key", KEY, "r", KEY, "2025-01-01T00:00:00Z", "c2ln"),
    ]
    index._add([registration_at(1), LoggedEntry(3, revs[0], b"\x00" * 32)])
    index._add([LoggedEntry(8, revs[1], b"\x00" * 32)])
    found, covered = index.revocations_since(0)
    assert [le.index for le in found] == [3, 8]
    assert covered == index.size
    assert [le.index for le in index.revocations_since(4)[0]] == [8]
    assert index.revocations_since(9)[0] == []
