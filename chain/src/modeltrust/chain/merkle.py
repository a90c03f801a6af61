"""RFC 9162 (Certificate Transparency v2) Merkle tree: hashing, proofs, verification.

Why one long module: hashing, proof generation and proof verification mirror each
other step for step (RFC 9162 2.1); kept side by side so a change to one is seen
against the other.

Storage model: only *perfect* subtrees are stored, as ``NodeID(level, index)``
covering leaves ``[index * 2**level, (index + 1) * 2**level)``. They never change
once written, so a store is append-only. The hashes on the right edge of a tree
whose size is not a power of two are *ephemeral*: they are recomputed from the
perfect subtrees that cover them. Every proof is therefore one batched read of
O(log n) perfect nodes followed by a few hash computations, for any tree size up
to the stored one.

Verification is the hot path of a full-ledger audit: it uses ``hashlib.sha256``
directly and checks proof lengths up front, so a wrong proof costs no hashing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modeltrust.chain.errors import (
    ChainError,
    ConsistencyProofError,
    HashEncodingError,
    HashSizeError,
    InclusionProofError,
    InvalidArgumentError,
    MissingNodeError,
)

HASH_SIZE = 32

_sha256 = hashlib.sha256
_EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(leaf_data: bytes) -> bytes:
    """SHA-256(0x00 || leaf_data): the hash of a leaf (RFC 9162 2.1.1)."""
    return _sha256(b"\x00" + leaf_data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    _require_hash(left, "left child hash", HashSizeError)
    _require_hash(right, "right child hash", HashSizeError)
    return _sha256(b"\x01" + left + right).digest()


def hash_to_b64(raw: bytes) -> str:
    """A hash as it appears in checkpoints, proofs and JSON answers: standard base64."""
    return base64.b64encode(raw).decode()


def hash_from_b64(value: object, what: str) -> bytes:
    """The 32 bytes of a base64 hash field, or HashEncodingError naming ``what``.

    The one decoder for hashes read from documents (checkpoints, proofs, block headers,
    ledger answers, trust records): standard base64, canonical (padding and unused bits
    as the encoder writes them, so one hash has one spelling), exactly 32 bytes.
    """
    if not isinstance(value, str):
        raise HashEncodingError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HashEncodingError(f"{what} is not valid base64") from None
    if len(raw) != HASH_SIZE:
        raise HashEncodingError(
            f"{what} must be {HASH_SIZE} bytes (a SHA-256 hash), got {len(raw)} bytes"
        )
    if hash_to_b64(raw) != value:
        raise HashEncodingError(f"{what} is not canonical base64")
    return raw


def empty_root() -> bytes:
    """The root of the empty tree: SHA-256 of the empty string."""
    return _EMPTY_ROOT


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash (MTH) of a list of leaf hashes."""
    cr = CompactRange.empty()
    for h in hashes:
        cr.push(h)
    return cr.root()


@dataclass(frozen=True, slots=True)
class NodeID:
    """A perfect subtree: leaves ``[index * 2**level, (index + 1) * 2**level)``."""

    level: int
    index: int

    def __post_init__(self) -> None:
        if self.level < 0 or self.index < 0:
            raise InvalidArgumentError(f"node id needs level >= 0 and index >= 0, got {self}")


class NodeReader(Protocol):
    """Where proofs read stored perfect-subtree hashes from."""

    def get_nodes(self, ids: Sequence[NodeID]) -> Sequence[bytes]:
        """Return the hashes of ``ids`` in order; raise MissingNodeError if one is absent."""
        ...


