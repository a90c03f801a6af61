"""The sequencer: group commit of pending entries into blocks, each ending in a signed checkpoint.

Why one long module: batching, dedup within a batch, the tree update and the signed
checkpoint form one critical section whose ordering is the log's safety; it is kept in
one place on purpose.

Submissions queue up while a block is being written; one task takes whatever is
pending (up to ``max_batch`` entries, never splitting one request's group), and a
single worker thread checks duplicates, appends the leaves to the compact range,
signs the new checkpoint and writes entries, nodes, block header and checkpoint in
one transaction. Only after that transaction is durable are the waiters resolved,
each with its index and an inclusion proof at the new checkpoint's size.

Duplicates: an entry whose leaf hash is already in the log is a *replay* and is
refused (HTTP 409, naming the existing index). Audit entries carry an idempotency
key: resubmitting the same entry under the same key returns the existing entry;
the same key with a different entry is a conflict (409). A request's entries are
all-or-nothing: if one is refused, none of them is appended.

Within one request, the same entry twice is a replay too (409), and two different
audit entries under one idempotency key a conflict (409); neither names an index,
since nothing of the request is in the log. The same audit entry twice under its key
is idempotent: appended once, both receipts name its index. A 409 that names an index
always names an entry that exists when the client reads the answer.

The worker thread keeps signing, hashing and storage work off the event loop; the
loop only queues and resolves futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modeltrust.chain.batch_proofs import BatchProver
from modeltrust.chain.blocks import GENESIS_PREV_HASH, BlockHeader, header_hash
from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from modeltrust.chain.entries import AuditEntry, Entry, leaf_data
from modeltrust.chain.errors import ChainError, InvalidArgumentError
from modeltrust.chain.ledger_verify import AuditPoint, LedgerVerificationError, verify_store
from modeltrust.chain.lookup import AUDIT_IDEMPOTENCY, lookup_keys
from modeltrust.chain.merkle import CompactRange, NodeID, empty_root, leaf_hash
from modeltrust.chain.metrics import LedgerMetrics
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.storage import (
    AppendBatch,
    LedgerIdentity,
    LedgerStore,
    NewEntry,
    StorageCorruptError,
    StorageError,
    StoredBlock,
)

OPERATOR_ADVICE = (
    "Operator of this ledger: keep the damaged database for investigation, run "
    "`modeltrust ledger verify --db <file or database URL> --verifier-key <key>` for the "
    "first damage, and restore the database from a backup or replica whose latest checkpoint "
    "is at least as new as any checkpoint clients have seen. Do not edit rows or re-sign: "
    "clients that trust a newer checkpoint would rightly report a rollback or a fork."
)


class AppendRejectedError(ChainError):
    """The ledger refused an entry (HTTP 409); ``index`` names the entry it collides with.

    ``index`` is None when the collision is inside the request itself.
    """

    def __init__(self, message: str, index: int | None) -> None:
        super().__init__(message)
        self.index = index


class ReplayError(AppendRejectedError):
    """The same entry (same leaf hash) is already in the log."""


class IdempotencyConflictError(AppendRejectedError):
    """An idempotency key already names a different audit entry."""


class SequencerUnavailableError(ChainError):
    """The sequencer is stopped or failed; nothing was appended (HTTP 503)."""


class WriterFencedError(SequencerUnavailableError):
    """This process lost the right to sequence (its writer Lease expired or went to
    another process): it signs and acknowledges nothing more (HTTP 503)."""


# Asked before each signature and before each acknowledgement: None while this process
# may sequence, else why not (k8s_lease.LeaseElector.fence). Called from the worker
# thread and the event loop; it must not block.
Fence = Callable[[], str | None]


def canonical_entry_bytes(entry: Entry) -> bytes:
    """``entries.leaf_data(entry)``: the canonical bytes every append hashes and stores."""
    return leaf_data(entry)


@dataclass(frozen=True, slots=True)
class Submission:
    """An entry prepared for sequencing (its canonical bytes and leaf hash computed once)."""

    entry: Entry
    leaf_data: bytes
    leaf_hash: bytes
    lookup_keys: tuple[tuple[str, str], ...]
    idempotency_key: str | None

    @classmethod
    def of(cls, entry: Entry) -> Submission:
        data = canonical_entry_bytes(entry)
        key = entry.idempotency_key if isinstance(entry, AuditEntry) else None
        return cls(entry, data, leaf_hash(data), lookup_keys(entry), key)


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: str

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True, slots=True)
class Receipt:
    index: int
    leaf_hash: bytes
    inclusion_proof: tuple[bytes, ...]
    existing: bool


@dataclass(frozen=True, slots=True)
class GroupReceipt:
    """The outcome of one request: every entry is covered by ``checkpoint``."""

    checkpoint: SignedCheckpoint
    receipts: tuple[Receipt, ...]


@dataclass(slots=True)
class _Pending:
    items: Sequence[Submission]
    future: asyncio.Future[GroupReceipt]
    enqueued: float = field(default_factory=time.perf_counter)


def block_time() -> str:
    """RFC 3339 UTC with milliseconds: the time recorded in block headers."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Sequencer:
    """The single writer of a ledger. Create, ``await start()``, ``submit``, ``await stop()``."""

    def __init__(
        self,
        store: LedgerStore,
        signer: NoteSigner,
        *,
        origin: str,
        max_batch: int = 2048,
        metrics: LedgerMetrics | None = None,
        audit_on_start: bool = True,
        fence: Fence | None = None,
        audited: AuditPoint | None = None,
    ) -> None:
        if max_batch < 1:
            raise InvalidArgumentError("max_batch must be at least 1")
        self._store = store
        self._signer = signer
        self._origin = origin
        self._max_batch = max_batch
        self._audit_on_start = audit_on_start
        self._fence = fence
        # The start-up audit goes on from here (a standby audited the rest while waiting).
        self._audited = audited
        self._metrics = metrics or LedgerMetrics()
        self._metrics.sequencer_up.set_function(lambda: 1.0 if self.healthy else 0.0)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sequencer")
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._range = CompactRange.empty()
        self._latest: SignedCheckpoint | None = None
        self._height = 0  # height the next block gets
        self._prev_header_hash = GENESIS_PREV_HASH
        self._listeners: list[Callable[[SignedCheckpoint], None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or create) the ledger state; refuses a store whose state does not verify."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        self._task = asyncio.create_task(self._run(), name="ledger-sequencer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail_queued(SequencerUnavailableError("the ledger is shutting down"))
        self._executor.shutdown(wait=True)

    def on_checkpoint(self, listener: Callable[[SignedCheckpoint], None]) -> None:
        """Call ``listener`` on the event loop with every new signed checkpoint, once its
        block is durable (the witness collector's trigger). It must not block."""
        self._listeners.append(listener)

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done() and self._failure is None

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def latest(self) -> SignedCheckpoint:
        """The newest signed checkpoint; everything it covers is durable."""
        if self._latest is None:
            raise SequencerUnavailableError("the ledger has not started")
        return self._latest

    # -- submitting ------------------------------------------------------------------------------

    async def submit(self, items: Sequence[Submission]) -> GroupReceipt:
        """Append ``items`` atomically; returns once they are durable and checkpointed."""
        if not items:
            raise InvalidArgumentError("nothing to submit")
        if not self.healthy:
            raise SequencerUnavailableError(self._unavailable_reason())
        pending = _Pending(items, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._wakeup.set()
        return await pending.future

    def _fenced(self) -> str | None:
        return None if self._fence is None else self._fence()

    def _check_fence(self) -> None:
        """Refuse to sign unless this process may sequence (the writer Lease)."""
        fenced = self._fenced()
        if fenced is not None:
            raise WriterFencedError(f"not signing: {fenced}")

    def _unavailable_reason(self) -> str:
        if isinstance(self._failure, WriterFencedError):
            return f"this ledger process may no longer sequence: {self._failure}"
        if self._failure is not None:
            return f"the sequencer stopped after a storage failure: {self._failure}"
        return "the sequencer is not running"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            groups = self._take_batch()
            before = self._latest
            started = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._commit, groups)
            except Exception as exc:  # a storage failure: stop sequencing, never guess
                self._failure = exc
                error = (
                    exc
                    if isinstance(exc, WriterFencedError)
                    else SequencerUnavailableError(f"the ledger could not commit: {exc}")
                )
                for p in groups:
                    if not p.future.done():
                        p.future.set_exception(error)
                self._fail_queued(error)
                return
            fenced = self._fenced()
            if fenced is not None:
                # The block is durable and its checkpoint consistent, but this process may
                # no longer hold the Lease: acknowledge nothing, let clients retry elsewhere.
                self._failure = WriterFencedError(fenced)
                error = WriterFencedError(f"not acknowledged: {fenced}")
                for p in groups:
                    if not p.future.done():
                        p.future.set_exception(error)
                self._fail_queued(error)
                return
            done = time.perf_counter()
            self._metrics.commit_seconds.observe(done - started)
            if self._listeners and self._latest is not None and self._latest is not before:
                for listener in self._listeners:
                    listener(self._latest)
            for p, outcome in zip(groups, outcomes, strict=True):
                self._metrics.append_latency_seconds.observe(done - p.enqueued)
                if p.future.done():
                    continue
                if isinstance(outcome, GroupReceipt):
                    p.future.set_result(outcome)
                else:
                    p.future.set_exception(outcome)

    def _take_batch(self) -> list[_Pending]:
        taken, count = 0, 0
        for p in self._queue:
            if taken and count + len(p.items) > self._max_batch:
                break
            taken += 1
            count += len(p.items)
        groups = self._queue[:taken]
        del self._queue[:taken]
        return groups

    def _fail_queued(self, error: Exception) -> None:
        queued, self._queue = self._queue, []
        for p in queued:
            if not p.future.done():
                p.future.set_exception(error)

    # -- the worker thread ----------------------------------------------------------------------

    def _load(self) -> None:
        store = self._store
        identity = store.identity()
        empty = Checkpoint(self._origin, 0, empty_root())
        if identity is None:
            self._check_fence()
            note = sign_checkpoint(empty, self._signer)
            store.initialize(LedgerIdentity(self._origin, self._signer.verifier_key(), note))
            self._latest = SignedCheckpoint(empty, note)
            return
        if identity.origin != self._origin:
            raise StorageError(
                f"this ledger database belongs to origin {identity.origin!r}, not {self._origin!r}"
            )
        if identity.verifier_key != self._signer.verifier_key():
            raise StorageError(
                "the signing key does not match the key this ledger database was created with "
                f"({identity.verifier_key}); refusing to sign with another key"
            )
        size = store.tree_size()
        block = store.latest_block()
        if block is None:
            if size:
                raise StorageCorruptError(f"the database holds {size} entries but no block")
            self._latest = SignedCheckpoint(empty, identity.empty_checkpoint)
            return
        if block.end_index != size:
            raise StorageCorruptError(
                f"the last block ends at index {block.end_index} but the database holds "
                f"{size} entries; run `modeltrust ledger verify`"
            )
        try:
            cp = verify_checkpoint(block.checkpoint, self._signer.verifier(), origin=self._origin)
        except ChainError as exc:
            raise StorageCorruptError(
                f"the stored checkpoint of block {block.height}: {exc}"
            ) from exc
        if self._audit_on_start:
            self._audit(store, block.height, cp.size)
        rng = CompactRange.load(size, store)
        if cp.size != size or rng.root() != cp.root_hash:
            raise StorageCorruptError(
                f"the stored Merkle nodes do not match the checkpoint of block {block.height} "
                f"(size {cp.size}); refusing to extend a damaged log. {OPERATOR_ADVICE}"
            )
        self._range = rng
        self._latest = SignedCheckpoint(cp, block.checkpoint)
        self._height = block.height + 1
        self._prev_header_hash = block.header_hash
        self._metrics.checkpointed(size, block.height, _header_time(block.header))

    def _audit(self, store: LedgerStore, height: int, size: int) -> None:
        """Recompute the whole tree from the stored entries; refuse to serve a damaged store.

        Every leaf hash, Merkle node, block header and checkpoint is checked (as by
        `modeltrust ledger verify`); the error names the first entry (and node level)
        that disagrees with the last signed checkpoint.
        """
        try:
            verify_store(store, self._signer.verifier(), origin=self._origin, resume=self._audited)
        except LedgerVerificationError as exc:
            raise StorageCorruptError(
                f"refusing to start: the ledger database {store.location} does not match its last "
                f"signed checkpoint (block {height}, tree size {size}): {exc}. {OPERATOR_ADVICE}"
            ) from exc

    def _commit(self, groups: Sequence[_Pending]) -> list[GroupReceipt | AppendRejectedError]:
        # First of all: a writer that lost the Lease must not even read its way to a
        # receipt (another writer's rows are past what this one's state knows).
        self._check_fence()
        store = self._store
        subs = [s for g in groups for s in g.items]
        known_leaves = store.find_leaf_hashes([s.leaf_hash for s in subs])
        keys = [s.idempotency_key for s in subs if s.idempotency_key is not None]
        key_owners = store.find_key_owners(AUDIT_IDEMPOTENCY, keys) if keys else {}
        owner_hashes = self._leaf_hashes_of(set(key_owners.values()))

        rng = CompactRange(self._range.size, self._range.hashes)
        batch_leaves: dict[bytes, int] = {}
        batch_keys: dict[str, int] = {}
        new_entries: list[NewEntry] = []
        nodes: list[tuple[NodeID, bytes]] = []
        plans: list[list[tuple[int, bool]] | AppendRejectedError] = []

        for g in groups:
            group_leaves: dict[bytes, int] = {}  # leaf hash -> position in the request
            group_keys: dict[str, tuple[int, int, bytes]] = {}  # key -> (position, index, hash)
            plan: list[tuple[int, bool]] = []
            repeats: set[int] = set()  # positions repeating an earlier entry of this request
            next_index = rng.size
            try:
                for position, s in enumerate(g.items):
                    key = s.idempotency_key
                    if key is not None:
                        owner = key_owners.get(key)
                        if owner is None:
                            owner = batch_keys.get(key)
                        if owner is not None:
                            owner_hash = owner_hashes.get(owner) or _hash_at(owner, new_entries)
                            if owner_hash != s.leaf_hash:
                                raise IdempotencyConflictError(
                                    f"idempotency key {key!r} already names a different audit "
                                    f"entry at index {owner}",
                                    owner,
                                )
                            plan.append((owner, True))
                            continue
                        first = group_keys.get(key)
                        if first is not None:
                            if first[2] != s.leaf_hash:
                                raise IdempotencyConflictError(
                                    f"entries {first[0]} and {position} of this request carry "
                                    f"the same idempotency key {key!r} but are different "
                                    "entries; nothing was appended",
                                    None,
                                )
                            plan.append((first[1], False))  # idempotent within the request
                            repeats.add(position)
                            continue
                    seen = known_leaves.get(s.leaf_hash)
                    if seen is None:
                        seen = batch_leaves.get(s.leaf_hash)
                    if seen is not None:
                        raise ReplayError(
                            f"replay: this entry is already in the ledger at index {seen}", seen
                        )
                    first_position = group_leaves.get(s.leaf_hash)
                    if first_position is not None:
                        # Not in the log (the request is all-or-nothing): name no index.
                        raise ReplayError(
                            f"replay: entries {first_position} and {position} of this request "
                            "are the same entry; nothing was appended",
                            None,
                        )
                    group_leaves[s.leaf_hash] = position
                    if key is not None:
                        group_keys[key] = (position, next_index, s.leaf_hash)
                    plan.append((next_index, False))
                    next_index += 1
            except AppendRejectedError as exc:
                plans.append(exc)
                continue
            for position, (s, (index, existing)) in enumerate(zip(g.items, plan, strict=True)):
                if not existing and position not in repeats:
                    new_entries.append(NewEntry(index, s.leaf_hash, s.leaf_data, s.lookup_keys))
                    nodes.extend(rng.append(s.leaf_hash))
            batch_leaves.update((h, plan[p][0]) for h, p in group_leaves.items())
            batch_keys.update((k, v[1]) for k, v in group_keys.items())
            plans.append(plan)

        latest = self.latest
        known = {(n.level, n.index): h for n, h in _edge_nodes(self._range).items()}
        if new_entries:
            latest = self._write_block(rng, new_entries, nodes)
            self._metrics.batch_size.observe(len(new_entries))
            self._metrics.appended(new_entries)
        known.update(((n.level, n.index), h) for n, h in nodes)

        def perfect(level: int, index: int) -> bytes:
            h = known.get((level, index))
            if h is None:  # an older entry (idempotent replay): read it once
                h = known[(level, index)] = store.get_nodes([NodeID(level, index)])[0]
            return h

        prover = BatchProver(latest.size, perfect)
        # The block's own leaves are consecutive: prove them in one walk down the tree.
        first_new = new_entries[0].index if new_entries else latest.size
        new_proofs = prover.proofs(first_new, latest.size)

        def proof(index: int) -> tuple[bytes, ...]:
            if first_new <= index:
                return new_proofs[index - first_new]
            return prover.proof(index)  # an idempotent replay of an older entry

        outcomes: list[GroupReceipt | AppendRejectedError] = []
        for g, plan_or_error in zip(groups, plans, strict=True):
            if isinstance(plan_or_error, AppendRejectedError):
                self._metrics.rejected(type(plan_or_error).__name__)
                outcomes.append(plan_or_error)
                continue
            receipts = tuple(
                Receipt(index, s.leaf_hash, proof(index), existing)
                for s, (index, existing) in zip(g.items, plan_or_error, strict=True)
            )
            outcomes.append(GroupReceipt(latest, receipts))
        return outcomes

    def _write_block(
        self, rng: CompactRange, entries: list[NewEntry], nodes: list[tuple[NodeID, bytes]]
    ) -> SignedCheckpoint:
        root = rng.root()
        header = BlockHeader(
            height=self._height,
            prev_hash=self._prev_header_hash,
            first_index=entries[0].index,
            end_index=rng.size,
            tree_size=rng.size,
            root_hash=root,
            time=block_time(),
        )
        cp = Checkpoint(self._origin, rng.size, root)
        self._check_fence()
        note = sign_checkpoint(cp, self._signer)
        hh = header_hash(header)
        block = StoredBlock(self._height, header.header_bytes(), hh, note, rng.size)
        self._store.append(AppendBatch(entries, nodes, block))
        # Only now, with the block durable, does the in-memory state move forward.
        self._range = rng
        self._height += 1
        self._prev_header_hash = hh
        signed = SignedCheckpoint(cp, note)
        self._latest = signed
        self._metrics.checkpointed(rng.size, header.height)
        return signed

    def _leaf_hashes_of(self, indexes: set[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for i in indexes:
            for e in self._store.get_entries(i, i + 1):
                out[e.index] = e.leaf_hash
        return out


def _header_time(header: bytes) -> float | None:
    """A stored block's time as Unix seconds (None if it cannot be read: metrics only)."""
    try:
        stamp = BlockHeader.from_bytes(header).time
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except (ChainError, ValueError):
        return None


def _hash_at(index: int, new_entries: list[NewEntry]) -> bytes:
    """The leaf hash of an entry appended by an earlier request of the same batch."""
    for e in new_entries:
        if e.index == index:
            return e.leaf_hash
    raise AssertionError(f"index {index} was not assigned in this batch")


def _edge_nodes(rng: CompactRange) -> dict[NodeID, bytes]:
    """The perfect subtrees of a compact range, keyed by node id (largest first)."""
    out: dict[NodeID, bytes] = {}
    start, hashes = 0, iter(rng.hashes)
    for level in range(rng.size.bit_length() - 1, -1, -1):
        if (rng.size >> level) & 1:
            out[NodeID(level, start >> level)] = next(hashes)
            start += 1 << level
    return out
