"""Block headers: canonical bytes, hash chain links, strict parsing."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from modeltrust.chain.blocks import (
    GENESIS_PREV_HASH,
    BlockHeader,
    check_link,
    header_hash,
)
from modeltrust.chain.errors import BlockError
from modeltrust.chain.merkle import leaf_hash, root_from_leaf_hashes

pytestmark = pytest.mark.unit

ROOT3 = root_from_leaf_hashes([leaf_hash(bytes([i])) for i in range(3)])
ROOT5 = root_from_leaf_hashes([leaf_hash(bytes([i])) for i in range(5)])
GENESIS = BlockHeader(0, GENESIS_PREV_HASH, 0, 3, 3, ROOT3, "2025-01-31T12:00:00Z")
SECOND = BlockHeader(1, header_hash(GENESIS), 3, 5, 5, ROOT5, "2025-01-31T12:00:01Z")


def test_header_bytes_are_canonical_json_and_hash_is_sha256_of_them() -> None:
    data = GENESIS.header_bytes()
    assert data.startswith(b'{"end_index":3,"first_index":0,"height":0,"prev_hash":"AAAA')
    assert header_hash(GENESIS) == hashlib.sha256(data).digest()
    assert BlockHeader.from_bytes(data) == GENESIS
    assert BlockHeader.from_json(SECOND.to_json()) == SECOND


def test_links() -> None:
    check_link(None, GENESIS)
    check_link(GENESIS, SECOND)
    with pytest.raises(BlockError, match="no predecessor"):
        check_link(None, SECOND)
    forged = dataclasses.replace(SECOND, prev_hash=hashlib.sha256(b"other").digest())
    with pytest.raises(BlockError, match="prev_hash is not the hash of block 0"):
        check_link(GENESIS, forged)
    gap = dataclasses.replace(SECOND, first_index=4)
    with pytest.raises(BlockError, match="starts at index 4"):
        check_link(GENESIS, gap)
    skipped = dataclasses.replace(SECOND, height=2)
    with pytest.raises(BlockError, match="does not follow"):
        check_link(GENESIS, skipped)
    # Changing anything in a header changes its hash, so the next link breaks.
    with pytest.raises(BlockError, match="prev_hash"):
        check_link(dataclasses.replace(GENESIS, time="2025-01-31T12:00:09Z"), SECOND)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"height": -1}, "height must be an integer"),
        ({"height": True}, "height must be an integer"),
        ({"prev_hash": b"short"}, "prev_hash must be 32 bytes"),
        ({"prev_hash": b"\x01" * 32}, "block 0 must start"),
        ({"first_index": 4}, "exceeds end_index"),
        ({"tree_size": 4}, "differs from tree_size"),
        ({"time": "yesterday"}, "RFC 3339"),
    ],
)
def test_invalid_headers_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BlockError, match=message):
        dataclasses.replace(GENESIS, **changes)  # type: ignore[arg-type]


def test_parsing_is_strict() -> None:
    data = SECOND.header_bytes()
    with pytest.raises(BlockError, match="canonical form"):
        BlockHeader.from_bytes(data.replace(b",", b", "))
    obj = SECOND.to_json()
    obj["extra"] = 1
    with pytest.raises(BlockError, match="unknown \\['extra'\\]"):
        BlockHeader.from_json(obj)
    obj = SECOND.to_json()
    obj["root_hash"] = "AAAA"
    with pytest.raises(BlockError, match="root_hash must be 32 bytes"):
        BlockHeader.from_json(obj)
    with pytest.raises(BlockError, match="not valid JSON"):
        BlockHeader.from_bytes(b"{")
