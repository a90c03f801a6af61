"""The sequencer: group commit, verifying receipts, replays, idempotency, restarts, damage.

On both stores: a SQLite file and a PostgreSQL database (the ``ledger_db`` fixture)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.ledger import audit, make_keys, registration
from harness.postgres import store_sql
from modeltrust.chain.blocks import GENESIS_PREV_HASH, BlockHeader, check_link, header_hash
from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.merkle import verify_inclusion
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.sequencer import (
    GroupReceipt,
    IdempotencyConflictError,
    ReplayError,
    Sequencer,
    SequencerUnavailableError,
    Submission,
    WriterFencedError,
)
from modeltrust.chain.storage import StorageCorruptError, StorageError, open_store

pytestmark = pytest.mark.integration
ORIGIN = "seq.test/log"


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
async def sequencer(ledger_db: str, signer: NoteSigner) -> AsyncIterator[Sequencer]:
    store = open_store(ledger_db, writer=True)
    seq = Sequencer(store, signer, origin=ORIGIN, max_batch=64)
    await seq.start()
    yield seq
    await seq.stop()
    store.close()


def _check_receipt(outcome: GroupReceipt, subs: list[Submission], signer: NoteSigner) -> None:
    cp = verify_checkpoint(outcome.checkpoint.note, signer.verifier(), origin=ORIGIN)
    for sub, receipt in zip(subs, outcome.receipts, strict=True):
        assert receipt.leaf_hash == sub.leaf_hash
        verify_inclusion(
            sub.leaf_hash, receipt.index, cp.size, receipt.inclusion_proof, cp.root_hash
        )


async def test_concurrent_submissions_are_group_committed_and_proven(
    sequencer: Sequencer, signer: NoteSigner, ledger_db: str
) -> None:
    subs = [Submission.of(audit(i)) for i in range(300)]
    outcomes = await asyncio.gather(*(sequencer.submit([s]) for s in subs))
    indexes = sorted(o.receipts[0].index for o in outcomes)
    assert indexes == list(range(300))
    for s, o in zip(subs, outcomes, strict=True):
        _check_receipt(o, [s], signer)
    # Fewer blocks than entries (group commit), at most max_batch per block, chained by hash.
    reader = open_store(ledger_db, writer=False)
    blocks = reader.get_blocks(0, 1000)
    reader.close()
    assert 5 <= len(blocks) < 300
    prev = None
    for b in blocks:
        header = BlockHeader.from_bytes(b.header)
        check_link(prev, header)
        assert header.end_index - header.first_index <= 64
        assert b.header_hash == header_hash(header)
        cp = verify_checkpoint(b.checkpoint, signer.verifier(), origin=ORIGIN)
        assert (cp.size, cp.root_hash) == (header.tree_size, header.root_hash)
        prev = header
    assert BlockHeader.from_bytes(blocks[0].header).prev_hash == GENESIS_PREV_HASH
    assert sequencer.latest.size == 300


async def test_replay_is_refused_with_the_existing_index(
    sequencer: Sequencer, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "k")
    reg = Submission.of(registration(keys, 7))
    first = await sequencer.submit([reg])
    with pytest.raises(ReplayError, match="already in the ledger at index 0") as caught:
        await sequencer.submit([reg])
    assert caught.value.index == first.receipts[0].index
    assert sequencer.latest.size == 1


async def test_replay_inside_one_batch_is_refused(sequencer: Sequencer, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    reg = Submission.of(registration(keys, 1))
    with pytest.raises(ReplayError):
        await sequencer.submit([reg, reg])
    assert sequencer.latest.size == 0


async def test_audit_idempotency_returns_the_existing_entry(
    sequencer: Sequencer, signer: NoteSigner
) -> None:
    entry = Submission.of(audit(1, key="k-1"))
    first = await sequencer.submit([entry])
    again = await sequencer.submit([entry])
    assert again.receipts[0].index == first.receipts[0].index
    assert again.receipts[0].existing
    assert not first.receipts[0].existing
    _check_receipt(again, [entry], signer)
    assert sequencer.latest.size == 1


async def test_replays_and_new_entries_in_one_block_are_proven_at_its_size(
    sequencer: Sequencer, signer: NoteSigner
) -> None:
    olds = [Submission.of(audit(i, key=f"k-{i}")) for i in range(5)]
    await sequencer.submit(olds)
    mixed = [olds[3], Submission.of(audit(10, key="k-10")), olds[0], Submission.of(audit(11))]
    outcome = await sequencer.submit(mixed)
    assert [r.index for r in outcome.receipts] == [3, 5, 0, 6]
    assert [r.existing for r in outcome.receipts] == [True, False, True, False]
    assert outcome.checkpoint.size == 7
    _check_receipt(outcome, mixed, signer)


async def test_same_idempotency_key_for_another_entry_conflicts(sequencer: Sequencer) -> None:
    await sequencer.submit([Submission.of(audit(1, key="k-1"))])
    with pytest.raises(IdempotencyConflictError, match="already names a different"):
        await sequencer.submit([Submission.of(audit(2, key="k-1"))])


async def test_concurrent_duplicates_resolve_to_one_entry(
    sequencer: Sequencer, signer: NoteSigner
) -> None:
    entry = Submission.of(audit(5, key="same"))
    outcomes = await asyncio.gather(*(sequencer.submit([entry]) for _ in range(10)))
    assert {o.receipts[0].index for o in outcomes} == {0}
    assert sum(not o.receipts[0].existing for o in outcomes) == 1
    for o in outcomes:
        _check_receipt(o, [entry], signer)


async def test_a_rejected_group_appends_nothing_others_proceed(
    sequencer: Sequencer, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "k")
    reg = Submission.of(registration(keys, 1))
    await sequencer.submit([reg])
    good = [Submission.of(audit(i)) for i in range(3)]
    results = await asyncio.gather(
        sequencer.submit([Submission.of(audit(10)), reg]),  # contains a replay: refused whole
        sequencer.submit(good),
        return_exceptions=True,
    )
    assert isinstance(results[0], ReplayError)
    assert isinstance(results[1], GroupReceipt)
    assert sequencer.latest.size == 4


async def test_restart_continues_the_same_tree(ledger_db: str, signer: NoteSigner) -> None:
    path = ledger_db
    store = open_store(path, writer=True)
    seq = Sequencer(store, signer, origin=ORIGIN)
    await seq.start()
    await seq.submit([Submission.of(audit(i)) for i in range(5)])
    before = seq.latest
    await seq.stop()
    store.close()

    store = open_store(path, writer=True)
    seq = Sequencer(store, signer, origin=ORIGIN)
    await seq.start()
    assert seq.latest == before
    out = await seq.submit([Submission.of(audit(99))])
    assert out.receipts[0].index == 5
    reader = open_store(path, writer=False)
    check_link(
        BlockHeader.from_bytes(reader.get_blocks(0, 1)[0].header),
        BlockHeader.from_bytes(reader.get_blocks(1, 2)[0].header),
    )
    await seq.stop()
    store.close()


async def test_refuses_another_origin_or_key(ledger_db: str, signer: NoteSigner) -> None:
    path = ledger_db
    store = open_store(path, writer=True)
    seq = Sequencer(store, signer, origin=ORIGIN)
    await seq.start()
    await seq.stop()
    with pytest.raises(StorageError, match="belongs to origin"):
        await Sequencer(store, NoteSigner.generate("other"), origin="other").start()
    with pytest.raises(StorageError, match="does not match the key"):
        await Sequencer(store, NoteSigner.generate(ORIGIN), origin=ORIGIN).start()
    store.close()


async def test_refuses_to_extend_damaged_nodes(ledger_db: str, signer: NoteSigner) -> None:
    path = ledger_db
    store = open_store(path, writer=True)
    seq = Sequencer(store, signer, origin=ORIGIN)
    await seq.start()
    await seq.submit([Submission.of(audit(i)) for i in range(6)])
    await seq.stop()
    store.close()
    damaged = store_sql(
        path, "UPDATE nodes SET hash = ? WHERE pos = (SELECT MAX(pos) FROM nodes)", bytes(32)
    )
    assert damaged == 1
    store = open_store(path, writer=True)
    # The start-up audit recomputes the tree and says where it first disagrees.
    with pytest.raises(StorageCorruptError, match=r"level 1 over entries \[4, 6\)"):
        await Sequencer(store, signer, origin=ORIGIN).start()
    # Without it, the checkpoint check of the tree's edge still refuses.
    with pytest.raises(StorageCorruptError, match="do not match the checkpoint"):
        await Sequencer(store, signer, origin=ORIGIN, audit_on_start=False).start()
    store.close()


async def test_storage_failure_stops_sequencing(ledger_db: str, signer: NoteSigner) -> None:
    path = ledger_db
    store = open_store(path, writer=True)
    seq = Sequencer(store, signer, origin=ORIGIN)
    await seq.start()
    # A takeover: our writer epoch is no longer current.
    assert store_sql(path, "UPDATE meta SET value = '1000' WHERE key = 'writer_epoch'") == 1
    with pytest.raises(SequencerUnavailableError, match="could not commit"):
        await seq.submit([Submission.of(audit(1))])
    assert not seq.healthy
    with pytest.raises(SequencerUnavailableError):
        await seq.submit([Submission.of(audit(2))])
    await seq.stop()
    store.close()


class _Fence:
    """Says yes ``allowed`` more times, then no for good (a Lease running out)."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked = 0

    def __call__(self) -> str | None:
        self.asked += 1
        return None if self.asked <= self.allowed else "the writer Lease ran out"


