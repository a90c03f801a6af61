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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.errors import ChainError, UnknownVerifierError
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.trust_state import AsyncTrustStateStore, LedgerTrustError, TrustedCheckpoint
from modeltrust.operator.errors import SpecError
from modeltrust.operator.types import LedgerSpec


class WitnessQuorumError(LedgerTrustError):
    """A checkpoint lacks the witness cosignatures the policy requires."""


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
            witnesses.append(w)
        if len({(w.name, w.key_id) for w in witnesses}) < ledger.witness_quorum:
            raise SpecError(
                "spec.ledger.witnessQuorum",
                f"{ledger.witness_quorum} exceeds the number of distinct witnesses",
            )
        return cls(log, ledger.expected_origin, tuple(witnesses), ledger.witness_quorum)

    @property
    def identity(self) -> str:
        """What the trusted-checkpoint record for this requirement is keyed on."""
        keys = sorted(w.verifier_key() for w in self.witnesses)
        return "\n".join([self.log.verifier_key(), *keys, f"quorum={self.quorum}"])

    def check(self, note: str, *, what: str = "checkpoint") -> None:
        """Raise CheckpointSignatureError when the ledger's signature (or a witness's) does
        not verify or the note is malformed, WitnessQuorumError when too few witnesses
        cosigned it."""
        try:
            verify_checkpoint(note, self.log, origin=self.origin)
        except ChainError as exc:
            raise CheckpointSignatureError(
                f"{what} does not verify with the ledger's key: {exc}"
            ) from None
        try:
            verify_checkpoint(
                note,
                self.log,
                origin=self.origin,
                witnesses=self.witnesses,
                witness_quorum=self.quorum,
            )
        except UnknownVerifierError as exc:
            raise WitnessQuorumError(
                f"{what} is not cosigned by {self.quorum} of the policy's "
                f"{len(self.witnesses)} witness(es): {exc}"
            ) from None
        except ChainError as exc:  # InvalidSignatureError: a forged witness cosignature
            raise CheckpointSignatureError(
                f"{what} carries a witness cosignature that does not verify: {exc}"
            ) from None


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
