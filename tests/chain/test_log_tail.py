"""Reading the log between verified checkpoints: complete, or a clear refusal.

A real ledger server; the attacker is a real proxy rewriting its range reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.ledger import TOKEN, LedgerKeys, LedgerThread, audit, make_keys, registration
from harness.ledger import service_config as ledger_config
from harness.tampering_proxy import TamperingProxy, edit_json
from modeltrust.chain.client import (
    AsyncLedgerClient,
    LedgerClient,
    LedgerClientError,
    LogTailError,
)
from modeltrust.chain.entries import Revocation
from modeltrust.chain.log_tail import tail_flow
from modeltrust.chain.merkle import CompactRange
from modeltrust.chain.signatures import sign_revocation
from modeltrust.chain.trust_state import LedgerTrustError

pytestmark = pytest.mark.integration


@pytest.fixture
def keys(tmp_path: Path) -> LedgerKeys:
    return make_keys(tmp_path / "k")


@pytest.fixture
def ledger(keys: LedgerKeys, tmp_path: Path) -> Iterator[LedgerThread]:
    with LedgerThread(ledger_config(keys, tmp_path / "l.db")) as running:
        yield running


def populate(keys: LedgerKeys, url: str) -> list[int]:
    """Registrations, audit entries and three revocations over several blocks; returns the
    revocations' indices."""
    revoked: list[int] = []
    with LedgerClient(url, verifier_key=keys.verifier_key, token=TOKEN) as c:
        for i in range(3):
            reg = registration(keys, i)
            c.append(reg)
            c.append_many([audit(100 * i + j, key=f"k-{i}-{j}") for j in range(40)])
            rev = sign_revocation(
                keys.publisher, target_kind="digest", target=reg.digest, reason=f"r{i}"
            )
            revoked.append(c.append(rev).index)
        c.append(audit(9999, key="last"))
    return revoked


