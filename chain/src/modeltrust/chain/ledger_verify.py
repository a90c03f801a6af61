"""Full-ledger audit: recompute everything from genesis and name the first thing that is wrong.

For every block in order: the header parses, is canonical, links to the previous
header's hash and continues its index range; for every entry of the block, the leaf
hash is recomputed from the stored bytes and compared with the stored one; every
Merkle node the append completes is compared with the stored node (local stores:
post-order makes that one sequential scan); the recomputed root must equal the
header's root, and the block's checkpoint must carry a valid signature by the pinned
key over exactly that size and root. Nothing the store says is taken on trust.

The hashing is written out here (not via CompactRange) on purpose: it is the hot
loop of the audit, and an independent implementation cross-checks the library's.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from modeltrust.chain.blocks import BlockHeader, check_link
from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.entries import entry_from_leaf_data
from modeltrust.chain.errors import ChainError
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.storage import LedgerStore, StoredBlock, open_store

EntryRow = tuple[int, bytes, bytes]  # index, stored leaf hash, leaf data
Progress = Callable[[int], None]


class LedgerVerificationError(ChainError):
    """The ledger is not what its signed checkpoints say: ``index``/``height`` name where."""

    def __init__(
        self, message: str, *, index: int | None = None, height: int | None = None
    ) -> None:
        super().__init__(message)
        self.index = index
        self.height = height


@dataclass(frozen=True)
class AuditPoint:
    """Where an audit stopped, everything verified before it: ``verify_store(resume=...)``
    goes on from here (a standby audits while it waits, then only what was added since)."""

    height: int  # the next block to check
    size: int
    node_pos: int
    stack: tuple[bytes, ...]
    prev: BlockHeader | None
    last_note: str | None


@dataclass(frozen=True)
class VerifyReport:
    tree_size: int
    blocks: int
    checkpoint_note: str | None
    point: AuditPoint | None = None


class _Replay:
    """Consumes blocks and their entries (and optionally stored nodes) in order."""

    def __init__(
        self,
        verifier: NoteVerifier,
        origin: str,
        nodes: Iterator[tuple[int, bytes]] | None,
        check_entries: bool,
    ) -> None:
        self.verifier = verifier
        self.origin = origin
        self.nodes = nodes
        self.check_entries = check_entries
        self.stack: list[bytes] = []
        self.size = 0
        self.node_pos = 0
        self.prev: BlockHeader | None = None
        self.last_note: str | None = None

    def block(self, b: StoredBlock, rows: Iterable[EntryRow]) -> None:
        h = b.height
        try:
            header = BlockHeader.from_bytes(b.header)
        except ChainError as exc:
            raise LedgerVerificationError(
                f"block {h}: header is malformed: {exc}", height=h
            ) from exc
        if header.height != h:
            raise LedgerVerificationError(
                f"block {h}: header says height {header.height}", height=h
            )
        if hashlib.sha256(b.header).digest() != b.header_hash:
            raise LedgerVerificationError(
                f"block {h}: stored header hash does not match the header", height=h
            )
        try:
            check_link(self.prev, header)
        except ChainError as exc:
            raise LedgerVerificationError(f"block {h}: {exc}", height=h) from exc
        self._entries(header, rows)
        root = self._root()
        if root != header.root_hash:
            raise LedgerVerificationError(
                f"block {h}: root recomputed from entries "
                f"[{header.first_index}, {header.end_index}) differs from the header's root",
                height=h,
                index=header.first_index,
            )
        try:
            cp = verify_checkpoint(b.checkpoint, self.verifier, origin=self.origin)
        except ChainError as exc:
            raise LedgerVerificationError(
                f"block {h}: checkpoint does not verify: {exc}", height=h
            ) from exc
        if cp.size != header.tree_size or cp.root_hash != root:
            raise LedgerVerificationError(
                f"block {h}: checkpoint (size {cp.size}) does not match the recomputed tree "
                f"(size {header.tree_size})",
                height=h,
            )
        self.prev = header
        self.last_note = b.checkpoint

    def _entries(self, header: BlockHeader, rows: Iterable[EntryRow]) -> None:
        # The audit's hot loop: locals only, no per-entry allocations beyond the hashes.
        sha = hashlib.sha256
        stack = self.stack
        nodes = self.nodes
        npos = self.node_pos
        expected = header.first_index
        for index, stored_hash, data in rows:
            if index != expected:
                raise LedgerVerificationError(f"entry {expected} is missing", index=expected)
            if not isinstance(data, bytes):
                raise LedgerVerificationError(
                    f"entry {index}: stored data is not bytes", index=index
                )
            h = sha(b"\x00" + data).digest()
            if h != stored_hash:
                raise LedgerVerificationError(
                    f"entry {index}: stored leaf hash differs from the hash of its data",
                    index=index,
                )
            if self.check_entries:
                try:
                    entry_from_leaf_data(data)
                except ChainError as exc:
                    raise LedgerVerificationError(f"entry {index}: {exc}", index=index) from exc
            if nodes is not None:
                stored = next(nodes, None)
                if stored is None or stored[0] != npos or stored[1] != h:
                    self._node_failure(index, 0, stored, npos)
                npos += 1
            pos, level = index, 0
            while pos & 1:
                h = sha(b"\x01" + stack.pop() + h).digest()
                pos >>= 1
                level += 1
                if nodes is not None:
                    stored = next(nodes, None)
                    if stored is None or stored[0] != npos or stored[1] != h:
                        self._node_failure(index, level, stored, npos)
                    npos += 1
            stack.append(h)
            expected += 1
        self.node_pos = npos
        if expected != header.end_index:
            raise LedgerVerificationError(
                f"block {header.height}: entry {expected} is missing",
                index=expected,
                height=header.height,
            )
        self.size = expected

    @staticmethod
    def _node_failure(index: int, level: int, stored: tuple[int, bytes] | None, pos: int) -> None:
        first = (index >> level) << level
        where = (
            f"entry {index}: stored Merkle node at level {level} over entries "
            f"[{first}, {first + (1 << level)})"
        )
        if stored is None or stored[0] != pos:
            raise LedgerVerificationError(f"{where} is missing", index=index)
        raise LedgerVerificationError(f"{where} differs from the recomputed hash", index=index)

    def _root(self) -> bytes:
        stack = self.stack
        if not stack:
            return hashlib.sha256(b"").digest()
        h = stack[-1]
        for left in reversed(stack[:-1]):
            h = hashlib.sha256(b"\x01" + left + h).digest()
        return h


def verify_database(
    location: str,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    check_entries: bool = False,
    progress: Progress | None = None,
    chunk: int = 65536,
) -> VerifyReport:
    """Audit a ledger database: a SQLite file, or a ``postgresql://`` URL (read-only; safe
    while the server runs)."""
    store = open_store(location, writer=False)
    try:
        return verify_store(
            store,
            verifier,
            origin=origin,
            check_entries=check_entries,
            progress=progress,
            chunk=chunk,
        )
    finally:
        store.close()


# Its name from when the only store was a SQLite file.
verify_sqlite = verify_database


def verify_store(
    store: LedgerStore,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    check_entries: bool = False,
    progress: Progress | None = None,
    chunk: int = 65536,
    resume: AuditPoint | None = None,
    complete: bool = True,
) -> VerifyReport:
    """Audit an open store (the caller closes it); from ``resume`` on, if given (what came
    before it was verified by the audit that returned it). ``complete=False`` skips the
    final checks that nothing is stored beyond the last block, which a store another
    process is appending to may briefly fail between two reads."""
    identity = store.identity()
    if identity is None:
        raise LedgerVerificationError("the database holds no ledger (no origin record)")
    origin = origin or verifier.name
    if identity.origin != origin:
        raise LedgerVerificationError(
            f"the database is for origin {identity.origin!r}, not {origin!r}"
        )
    try:
        verify_checkpoint(identity.empty_checkpoint, verifier, origin=origin)
    except ChainError as exc:
        raise LedgerVerificationError(
            f"the genesis (empty) checkpoint does not verify: {exc}"
        ) from exc
    start = resume or AuditPoint(0, 0, 0, (), None, None)
    nodes = itertools.chain.from_iterable(store.iter_node_chunks(start.node_pos))
    replay = _Replay(verifier, origin, nodes, check_entries)
    replay.stack, replay.size, replay.node_pos = list(start.stack), start.size, start.node_pos
    replay.prev, replay.last_note = start.prev, start.last_note
    rows = itertools.chain.from_iterable(store.iter_entry_rows(start.size, chunk=chunk))
    height = start.height
    while True:
        blocks = store.get_blocks(height, height + 1000)
        if not blocks:
            break
        for b in blocks:
            if b.height != height:
                raise LedgerVerificationError(f"block {height} is missing", height=height)
            count = b.end_index - replay.size
            if count < 0:
                raise LedgerVerificationError(
                    f"block {height}: ends before the previous block", height=height
                )
            replay.block(b, itertools.islice(rows, count))
            if progress is not None:
                progress(count)
            height += 1
    if complete:
        extra = next(rows, None)
        if extra is not None:
            raise LedgerVerificationError(
                f"entry {extra[0]} is stored but in no block", index=extra[0]
            )
        if next(replay.nodes or iter(()), None) is not None:
            raise LedgerVerificationError(
                f"stored Merkle nodes beyond the tree of size {replay.size}"
            )
    point = AuditPoint(
        height, replay.size, replay.node_pos, tuple(replay.stack), replay.prev, replay.last_note
    )
    return VerifyReport(
        replay.size, height, replay.last_note or identity.empty_checkpoint, point=point
    )
