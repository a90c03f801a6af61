"""The sequencer's fast paths agree exactly with the core library."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.ledger import audit
from modeltrust.chain.batch_proofs import BatchProver
from modeltrust.chain.entries import AuditEntry, leaf_data
from modeltrust.chain.merkle import (
    CompactRange,
    MemoryNodeStore,
    NodeID,
    inclusion_proof,
    leaf_hash,
)
from modeltrust.chain.sequencer import canonical_entry_bytes

pytestmark = pytest.mark.unit


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=200), st.data())
def test_batch_proofs_equal_rfc9162_audit_paths(size: int, data: st.DataObject) -> None:
    store, rng = MemoryNodeStore(), CompactRange.empty()
    for i in range(size):
        store.put_all(rng.append(leaf_hash(b"%d" % i)))
    prover = BatchProver(size, lambda level, index: store.get_nodes([NodeID(level, index)])[0])
    for index in data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=10)):
        assert list(prover.proof(index)) == inclusion_proof(index, size, store)


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_range_proofs_equal_rfc9162_audit_paths(size: int, data: st.DataObject) -> None:
    store, rng = MemoryNodeStore(), CompactRange.empty()
    for i in range(size):
        store.put_all(rng.append(leaf_hash(b"%d" % i)))
    prover = BatchProver(size, lambda level, index: store.get_nodes([NodeID(level, index)])[0])
    first = data.draw(st.integers(0, size))
    end = data.draw(st.integers(first, size))
    assert prover.proofs(first, end) == [
        tuple(inclusion_proof(i, size, store)) for i in range(first, end)
    ]
    with pytest.raises(ValueError, match="not inside a tree"):
        prover.proofs(first, size + 1)


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    name=texts,
    actor=texts,
    reasons=st.lists(texts, max_size=4),
    generation=st.integers(0, 2**53 - 1),
)
def test_fast_canonical_bytes_equal_leaf_data(
    name: str, actor: str, reasons: list[str], generation: int
) -> None:
    base = audit(1)
    entry = AuditEntry(
        action=base.action,
        namespace=base.namespace,
        name=name,
        uid=base.uid,
        generation=generation,
        digest=base.digest,
        decision=base.decision,
        reasons=tuple(reasons),
        actor=actor,
        time=base.time,
        idempotency_key=name,
    )
    assert canonical_entry_bytes(entry) == leaf_data(entry)
