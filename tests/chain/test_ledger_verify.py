"""Resuming an audit where an earlier one stopped (what a standby does while it waits for
the writer Lease): the same verdict as a whole audit for everything after that point."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.ledger import audit
from harness.postgres import store_sql
from modeltrust.chain.ledger_verify import LedgerVerificationError, verify_store
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.sequencer import Sequencer, Submission
from modeltrust.chain.storage import open_store

ORIGIN = "verify.test/log"


async def _append(db: Path, signer: NoteSigner, numbers: range) -> None:
    store = open_store(db, writer=True)
    seq = Sequencer(store, signer, origin=ORIGIN)
    await seq.start()
    try:
        for n in numbers:  # one block each
            await seq.submit([Submission.of(audit(n))])
    finally:
        await seq.stop()
        store.close()


async def test_a_resumed_audit_checks_what_was_added_since(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    signer = NoteSigner.generate(ORIGIN)
    await _append(db, signer, range(0, 37))
    reader = open_store(db, writer=False)
    first = verify_store(reader, signer.verifier(), complete=False)
    assert first.point is not None
    assert (first.tree_size, first.blocks) == (37, 37)
    await _append(db, signer, range(37, 90))
    whole = verify_store(reader, signer.verifier())
    resumed = verify_store(reader, signer.verifier(), resume=first.point)
    assert (resumed.tree_size, resumed.blocks, resumed.checkpoint_note) == (
        whole.tree_size,
        whole.blocks,
        whole.checkpoint_note,
    )
    assert resumed.point == whole.point
    # Nothing new: resuming at the end is a no-op that still says where the log ends.
    again = verify_store(reader, signer.verifier(), resume=resumed.point)
    assert (again.tree_size, again.blocks) == (90, 90)
    # Damage after the point is found by the resumed audit.
    store_sql(db, "UPDATE entries SET data = ? WHERE idx = ?", b"{}", 60)
    with pytest.raises(LedgerVerificationError, match="entry 60"):
        verify_store(reader, signer.verifier(), resume=first.point)
    reader.close()
