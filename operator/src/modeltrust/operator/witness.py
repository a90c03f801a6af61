"""Witness quorum: believe a ledger checkpoint only when enough trusted witnesses cosigned it.

A ledger that shows the operator one history and auditors another (a split view) signs
both with its own key; only independent witnesses who cosign what they have seen close
that gap. When a policy names witnesses and a quorum, the operator enforces it here, over
the signed note the verifying client already checked with the ledger key:

- `WitnessRequirement.check(note)` verifies the ledger signature and `quorum` distinct
  witness cosignatures (C2SP tlog-cosignature, via modeltrust.chain.checkpoint);
- `WitnessedTrustStore` wraps the trusted-checkpoint store so that trust only ever moves to
  a witnessed checkpoint. The client accepts an answer only at the trusted checkpoint or at
  a newer one it moved trust to, so every entry it returns is proven in a witnessed tree.

What a witnessed checkpoint does NOT give: completeness of a lookup. An inclusion proof
shows that a returned entry is in the tree, never that the ledger returned all matching
ones, so an empty lookup ("no revocation of this digest") proves nothing, witnessed or
not. Revocations are therefore read from the log itself up to a witnessed checkpoint
(revocation_index.py), where a dropped entry changes the root.

The client (modeltrust.chain.client) has no witness option; this wrapper is the hook.

Freshness (spec.ledger.maxCosignatureAge): C2SP checkpoints carry no time, so a ledger (or
anyone in the path) could keep showing the operator an old checkpoint, one that leaves out
a new revocation: a frozen view. Witness cosignatures (C2SP tlog-cosignature) carry the
time the witness made them, and a witness cosigns a checkpoint only while it is the latest
it knows of (a live ledger has it cosigned again every few seconds). With a maximum age, a
cosignature older than that does not count toward the quorum, so a frozen view is refused
once its cosignatures are that old. It is checked on the checkpoint the operator reads the
log up to (`FreshCheckpointClient.checkpoint`: every decision, the follower, the policy's
LedgerReachable) and on trust resets; the trusted-checkpoint record and the pods' proofs
need the quorum only (they record what was verified when it was).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from modeltrust.chain.checkpoint import Cosignature, verify_checkpoint, witness_cosignatures
from modeltrust.chain.client import AsyncLedgerClient
from modeltrust.chain.client_flows import VerifiedCheckpoint
from modeltrust.chain.errors import ChainError
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteVerifier
from modeltrust.chain.trust_state import AsyncTrustStateStore, LedgerTrustError, TrustedCheckpoint
from modeltrust.operator.errors import SpecError
from modeltrust.operator.types import LedgerSpec

# A cosignature made up to this many seconds "in the future" still counts (clocks differ);
# one further ahead does not: it could stretch the freshness window.
CLOCK_SKEW_SECONDS = 60


class WitnessQuorumError(LedgerTrustError):
    """A checkpoint lacks the witness cosignatures the policy requires."""


class StaleCosignaturesError(WitnessQuorumError):
    """Enough witnesses cosigned the checkpoint, but not recently enough (maxCosignatureAge)."""


class CheckpointSignatureError(LedgerTrustError):
    """A checkpoint's ledger signature, or a witness cosignature on it, does not verify:
    the note is forged or altered. Not a missing witness: nothing would fix it by waiting
    for cosignatures."""


@dataclass(frozen=True)
class WitnessRequirement:
    log: NoteVerifier
    origin: str
    witnesses: tuple[NoteVerifier, ...]
    quorum: int
    max_age: float | None = None  # seconds; None: cosignatures of any age count

    @classmethod
    def from_ledger(cls, ledger: LedgerSpec) -> WitnessRequirement | None:
        """None when the policy requires no cosignatures (witnessQuorum 0)."""
        if ledger.witness_quorum <= 0:
            return None
        try:
            log = NoteVerifier.from_verifier_key(ledger.verifier_key)
        except ChainError as exc:
            raise SpecError("spec.ledger.verifierKey", str(exc)) from None
        witnesses: list[NoteVerifier] = []
        for i, text in enumerate(ledger.witnesses):
            try:
                w = NoteVerifier.from_verifier_key(text)
            except ChainError as exc:
                raise SpecError(f"spec.ledger.witnesses[{i}]", str(exc)) from None
            if (w.name, w.key_id) == (log.name, log.key_id):
                raise SpecError(
                    f"spec.ledger.witnesses[{i}]", "is the ledger's own key, not a witness"
                )
            if ledger.max_cosignature_age is not None and w.alg != ALG_COSIGNATURE_V1:
                raise SpecError(
                    f"spec.ledger.witnesses[{i}]",
                    "is an Ed25519 note key (type 0x01) whose signatures carry no time; "
                    "spec.ledger.maxCosignatureAge needs cosignature keys (type 0x04, "
                    "`modeltrust ledger keygen --witness`)",
                )
            witnesses.append(w)
        if len({(w.name, w.key_id) for w in witnesses}) < ledger.witness_quorum:
            raise SpecError(
                "spec.ledger.witnessQuorum",
                f"{ledger.witness_quorum} exceeds the number of distinct witnesses",
            )
        return cls(
            log,
            ledger.expected_origin,
            tuple(witnesses),
            ledger.witness_quorum,
            ledger.max_cosignature_age,
        )

    @property
    def identity(self) -> str:
        """What the trusted-checkpoint record for this requirement is keyed on."""
        keys = sorted(w.verifier_key() for w in self.witnesses)
        return "\n".join([self.log.verifier_key(), *keys, f"quorum={self.quorum}"])

    def check(
        self, note: str, *, what: str = "checkpoint", fresh: bool = False, now: float | None = None
    ) -> None:
        """Raise CheckpointSignatureError when the ledger's signature (or a witness's) does
        not verify or the note is malformed, WitnessQuorumError when too few witnesses
        cosigned it. With ``fresh`` and a maximum age, only cosignatures made within it
        count (StaleCosignaturesError when the others would have met the quorum)."""
        try:
            verify_checkpoint(note, self.log, origin=self.origin)
        except ChainError as exc:
            raise CheckpointSignatureError(
                f"{what} does not verify with the ledger's key: {exc}"
            ) from None
        try:
            found = witness_cosignatures(note, self.witnesses)
        except ChainError as exc:  # InvalidSignatureError: a forged witness cosignature
            raise CheckpointSignatureError(
                f"{what} carries a witness cosignature that does not verify: {exc}"
            ) from None
        max_age = self.max_age if fresh else None
        clock = time.time() if now is None else now
        counted = [c for c in found if max_age is None or _fresh(c, clock, max_age)]
        if len(counted) >= self.quorum:
            return
        within = f" within maxCosignatureAge {_seconds(max_age)}" if max_age is not None else ""
        message = (
            f"{what} is not cosigned by {self.quorum} of the policy's {len(self.witnesses)} "
            f"witness(es){within}: {self._describe(found, clock, max_age)}"
        )
        if len(found) >= self.quorum:
            raise StaleCosignaturesError(
                f"{message}. A frozen view, or witnesses that stopped cosigning: check that "
                "they run and that the ledger reaches them (its --witness-refresh must be "
                "well below the maximum age)"
            )
        raise WitnessQuorumError(message)

    def _describe(self, found: list[Cosignature], now: float, max_age: float | None) -> str:
        by_key = {(c.witness.name, c.witness.key_id): c for c in found}
        parts = []
        for w in self.witnesses:
            c = by_key.get((w.name, w.key_id))
            if c is None:
                parts.append(f"{w.name} did not cosign it")
            elif c.timestamp is None:
                parts.append(f"{w.name} cosigned it (no time: a type 0x01 key)")
            elif c.timestamp > now + CLOCK_SKEW_SECONDS:
                parts.append(
                    f"{w.name} cosigned it {c.timestamp - now:.0f} s in the future (its clock?)"
                )
            else:
                age = max(0.0, now - c.timestamp)
                old = " (too old)" if max_age is not None and age > max_age else ""
                parts.append(f"{w.name} cosigned it {age:.0f} s ago{old}")
        return "; ".join(parts)


def _fresh(c: Cosignature, now: float, max_age: float) -> bool:
    if c.timestamp is None:
        return False
    return now - max_age <= c.timestamp <= now + CLOCK_SKEW_SECONDS


def _seconds(value: float) -> str:
    return f"{value:g}s"


class FreshCheckpointClient(AsyncLedgerClient):
    """The verifying client whose ``checkpoint()`` (what the operator reads the log up to)
    also requires the policy's witness quorum within maxCosignatureAge."""

    def __init__(
        self,
        url: str,
        *,
        requirement: WitnessRequirement,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        self.requirement = requirement
        self.clock = clock

    async def checkpoint(self) -> VerifiedCheckpoint:
        vcp = await super().checkpoint()
        self.requirement.check(
            vcp.note,
            what=f"the ledger's checkpoint of size {vcp.size}",
            fresh=True,
            now=self.clock(),
        )
        return vcp


class ResettableTrustStore(AsyncTrustStateStore, Protocol):
    async def reset(self, new: TrustedCheckpoint) -> TrustedCheckpoint | None: ...


class WitnessedTrustStore:
    """An AsyncTrustStateStore that holds only checkpoints meeting the witness quorum."""

    def __init__(self, inner: ResettableTrustStore, requirement: WitnessRequirement) -> None:
        self.inner = inner
        self.requirement = requirement
        # The note last found witnessed: every ledger call loads the same high-water mark,
        # and its cosignatures need checking once, not on every call.
        self._witnessed: str | None = None

    async def load(self) -> TrustedCheckpoint | None:
        stored = await self.inner.load()
        if stored is not None and stored.note != self._witnessed:
            # Only this wrapper writes the record; an unwitnessed one was edited by hand.
            what = f"the trusted checkpoint of size {stored.size}"
            self.requirement.check(stored.note, what=what)
            self._witnessed = stored.note
        return stored

    async def compare_and_swap(
        self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint
    ) -> bool:
        self.requirement.check(new.note, what=f"the ledger's checkpoint of size {new.size}")
        swapped = await self.inner.compare_and_swap(expected, new)
        if swapped:
            self._witnessed = new.note
        return swapped

    async def reset(self, new: TrustedCheckpoint) -> TrustedCheckpoint | None:
        """An explicit trust reset (trust_reset.py): only to a witnessed checkpoint."""
        self.requirement.check(new.note, what=f"the reset checkpoint of size {new.size}")
        before = await self.inner.reset(new)
        self._witnessed = new.note
        return before
