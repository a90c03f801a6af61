"""Block headers: the hash chain over group commits.

Each block appends the entries ``[first_index, end_index)`` and ends with a signed
checkpoint of ``tree_size`` (== ``end_index``) and ``root_hash``. Its header is the
RFC 8785 canonical JSON of::

    {"end_index": int, "first_index": int, "height": int, "prev_hash": base64,
     "root_hash": base64, "time": RFC 3339 UTC, "tree_size": int}

and ``header_hash`` = SHA-256(header bytes). Block 0 has ``prev_hash`` = 32 zero bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modeltrust.chain.canonical import MAX_SAFE_INTEGER, canonical_json, parse_json_strict
from modeltrust.chain.entries import check_time
from modeltrust.chain.errors import BlockError, CanonicalJSONError, EntryError, HashEncodingError
from modeltrust.chain.merkle import hash_from_b64, hash_to_b64

GENESIS_PREV_HASH = bytes(32)
_INT_FIELDS = ("height", "first_index", "end_index", "tree_size")
_HASH_FIELDS = ("prev_hash", "root_hash")
_FIELDS = frozenset((*_INT_FIELDS, *_HASH_FIELDS, "time"))


@dataclass(frozen=True, slots=True)
class BlockHeader:
    height: int
    prev_hash: bytes
    first_index: int
    end_index: int
    tree_size: int
    root_hash: bytes
    time: str

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_SAFE_INTEGER:
                raise BlockError(f"block {name} must be an integer from 0 to 2**53 - 1")
        for name in _HASH_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise BlockError(f"block {name} must be 32 bytes")
        if not self.first_index <= self.end_index:
            raise BlockError(f"block first_index {self.first_index} exceeds end_index")
        if self.end_index != self.tree_size:
            raise BlockError(f"block end_index {self.end_index} differs from tree_size")
        if self.height == 0 and (self.prev_hash != GENESIS_PREV_HASH or self.first_index != 0):
            raise BlockError("block 0 must start at index 0 with an all-zero prev_hash")
        try:
            check_time("block time", self.time)
        except EntryError as e:
            raise BlockError(str(e)) from None

    def to_json(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "prev_hash": hash_to_b64(self.prev_hash),
            "first_index": self.first_index,
            "end_index": self.end_index,
            "tree_size": self.tree_size,
            "root_hash": hash_to_b64(self.root_hash),
            "time": self.time,
        }

    def header_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BlockHeader:
        if not isinstance(obj, Mapping):
            raise BlockError("a block header must be a JSON object")
        if set(obj) != _FIELDS:
            extra, missing = sorted(set(obj) - _FIELDS), sorted(_FIELDS - set(obj))
            raise BlockError(f"block header fields: unknown {extra}, missing {missing}")
        hashes = {name: _hash_from_b64(name, obj[name]) for name in _HASH_FIELDS}
        if not isinstance(obj["time"], str):
            raise BlockError("block time must be a string")
        return cls(
            height=obj["height"],
            first_index=obj["first_index"],
            end_index=obj["end_index"],
            tree_size=obj["tree_size"],
            time=obj["time"],
            **hashes,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> BlockHeader:
        """Parse stored header bytes, refusing any non-canonical encoding."""
        try:
            header = cls.from_json(parse_json_strict(data))
        except CanonicalJSONError as e:
            raise BlockError(f"block header is not valid JSON: {e}") from None
        if header.header_bytes() != data:
            raise BlockError("block header is not in RFC 8785 canonical form")
        return header


def header_hash(h: BlockHeader) -> bytes:
    """SHA-256 of the canonical header bytes; the next block's ``prev_hash``."""
    return hashlib.sha256(h.header_bytes()).digest()


def check_link(prev: BlockHeader | None, h: BlockHeader) -> None:
    """Check ``h`` directly follows ``prev`` (None: ``h`` must be block 0)."""
    if prev is None:
        if h.height != 0:
            raise BlockError(f"block {h.height} has no predecessor")
        return
    if h.height != prev.height + 1:
        raise BlockError(f"block {h.height} does not follow block {prev.height}")
    if h.prev_hash != header_hash(prev):
        raise BlockError(f"block {h.height} prev_hash is not the hash of block {prev.height}")
    if h.first_index != prev.end_index:
        raise BlockError(
            f"block {h.height} starts at index {h.first_index}, "
            f"block {prev.height} ended at {prev.end_index}"
        )


def _hash_from_b64(name: str, value: Any) -> bytes:
    try:
        return hash_from_b64(value, f"block {name}")
    except HashEncodingError as exc:
        raise BlockError(str(exc)) from None