class CompactRange:
    """The right edge of the tree ``[0, size)``: one hash per set bit of ``size``.

    It lets a sequencer append leaves and compute roots without reading storage.
    Hashes are kept largest subtree (leftmost) first.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int, hashes: Sequence[bytes]) -> None:
        if size < 0 or len(hashes) != size.bit_count():
            raise ChainError(
                f"compact range of size {size} needs {max(size, 0).bit_count()} hashes, "
                f"got {len(hashes)}"
            )
        for h in hashes:
            _require_hash(h, "compact range hash", HashSizeError)
        self._size = size
        self._hashes = list(hashes)

    @classmethod
    def empty(cls) -> CompactRange:
        return cls(0, [])

    @classmethod
    def load(cls, size: int, reader: NodeReader) -> CompactRange:
        """Rebuild the right edge of a stored tree of ``size`` leaves with one read."""
        ids = _perfect_cover(0, size)
        return cls(size, _read_nodes(reader, ids))

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[NodeID, bytes]]:
        """Add a leaf; return every node it completes (the leaf first) for the caller to store."""
        _require_hash(leaf_hash, "leaf hash", HashSizeError)
        index = self._size
        completed = [(NodeID(0, index), leaf_hash)]
        h, level, pos = leaf_hash, 0, index
        hashes = self._hashes
        while pos & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            level += 1
            pos >>= 1
            completed.append((NodeID(level, pos), h))
        hashes.append(h)
        self._size = index + 1
        return completed

    def push(self, leaf_hash: bytes) -> None:
        """Like append, without reporting the completed nodes (audits, roots)."""
        if len(leaf_hash) != HASH_SIZE:
            _require_hash(leaf_hash, "leaf hash", HashSizeError)
        hashes = self._hashes
        h, pos = leaf_hash, self._size
        self._size = pos + 1
        while pos & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            pos >>= 1
        hashes.append(h)

    def root(self) -> bytes:
        """The root hash of the tree ``[0, size)``."""
        return _fold(self._hashes) if self._hashes else _EMPTY_ROOT


def inclusion_proof(index: int, size: int, reader: NodeReader) -> list[bytes]:
    """The RFC 9162 audit path of leaf ``index`` in the tree of the first ``size`` leaves."""
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is not inside a tree of size {size}")
    ranges: list[tuple[int, int]] = []  # sibling subtrees, root first
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()  # the proof lists siblings from the leaf upwards
    return _range_hashes(ranges, reader)


def consistency_proof(size1: int, size2: int, reader: NodeReader) -> list[bytes]:
    """The RFC 9162 proof that the tree of ``size1`` leaves is a prefix of that of ``size2``."""
    if size1 <= 0:
        raise ConsistencyProofError(f"a consistency proof from size {size1} proves nothing")
    if size1 > size2:
        raise ConsistencyProofError(f"size1 {size1} is larger than size2 {size2}")
    if size1 == size2:
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size2
    whole_old_tree = True  # RFC 9162 SUBPROOF's flag b: the old root itself needs no entry
    while size1 != hi:
        mid = lo + _split(hi - lo)
        if size1 <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
            whole_old_tree = False
    if not whole_old_tree:
        ranges.append((lo, hi))
    ranges.reverse()
    return _range_hashes(ranges, reader)


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` proves leaf ``index`` of tree ``size`` hashes to ``leaf_hash``.

    Raises InclusionProofError naming the failed check.
    """
    _require_hash(leaf_hash, "leaf hash", InclusionProofError)
    _require_hash(root, "root hash", InclusionProofError)
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is not inside a tree of size {size}")
    # Below level `inner` the path to the leaf and the path to the last leaf differ;
    # above it, the path runs along the right edge and only left siblings exist.
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    if len(proof) != want:
        raise InclusionProofError(
            f"inclusion proof has {len(proof)} hashes, leaf {index} of a tree of size {size} "
            f"needs {want}"
        )
    sha256 = _sha256
    h = leaf_hash
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise InclusionProofError(f"inclusion proof hash {i} is {len(p)} bytes, not 32")
        if i < inner and not (index >> i) & 1:
            h = sha256(b"\x01" + h + p).digest()
        else:
            h = sha256(b"\x01" + p + h).digest()
    if h != root:
        raise InclusionProofError(
            f"inclusion proof for leaf {index} of tree size {size} leads to a different root "
            f"(calculated {h.hex()}, expected {root.hex()})"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that ``proof`` proves tree (size1, root1) is a prefix of tree (size2, root2).

    A proof from size 0 proves nothing and is rejected. Raises ConsistencyProofError.
    """
    _require_hash(root1, "root1", ConsistencyProofError)
    _require_hash(root2, "root2", ConsistencyProofError)
    if size1 <= 0:
        raise ConsistencyProofError(f"a consistency proof from size {size1} proves nothing")
    if size1 > size2:
        raise ConsistencyProofError(f"size1 {size1} is larger than size2 {size2}")
    if size1 == size2:
        if proof:
            raise ConsistencyProofError("sizes are equal but the consistency proof is not empty")
        if root1 != root2:
            raise ConsistencyProofError(f"trees of equal size {size1} have different roots")
        return
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise ConsistencyProofError(f"consistency proof hash {i} is {len(p)} bytes, not 32")
    # Skip the levels where the old tree is a perfect subtree: its root is the seed.
    shift = (size1 & -size1).bit_length() - 1
    if size1 == 1 << shift:
        seed, rest = root1, proof
    elif proof:
        seed, rest = proof[0], proof[1:]
    else:
        raise ConsistencyProofError("consistency proof is empty")
    mask = (size1 - 1) >> shift
    inner = (mask ^ ((size2 - 1) >> shift)).bit_length()
    want = inner + (mask >> inner).bit_count()
    if len(rest) != want:
        raise ConsistencyProofError(
            f"consistency proof from {size1} to {size2} has {len(proof)} hashes, "
            f"needs {want + len(proof) - len(rest)}"
        )
    sha256 = _sha256
    h1 = h2 = seed
    for i in range(inner):
        p = rest[i]
        if (mask >> i) & 1:
            h1 = sha256(b"\x01" + p + h1).digest()
            h2 = sha256(b"\x01" + p + h2).digest()
        else:
            h2 = sha256(b"\x01" + h2 + p).digest()
    for p in rest[inner:]:
        h1 = sha256(b"\x01" + p + h1).digest()
        h2 = sha256(b"\x01" + p + h2).digest()
    if h1 != root1:
        raise ConsistencyProofError(f"consistency proof does not lead to root1 of size {size1}")
    if h2 != root2:
        raise ConsistencyProofError(f"consistency proof does not lead to root2 of size {size2}")


class MemoryNodeStore:
    """An in-memory NodeReader for tests and the in-memory ledger (one list per level)."""

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []

    def put(self, node_id: NodeID, node: bytes) -> None:
        """Store a node. Nodes are immutable: rewriting one with another hash is an error."""
        _require_hash(node, "node hash", HashSizeError)
        while len(self._levels) <= node_id.level:
            self._levels.append([])
        row = self._levels[node_id.level]
        if node_id.index == len(row):
            row.append(node)
        elif node_id.index > len(row):
            raise ChainError(f"cannot store {node_id}: nodes before it at its level are missing")
        elif row[node_id.index] != node:
            raise ChainError(f"refusing to overwrite {node_id} with a different hash")

    def put_all(self, nodes: Iterable[tuple[NodeID, bytes]]) -> None:
        for node_id, node in nodes:
            self.put(node_id, node)

    def get_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        levels = self._levels
        try:
            return [levels[i.level][i.index] for i in ids]
        except IndexError:
            missing = [i for i in ids if i.level >= len(levels) or i.index >= len(levels[i.level])]
            raise MissingNodeError(f"node store lacks {missing[0]}") from None


def _require_hash(value: bytes, what: str, error: type[Exception]) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise error(f"{what} must be {HASH_SIZE} bytes, got {got}")


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _perfect_cover(begin: int, end: int) -> list[NodeID]:
    """The perfect subtrees covering [begin, end), largest first.

    ``begin`` must be aligned to the largest of them, which holds for every subtree
    of an RFC 9162 tree and for [0, size).
    """
    ids = []
    pos, count = begin, end - begin
    for level in range(count.bit_length() - 1, -1, -1):
        if (count >> level) & 1:
            if pos & ((1 << level) - 1):
                raise InvalidArgumentError(
                    f"range [{begin}, {end}) is not aligned to perfect subtrees"
                )
            ids.append(NodeID(level, pos >> level))
            pos += 1 << level
    return ids


def _fold(hashes: Sequence[bytes]) -> bytes:
    """The root of adjacent perfect subtrees of decreasing size (fold right to left)."""
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = _sha256(b"\x01" + left + h).digest()
    return h


def _read_nodes(reader: NodeReader, ids: Sequence[NodeID]) -> list[bytes]:
    if not ids:
        return []
    nodes = list(reader.get_nodes(ids))
    if len(nodes) != len(ids):
        raise ChainError(f"node store returned {len(nodes)} hashes for {len(ids)} node ids")
    for node_id, node in zip(ids, nodes, strict=True):
        _require_hash(node, f"stored node {node_id}", HashSizeError)
    return nodes


def _range_hashes(ranges: Sequence[tuple[int, int]], reader: NodeReader) -> list[bytes]:
    """The subtree hash of each range, reading all perfect nodes in one batch."""
    covers = [_perfect_cover(b, e) for b, e in ranges]
    nodes = _read_nodes(reader, [i for cover in covers for i in cover])
    out, pos = [], 0
    for cover in covers:
        part = nodes[pos : pos + len(cover)]
        pos += len(cover)
        out.append(part[0] if len(part) == 1 else _fold(part))
    return out
