"""The witness's copy of the log: blocks and entries read from the ledger, each checked
before it is stored (witness.py, docs/ledger.md section 13).

A block is stored only when its header is canonical and links to the copy's last block,
every entry parses and re-encodes to the bytes whose hash is the served leaf hash, the
entries give the header's root, and the block's checkpoint is signed by the log's key over
exactly that size and root. The store is a ledger store like the ledger's own
(SQLiteLedgerStore, same schema), so it is audited the same way (`verify_sqlite`).
Every method that touches the store runs on the copy's one worker thread (``run``), so the
compact range and the store never disagree, and an audit never sees half of an append.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeltrust.chain.blocks import BlockHeader, check_link
from modeltrust.chain.canonical import canonical_json
from modeltrust.chain.checkpoint import Checkpoint, verify_checkpoint
from modeltrust.chain.entries import entry_from_json, leaf_data
from modeltrust.chain.errors import ChainError
from modeltrust.chain.ledger_verify import LedgerVerificationError, verify_sqlite
from modeltrust.chain.lookup import lookup_keys
from modeltrust.chain.merkle import (
    CompactRange,
    consistency_proof,
    empty_root,
    hash_from_b64,
    leaf_hash,
)
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.sequencer import SignedCheckpoint
from modeltrust.chain.storage import (
    AppendBatch,
    LedgerIdentity,
    NewEntry,
    SQLiteLedgerStore,
    StoredBlock,
)


class WitnessError(ChainError):
    """The witness cannot do what was asked (its copy, its state, the log's answers)."""


class WitnessStoreDamagedError(WitnessError):
    """The witness's own copy of the log does not verify: it cosigns nothing until repaired."""


class LogFetchError(WitnessError):
    """The log did not answer, or served blocks or entries that do not verify."""


@dataclass(frozen=True)
class FetchedBlock:
    height: int
    header: BlockHeader
    header_bytes: bytes
    header_hash: bytes
    note: str


class LogCopy:
    """The witness's verified copy of the log (a LedgerStore only it writes).

    Every method that touches the store runs on the one worker thread (``run``), so the
    compact range and the store never disagree.
    """

    def __init__(self, path: Path, verifier: NoteVerifier, origin: str) -> None:
        self.path = path
        self.verifier = verifier
        self.origin = origin
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness-copy")
        self._store: SQLiteLedgerStore | None = None
        self._range = CompactRange.empty()
        self._last: BlockHeader | None = None
        self._height = 0
        self.latest = SignedCheckpoint(Checkpoint(origin, 0, empty_root()), "")
        self.damage: WitnessStoreDamagedError | None = None

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def store(self) -> SQLiteLedgerStore:
        if self._store is None:
            raise WitnessError("the log copy is not open")
        return self._store

    @property
    def initialized(self) -> bool:
        return bool(self.latest.note)

    @property
    def size(self) -> int:
        return self.latest.size

    def open(self) -> None:
        self._store = SQLiteLedgerStore(self.path, writer=True)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._executor.shutdown(wait=True)

    def load(self, audit: bool) -> None:
        """Read the copy's state; with ``audit``, verify all of it first (as `ledger verify`)."""
        identity = self.store.identity()
        if identity is None:
            return
        if identity.origin != self.origin or identity.verifier_key != self.verifier.verifier_key():
            raise WitnessError(
                f"{self.path} holds a copy of log {identity.origin!r} with key "
                f"{identity.verifier_key}, not of {self.origin!r} with the configured key; "
                "use another state directory"
            )
        if audit:
            self.audit()
        block = self.store.latest_block()
        if block is None:
            self.latest = SignedCheckpoint(
                Checkpoint(self.origin, 0, empty_root()), identity.empty_checkpoint
            )
            return
        cp = verify_checkpoint(block.checkpoint, self.verifier, origin=self.origin)
        self._range = CompactRange.load(block.end_index, self.store)
        if self._range.root() != cp.root_hash or cp.size != block.end_index:
            raise WitnessStoreDamagedError(
                f"the stored tree does not match the checkpoint of block {block.height}"
            )
        self._last = BlockHeader.from_bytes(block.header)
        self._height = block.height + 1
        self.latest = SignedCheckpoint(cp, block.checkpoint)

    def audit(self) -> None:
        """Recompute the whole copy; WitnessStoreDamagedError names the first damage."""
        try:
            verify_sqlite(str(self.path), self.verifier, origin=self.origin)
        except LedgerVerificationError as exc:
            self.damage = WitnessStoreDamagedError(
                f"this witness's copy of the log ({self.path}) does not verify: {exc}. Stop the "
                "witness, keep the file for investigation, and start it again on an empty "
                "state directory (it copies the log anew, then cosigns again)"
            )
            raise self.damage from exc

    def initialize(self, empty_note: str) -> None:
        cp = verify_checkpoint(empty_note, self.verifier, origin=self.origin)
        if cp.size != 0 or cp.root_hash != empty_root():
            raise LogFetchError("the log's empty checkpoint is not of the empty tree")
        self.store.initialize(LedgerIdentity(self.origin, self.verifier.verifier_key(), empty_note))
        self.latest = SignedCheckpoint(cp, empty_note)

    def root_at(self, size: int) -> bytes:
        if size == self.latest.size:
            return self.latest.checkpoint.root_hash
        if size > self.latest.size:
            raise WitnessError(f"the copy holds {self.latest.size} entries, not {size}")
        if size == 0:
            return empty_root()
        return CompactRange.load(size, self.store).root()

    def proof(self, first: int, second: int) -> list[bytes]:
        return consistency_proof(first, second, self.store)

    def note_at(self, size: int) -> str | None:
        """The log-signed checkpoint of the block ending at ``size`` (None: no such block)."""
        if size == self.latest.size:
            return self.latest.note
        low, high = 0, self._height - 1
        while low <= high:  # blocks' end indexes increase with height
            mid = (low + high) // 2
            block = self.store.get_blocks(mid, mid + 1)[0]
            if block.end_index == size:
                return block.checkpoint
            if block.end_index < size:
                low = mid + 1
            else:
                high = mid - 1
        return None

    @property
    def height(self) -> int:
        return self._height

    def append_all(
        self, blocks: Sequence[FetchedBlock], entries: Sequence[Any], first: int
    ) -> None:
        """``append`` each block, ``entries`` starting at entry ``first``."""
        for block in blocks:
            h = block.header
            self.append(block, entries[h.first_index - first : h.end_index - first])

    def append(self, fetched: FetchedBlock, entries: Sequence[dict[str, Any]]) -> None:
        """Verify one block of the log against the copy and store it (all or nothing)."""
        h = fetched.height
        header = fetched.header
        try:
            check_link(self._last, header)
        except ChainError as exc:
            raise LogFetchError(f"block {h} does not extend this witness's copy: {exc}") from exc
        if header.first_index != self._range.size:
            raise LogFetchError(
                f"block {h} starts at entry {header.first_index}, the copy ends at "
                f"{self._range.size}"
            )
        rng = CompactRange(self._range.size, self._range.hashes)
        new: list[NewEntry] = []
        nodes = []
        for offset, item in enumerate(entries):
            index = header.first_index + offset
            if not isinstance(item, dict) or item.get("index") != index:
                raise LogFetchError(f"the log served another entry where entry {index} belongs")
            doc = item.get("entry")
            if not isinstance(doc, dict):
                raise LogFetchError(f"entry {index} served by the log is not a JSON object")
            try:
                entry = entry_from_json(doc)
                served = hash_from_b64(item.get("leaf_hash"), f"entry {index} leaf_hash")
            except ChainError as exc:
                raise LogFetchError(f"entry {index} served by the log: {exc}") from exc
            data = leaf_data(entry)
            lh = leaf_hash(data)
            if lh != served:
                raise LogFetchError(f"entry {index}: its leaf hash is not the hash of its data")
            new.append(NewEntry(index, lh, data, lookup_keys(entry)))
            nodes.extend(rng.append(lh))
        if rng.size != header.end_index:
            raise LogFetchError(f"block {h}: the log served {len(new)} entries for it")
        root = rng.root()
        if root != header.root_hash:
            raise LogFetchError(
                f"block {h}: entries [{header.first_index}, {header.end_index}) served by the "
                "log do not give the block's root"
            )
        try:
            cp = verify_checkpoint(fetched.note, self.verifier, origin=self.origin)
        except ChainError as exc:
            raise LogFetchError(f"block {h}: its checkpoint does not verify: {exc}") from exc
        if cp.size != rng.size or cp.root_hash != root:
            raise LogFetchError(f"block {h}: its signed checkpoint is not of the block's tree")
        block = StoredBlock(h, fetched.header_bytes, fetched.header_hash, fetched.note, rng.size)
        self.store.append(AppendBatch(new, nodes, block))
        self._range = rng
        self._last = header
        self._height = h + 1
        self.latest = SignedCheckpoint(cp, fetched.note)


def fetched_block(item: object, height: int) -> FetchedBlock:
    if not isinstance(item, dict) or item.get("height") != height:
        raise LogFetchError(f"the log served another block where block {height} belongs")
    header, note = item.get("header"), item.get("checkpoint")
    if not isinstance(header, dict) or not isinstance(note, str):
        raise LogFetchError(f"block {height} served by the log is malformed")
    try:
        header_bytes = canonical_json(header)
        parsed = BlockHeader.from_bytes(header_bytes)
        served_hash = hash_from_b64(item.get("header_hash"), f"block {height} header_hash")
    except ChainError as exc:
        raise LogFetchError(f"block {height} served by the log: {exc}") from exc
    if parsed.height != height or hashlib.sha256(header_bytes).digest() != served_hash:
        raise LogFetchError(f"block {height}: its header hash is not the hash of its header")
    return FetchedBlock(height, parsed, header_bytes, served_hash, note)