def test_reading_the_whole_log_finds_every_revocation(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    revoked = populate(keys, ledger.url)
    with LedgerClient(ledger.url, verifier_key=keys.verifier_key) as c:
        vcp = c.checkpoint()
        result = c.tail(CompactRange.empty(), vcp)
        assert result.size == vcp.size == 127
        assert result.compact_range.root() == vcp.checkpoint.root_hash
        assert [e.index for e in result.entries] == revoked
        assert all(isinstance(e.entry, Revocation) for e in result.entries)
        assert [e.entry.reason for e in result.entries] == ["r0", "r1", "r2"]  # type: ignore[union-attr]
        # Small pages give the same answer (paging is not a place to lose entries).
        paged = c.tail(CompactRange.empty(), vcp, page_size=7)
        assert paged.entries == result.entries
        # Keep other kinds too, or nothing at all.
        regs = c.tail(CompactRange.empty(), vcp, keep=("registration",))
        assert len(regs.entries) == 3
        assert c.tail(CompactRange.empty(), vcp, keep=()).entries == ()


def test_tailing_reads_only_what_was_appended_since(keys: LedgerKeys, ledger: LedgerThread) -> None:
    populate(keys, ledger.url)
    with LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
        first = c.tail(CompactRange.empty(), c.checkpoint())
        start = first.compact_range
        rev = sign_revocation(keys.publisher, target_kind="key", target="ab" * 32, reason="later")
        index = c.append(rev).index
        c.append(audit(999, key="after"))
        second = c.tail(start, c.checkpoint())
        assert [(e.index, e.entry) for e in second.entries] == [(index, rev)]
        assert second.size == index + 2
        assert start.size == first.size  # the caller's range is not changed
        # Already there: nothing to read.
        assert c.tail(second.compact_range, second.checkpoint).entries == ()


def test_a_checkpoint_older_than_the_range_is_refused(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    populate(keys, ledger.url)
    with LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
        old = c.checkpoint()
        c.append(audit(5000, key="newer"))
        newer = c.tail(CompactRange.empty(), c.checkpoint())
        with pytest.raises(LedgerClientError, match="older checkpoint"):
            c.tail(newer.compact_range, old)


Rewrite = Callable[[Any], None]


def range_rewrite(edit: Rewrite) -> Callable[[str, str, int, bytes], tuple[int, bytes] | None]:
    def rewrite(method: str, path_qs: str, status: int, body: bytes) -> tuple[int, bytes] | None:
        if method == "GET" and path_qs.startswith("/v1/entries?") and status == 200:
            return status, edit_json(body, edit)
        return None

    return rewrite


def drop_revocations_renumbered(doc: Any) -> None:
    kept = [e for e in doc["entries"] if e["entry"]["kind"] != "revocation"]
    for offset, item in enumerate(kept):  # a careful liar keeps the indices contiguous
        item["index"] = doc["start"] + offset
    doc["entries"] = kept


def alter_revocation_reason(doc: Any) -> None:
    for item in doc["entries"]:
        if item["entry"]["kind"] == "revocation":
            item["entry"]["reason"] = "harmless"


def swap_two_entries(doc: Any) -> None:
    items = doc["entries"]
    if len(items) >= 2:
        items[0]["entry"], items[1]["entry"] = items[1]["entry"], items[0]["entry"]


def wrong_indices(doc: Any) -> None:
    for item in doc["entries"]:
        item["index"] += 1


def add_a_field_to_a_revocation(doc: Any) -> None:
    for item in doc["entries"]:
        if item["entry"]["kind"] == "revocation":
            item["entry"]["note"] = "extra"


def add_a_field_to_an_audit_entry(doc: Any) -> None:
    doc["entries"][-1]["entry"]["note"] = "extra"


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (drop_revocations_renumbered, "do not hash to the root"),
        (alter_revocation_reason, "do not hash to the root"),
        (swap_two_entries, "do not hash to the root"),
        (wrong_indices, "another entry where entry"),
        (add_a_field_to_a_revocation, "malformed"),  # kept kinds are parsed strictly
        (add_a_field_to_an_audit_entry, "do not hash to the root"),
        (lambda doc: doc.update(entries=[]), "no entries"),
    ],
)
def test_a_tampered_range_read_is_refused(
    keys: LedgerKeys, ledger: LedgerThread, edit: Rewrite, words: str
) -> None:
    populate(keys, ledger.url)
    with (
        TamperingProxy(ledger.url, range_rewrite(edit)) as proxy,
        LedgerClient(proxy.url, verifier_key=keys.verifier_key) as c,
    ):
        vcp = c.checkpoint()
        with pytest.raises(LogTailError, match=words) as caught:
            c.tail(CompactRange.empty(), vcp)
        assert isinstance(caught.value, LedgerTrustError)


def test_a_refused_range_read_is_a_client_error(keys: LedgerKeys, ledger: LedgerThread) -> None:
    populate(keys, ledger.url)

    def refuse(method: str, path_qs: str, status: int, body: bytes) -> tuple[int, bytes] | None:
        return (503, b'{"error": "busy"}') if path_qs.startswith("/v1/entries?") else None

    with (
        TamperingProxy(ledger.url, refuse) as proxy,
        LedgerClient(proxy.url, verifier_key=keys.verifier_key) as c,
        pytest.raises(LedgerClientError, match="refused the range read from index 0: 503"),
    ):
        c.tail(CompactRange.empty(), c.checkpoint())


def test_the_flow_refuses_bad_page_sizes(keys: LedgerKeys, ledger: LedgerThread) -> None:
    with LedgerClient(ledger.url, verifier_key=keys.verifier_key) as c:
        vcp = c.checkpoint()
    for size in (0, 1001):
        with pytest.raises(ValueError, match="page_size"):
            next(tail_flow(CompactRange.empty(), vcp, page_size=size))


async def test_the_async_client_tails_the_same_way(keys: LedgerKeys, ledger: LedgerThread) -> None:
    revoked = populate(keys, ledger.url)
    async with AsyncLedgerClient(ledger.url, verifier_key=keys.verifier_key) as c:
        vcp = await c.checkpoint()
        result = await c.tail(CompactRange.empty(), vcp, page_size=50)
    assert [e.index for e in result.entries] == revoked
    assert result.compact_range.root() == vcp.checkpoint.root_hash