@pytest.mark.parametrize(
    ("allowed", "committed", "message"),
    [
        (0, False, "not signing: the writer Lease ran out"),  # at the start of the commit
        (1, False, "not signing: the writer Lease ran out"),  # right before signing
        (2, True, "not acknowledged: the writer Lease ran out"),  # after the commit
    ],
)
async def test_a_fenced_writer_signs_and_acknowledges_nothing(
    tmp_path: Path, signer: NoteSigner, allowed: int, committed: bool, message: str
) -> None:
    store = open_store(tmp_path / "l.db", writer=True)
    fence = _Fence(allowed=1)  # the signed empty checkpoint of a new ledger
    seq = Sequencer(store, signer, origin=ORIGIN, fence=fence)
    await seq.start()
    try:
        fence.allowed += allowed
        with pytest.raises(WriterFencedError, match=message):
            await seq.submit([Submission.of(audit(1))])
        # Durable or not, the block is never acknowledged, and the sequencer stays down:
        # it never asks the fence again, and refuses everything after.
        assert store.tree_size() == (1 if committed else 0)
        assert not seq.healthy
        asked = fence.asked
        with pytest.raises(SequencerUnavailableError, match="ran out"):
            await seq.submit([Submission.of(audit(2))])
        assert fence.asked == asked
    finally:
        await seq.stop()
        store.close()
