"""The audit outbox: every decision reaches its ledger exactly once, eventually.

Why one long module: keeping, ordering, draining and reporting pending entries are one
exactly-once protocol; its parts are only correct together.

A decision that cannot be recorded now (the ledger is down, refuses the token, has no
trusted checkpoint, or was judged inconsistent) is kept, with the exact entry that will be
appended, in one ConfigMap in the operator's namespace (`modeltrust-audit-outbox`), and
appended later in the order it was decided, per ledger: by a background drain, and before
any new entry for that ledger (a rollout is still never acted on before its own entry is on
the ledger: `record(..., keep=False)` raises instead of keeping it).

Why a ConfigMap in the operator's namespace (docs/operator.md, "Audit outbox"):
- it survives an operator restart, and a ModelDeployment's deletion (an annotation or a
  status field on the ModelDeployment would vanish with it, and could be edited by anyone
  who may edit ModelDeployments in that namespace);
- namespace users cannot read or change it; the operator already may get, create and
  update ConfigMaps there (its trusted-checkpoint records), so no new RBAC;
- one object gives one order: entries carry a sequence number and are appended in it;
- size: a ConfigMap holds at most 1 MiB; the outbox keeps up to MAX_BYTES of entries and
  refuses more (logged at ERROR, event, metric modeltrust_operator_audit_outbox_dropped).
Exactly once: the stored entry is the one appended (same bytes, same idempotency key), and
the ledger answers a resubmitted entry with the index it already has, so a crash between
the append and the removal from the outbox records nothing twice.
Tampering: whoever can write ConfigMaps in the operator's namespace can drop or add pending
entries; that namespace is as sensitive as the trusted-checkpoint records kept beside them.

The pure state (OutboxState) is separate from the I/O (AuditOutbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modeltrust.chain.entries import AuditEntry, entry_from_json, entry_to_json
from modeltrust.chain.errors import ChainError
from modeltrust.chain.trust_state import TrustedCheckpoint
from modeltrust.operator.conditions import get_condition, rfc3339, set_condition
from modeltrust.operator.errors import Conflict, LedgerInconsistent, LedgerUnverified
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.types import CheckpointRef, LedgerSpec

if TYPE_CHECKING:
    from modeltrust.operator.deps import EventSink

log = logging.getLogger("modeltrust.operator.outbox")

CONFIG_MAP = "modeltrust-audit-outbox"
DATA_KEY = "pending.json"
MAX_BYTES = 900 * 1024  # of the ConfigMap's 1 MiB
WRITE_ATTEMPTS = 5
AUDIT_PENDING = "AuditPending"  # the ModelDeployment condition


# --- pure ----------------------------------------------------------------------------------


def ledger_to_json(ledger: LedgerSpec) -> dict[str, Any]:
    doc: dict[str, Any] = {"url": ledger.url, "verifierKey": ledger.verifier_key}
    if ledger.origin:
        doc["origin"] = ledger.origin
    if ledger.witnesses:
        doc["witnesses"] = list(ledger.witnesses)
        doc["witnessQuorum"] = ledger.witness_quorum
    if ledger.max_cosignature_age is not None:
        doc["maxCosignatureAgeSeconds"] = ledger.max_cosignature_age
    if ledger.minimum_checkpoint is not None:
        doc["minimumCheckpoint"] = {
            "size": ledger.minimum_checkpoint.size,
            "rootHash": ledger.minimum_checkpoint.root_hash.hex(),
        }
    return doc


def ledger_from_json(doc: Mapping[str, Any]) -> LedgerSpec:
    minimum = None
    if doc.get("minimumCheckpoint"):
        m = doc["minimumCheckpoint"]
        minimum = CheckpointRef(int(m["size"]), bytes.fromhex(m["rootHash"]))
    return LedgerSpec(
        url=str(doc["url"]),
        verifier_key=str(doc["verifierKey"]),
        origin=doc.get("origin"),
        witnesses=tuple(doc.get("witnesses") or ()),
        witness_quorum=int(doc.get("witnessQuorum") or 0),
        minimum_checkpoint=minimum,
        max_cosignature_age=(
            float(doc["maxCosignatureAgeSeconds"])
            if doc.get("maxCosignatureAgeSeconds") is not None
            else None
        ),
    )


@dataclass(frozen=True)
class Pending:
    seq: int
    ledger: LedgerSpec
    entry: AuditEntry
    queued: str  # RFC 3339, when the decision was kept
    error: str = ""  # why it was not recorded (the last try)

    @property
    def key(self) -> str:
        return self.entry.idempotency_key

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ledger": ledger_to_json(self.ledger),
            "entry": entry_to_json(self.entry),
            "queued": self.queued,
            "error": self.error[:1000],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Pending:
        entry = entry_from_json(doc["entry"])
        if not isinstance(entry, AuditEntry):
            raise ValueError("an outbox item is not an audit entry")
        return cls(
            int(doc["seq"]),
            ledger_from_json(doc["ledger"]),
            entry,
            str(doc["queued"]),
            str(doc.get("error") or ""),
        )


def ledger_identity(ledger: LedgerSpec) -> str:
    """Entries for one ledger, as a policy names it (URL, key, origin, witnesses, anchor), are
    appended in order; others do not wait on them (an entry held back by one policy's
    minimumCheckpoint must not hold back another policy's entries on the same ledger)."""
    return json.dumps(ledger_to_json(ledger), sort_keys=True)


@dataclass
class OutboxState:
    items: list[Pending] = field(default_factory=list)
    next_seq: int = 1

    def has(self, key: str) -> bool:
        return any(p.key == key for p in self.items)

    def add(
        self, ledger: LedgerSpec, entry: AuditEntry, queued: str, error: str, *, limit: int
    ) -> Pending | None:
        """Keep `entry` (a decision already kept under its idempotency key is not kept
        twice: a retry of the same decision). None when it does not fit in `limit` bytes."""
        for p in self.items:
            if p.key == entry.idempotency_key:
                return p
        item = Pending(self.next_seq, ledger, entry, queued, error)
        if self.encoded_size() + len(json.dumps(item.to_json())) + 2 > limit:
            return None
        self.items.append(item)
        self.next_seq += 1
        return item

    def remove(self, seqs: Iterable[int]) -> None:
        gone = set(seqs)
        self.items = [p for p in self.items if p.seq not in gone]

    def note_error(self, seq: int, error: str) -> None:
        self.items = [replace(p, error=error) if p.seq == seq else p for p in self.items]

    def for_ledger(self, identity: str) -> list[Pending]:
        return sorted(
            (p for p in self.items if ledger_identity(p.ledger) == identity), key=lambda p: p.seq
        )

    def ledgers(self) -> list[str]:
        """Ledger identities with pending entries, by their oldest entry."""
        seen: list[str] = []
        for p in sorted(self.items, key=lambda p: p.seq):
            if ledger_identity(p.ledger) not in seen:
                seen.append(ledger_identity(p.ledger))
        return seen

    def for_object(self, uid: str) -> list[Pending]:
        return sorted((p for p in self.items if p.entry.uid == uid), key=lambda p: p.seq)

    def to_data(self) -> str:
        return json.dumps(
            {"nextSeq": self.next_seq, "items": [p.to_json() for p in self.items]},
            separators=(",", ":"),
        )

    def encoded_size(self) -> int:
        return len(self.to_data())

    @classmethod
    def from_data(cls, text: str | None) -> OutboxState:
        if not text:
            return cls()
        doc = json.loads(text)
        items = [Pending.from_json(d) for d in doc.get("items") or []]
        next_seq = max([int(doc.get("nextSeq") or 1), *(p.seq + 1 for p in items)])
        return cls(sorted(items, key=lambda p: p.seq), next_seq)


def age_seconds(queued: str, now: datetime) -> float:
    try:
        when = datetime.strptime(queued, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return 0.0
    return max(0.0, (now - when).total_seconds())


def stats(items: Iterable[Pending], now: datetime) -> tuple[int, float]:
    """(how many are pending, age in seconds of the oldest)."""
    listed = list(items)
    if not listed:
        return 0, 0.0
    return len(listed), max(age_seconds(p.queued, now) for p in listed)


def pending_condition(
    conditions: list[dict[str, Any]], pending: list[Pending], generation: int, now: datetime
) -> list[dict[str, Any]]:
    """The AuditPending condition for one ModelDeployment's pending decisions."""
    if pending:
        actions = ", ".join(f"{p.entry.action} (generation {p.entry.generation})" for p in pending)
        message = (
            f"{len(pending)} decision(s) not yet on the ledger, kept in the audit outbox since "
            f"{pending[0].queued}: {actions}; last error: {pending[-1].error or 'none'}"
        )
        return set_condition(
            conditions, AUDIT_PENDING, "True", "LedgerUnavailable", message[:4000], generation, now
        )
    if get_condition(conditions, AUDIT_PENDING) is None:
        return conditions
    return set_condition(
        conditions, AUDIT_PENDING, "False", "Recorded",
        "every decision is recorded on the ledger", generation, now,
    )  # fmt: skip


# --- I/O -----------------------------------------------------------------------------------


class OutboxFull(Exception):
    """The outbox has no room for another entry."""


class AuditOutbox:
    """Kept decisions, their order, and their delivery. One per operator process (the
    operator runs one replica); the ConfigMap is read at start and written through."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        ledger: LedgerAccess,
        metrics: Metrics,
        events: EventSink,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        actor: str = "modeltrust-operator",
        limit: int = MAX_BYTES,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.ledger = ledger
        self.metrics = metrics
        self.events = events
        self.clock = clock
        self.actor = actor
        self.limit = limit
        self._state: OutboxState | None = None
        self._resource_version: str | None = None
        # One change of the kept state at a time (held briefly, never across a ledger call:
        # a ledger call can report a trust event, which is kept).
        self._lock = asyncio.Lock()
        self._draining = asyncio.Lock()  # one delivery at a time (keeps the order)
        self._urls: dict[str, str] = {}  # ledger identity -> url, for metric labels
        # Objects whose AuditPending condition may need a change (uid -> (namespace, name)).
        self._touched: dict[str, tuple[str, str]] = {}

    # -- storage --

    async def _load(self) -> OutboxState:
        if self._state is None:
            cm = await self.kube.get_config_map(self.namespace, CONFIG_MAP)
            self._resource_version = None if cm is None else cm["metadata"].get("resourceVersion")
            text = None if cm is None else (cm.get("data") or {}).get(DATA_KEY)
            try:
                self._state = OutboxState.from_data(text)
            except (ValueError, KeyError, TypeError, ChainError) as exc:
                # Never start from an empty outbox over a damaged one: that would lose them.
                raise RuntimeError(
                    f"ConfigMap {self.namespace}/{CONFIG_MAP} is unreadable ({exc}); repair it"
                ) from exc
            for p in self._state.items:
                self._urls[ledger_identity(p.ledger)] = p.ledger.url
                self._touched[p.entry.uid] = (p.entry.namespace, p.entry.name)
            if self._state.items:
                log.warning("audit outbox: %d decision(s) waiting from before the restart",
                            len(self._state.items))  # fmt: skip
        return self._state

    async def _store(self, state: OutboxState) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIG_MAP,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/part-of": "modeltrust"},
            },
            "data": {DATA_KEY: state.to_data()},
        }
        for _ in range(WRITE_ATTEMPTS):
            try:
                if self._resource_version is None:
                    written = await self.kube.create_config_map(self.namespace, body)
                else:
                    body["metadata"]["resourceVersion"] = self._resource_version
                    replaced = await self.kube.replace_config_map(self.namespace, CONFIG_MAP, body)
                    if replaced is None:  # deleted meanwhile: this process holds the truth
                        self._resource_version = None
                        body["metadata"].pop("resourceVersion", None)
                        continue
                    written = replaced
            except Conflict:
                # Only this process writes it; someone edited it. Our copy is what we know
                # was decided; overwrite (logged), never merge foreign entries in.
                cm = await self.kube.get_config_map(self.namespace, CONFIG_MAP)
                self._resource_version = (
                    None if cm is None else cm["metadata"].get("resourceVersion")
                )
                log.error("ConfigMap %s/%s was changed by someone else; rewriting it",
                          self.namespace, CONFIG_MAP)  # fmt: skip
                body["metadata"].pop("resourceVersion", None)
                continue
            self._resource_version = (written.get("metadata") or {}).get("resourceVersion")
            return
        raise RuntimeError(f"ConfigMap {self.namespace}/{CONFIG_MAP} could not be written")

    # -- keeping and delivering --

    def _pending_for(self, ledger: LedgerSpec) -> bool:
        return self._state is not None and bool(self._state.for_ledger(ledger_identity(ledger)))

    async def keep(self, ledger: LedgerSpec, entry: AuditEntry, error: str) -> Pending:
        """Keep `entry` durably; OutboxFull when there is no room (logged, evented by the
        caller, counted)."""
        async with self._lock:
            state = await self._load()
            if state.has(entry.idempotency_key):
                return next(p for p in state.items if p.key == entry.idempotency_key)
            trial = OutboxState(list(state.items), state.next_seq)
            item = trial.add(ledger, entry, rfc3339(self.clock()), error, limit=self.limit)
            if item is None:
                self.metrics.outbox_dropped.labels(ledger=ledger.url).inc()
                log.error(
                    "AUDIT LOST: the audit outbox is full (%d bytes); %s of %s/%s (%s) is not "
                    "recorded: %s", state.encoded_size(), entry.action, entry.namespace,
                    entry.name, entry.idempotency_key, error,
                )  # fmt: skip
                raise OutboxFull(f"the audit outbox is full; {entry.action} not recorded")
            await self._store(trial)
            self._state = trial
            self._urls[ledger_identity(ledger)] = ledger.url
            self._touched[entry.uid] = (entry.namespace, entry.name)
            log.warning("audit outbox: kept %s of %s/%s (%s) until the ledger answers: %s",
                        entry.action, entry.namespace, entry.name, entry.idempotency_key,
                        error)  # fmt: skip
            self._update_metrics()
            return item

    async def record(self, ledger: LedgerSpec, entry: AuditEntry, *, keep: bool) -> int | None:
        """Append `entry` after everything kept for its ledger; its index, or None when it
        was kept for later. keep=False (a rollout): raise LedgerUnverified/LedgerInconsistent
        instead of keeping it. OutboxFull when it should be kept and there is no room."""
        await self._load()
        if self._pending_for(ledger):
            await self.drain(only=ledger_identity(ledger))
            if self._pending_for(ledger):
                message = "earlier decisions for this ledger are still waiting in the audit outbox"
                if not keep:
                    raise LedgerUnverified(message)
                await self.keep(ledger, entry, message)
                return None
        try:
            return await self.ledger.append_audit(ledger, entry)
        except (LedgerUnverified, LedgerInconsistent) as exc:
            if not keep:
                raise
            await self.keep(ledger, entry, str(exc))
            return None

    async def drain(self, only: str | None = None) -> int:
        """Append what is kept, in order, per ledger; stop at a ledger's first failure.
        Returns how many were recorded."""
        recorded = 0
        async with self._draining:
            async with self._lock:
                state = await self._load()
                batches = [
                    (identity, state.for_ledger(identity))
                    for identity in state.ledgers()
                    if only is None or identity == only
                ]
            for _, items in batches:
                done: list[int] = []
                failed: tuple[int, str] | None = None
                for item in items:
                    try:
                        index = await self.ledger.append_audit(item.ledger, item.entry)
                    except (LedgerUnverified, LedgerInconsistent) as exc:
                        failed = (item.seq, str(exc))
                        break
                    done.append(item.seq)
                    self._touched[item.entry.uid] = (item.entry.namespace, item.entry.name)
                    log.info("audit outbox: recorded %s of %s/%s at ledger index %d",
                             item.entry.action, item.entry.namespace, item.entry.name,
                             index)  # fmt: skip
                async with self._lock:
                    current = await self._load()
                    trial = OutboxState(list(current.items), current.next_seq)
                    trial.remove(done)
                    if failed is not None:
                        trial.note_error(*failed)
                    if done:
                        await self._store(trial)
                    self._state = trial
                recorded += len(done)
            async with self._lock:
                self._update_metrics()
        return recorded

    def _update_metrics(self) -> None:
        state = self._state or OutboxState()
        now = self.clock()
        for url in set(self._urls.values()):
            count, oldest = stats((p for p in state.items if p.ledger.url == url), now)
            self.metrics.outbox_pending.labels(ledger=url).set(count)
            self.metrics.outbox_oldest_age.labels(ledger=url).set(oldest)

    def pending(self) -> list[Pending]:
        return list(self._state.items) if self._state is not None else []

    # -- trust events (trust_reset, ledger_access) --

    async def trust_event(
        self, ledger: LedgerSpec, kind: str, checkpoint: TrustedCheckpoint, reasons: tuple[str, ...]
    ) -> None:
        """Audit a trust event. Only kept here (the drain appends it): it is reported from
        inside the trusted-checkpoint store, which an append would need again."""
        from modeltrust.operator.trust_reset import trust_audit_entry

        if kind == "trust-on-first-use":
            self.metrics.trust_first_use.labels(ledger=ledger.url).inc()
        entry = trust_audit_entry(
            ledger, kind, checkpoint, reasons,
            namespace=self.namespace, actor=self.actor, now=self.clock(),
        )  # fmt: skip
        with contextlib.suppress(OutboxFull):  # logged at ERROR and counted by keep
            await self.keep(ledger, entry, "trust events are recorded by the outbox drain")

    # -- conditions --

    async def sync_conditions(self, lock: Callable[[str], asyncio.Lock]) -> None:
        """Bring each touched ModelDeployment's AuditPending condition up to date (under the
        object's lock, read fresh: reconcile's own status writes may have replaced it)."""
        touched, self._touched = self._touched, {}
        state = self._state or OutboxState()
        for uid, (namespace, name) in touched.items():
            pending = state.for_object(uid)
            try:
                async with lock(uid):
                    md = await self.kube.get_model_deployment(namespace, name)
                    if md is None or (md.get("metadata") or {}).get("uid") != uid:
                        continue
                    status = md.get("status") or {}
                    conditions = list(status.get("conditions") or [])
                    generation = int(status.get("observedGeneration") or 0)
                    updated = pending_condition(conditions, pending, generation, self.clock())
                    if _differs(conditions, updated):
                        await self.kube.patch_model_deployment_status(
                            namespace, name, {"conditions": updated}
                        )
            except Exception:  # retried at the next round
                self._touched[uid] = (namespace, name)
                log.exception("audit outbox: AuditPending of %s/%s not updated", namespace, name)
            if pending:
                self._touched[uid] = (namespace, name)  # keep it current while it waits


def _differs(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> bool:
    def pick(conds: list[dict[str, Any]]) -> tuple[Any, ...] | None:
        c = get_condition(conds, AUDIT_PENDING)
        return None if c is None else (c.get("status"), c.get("reason"), c.get("message"))

    return pick(before) != pick(after)


async def drain_forever(
    outbox: AuditOutbox, interval: float, lock: Callable[[str], asyncio.Lock]
) -> None:
    """The background drain (handlers start it): deliver, then update conditions."""
    while True:
        try:
            await outbox.drain()
            await outbox.sync_conditions(lock)
        except Exception:  # the next round tries again
            log.exception("audit outbox drain failed")
        await asyncio.sleep(interval)
