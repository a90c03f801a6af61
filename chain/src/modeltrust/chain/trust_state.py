"""The client's memory of the newest checkpoint it verified, and the errors about trusting a ledger.

A TrustStateStore moves forward only, by compare-and-swap: a verifier that finds a
checkpoint older than, or inconsistent with, the one it remembers has caught the
ledger rolling back or forking. The file store here suits CLIs and single processes;
the operator keeps the same record in a ConfigMap (operator trust_store.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modeltrust.chain.errors import ChainError, HashEncodingError, TrustStateError
from modeltrust.chain.merkle import hash_from_b64, hash_to_b64


class LedgerTrustError(ChainError):
    """The ledger's answer cannot be trusted (bad signature, bad proof, rollback, fork)."""


class LedgerRollbackError(LedgerTrustError):
    """The ledger presented a checkpoint older than one already verified."""


class LedgerForkError(LedgerTrustError):
    """The ledger presented a checkpoint inconsistent with one already verified."""


class LedgerEquivocationError(LedgerForkError):
    """Two checkpoints of one size with different roots, both signed by the ledger's key:
    evidence against the ledger itself, whoever served it (a mirror cannot forge it)."""


@dataclass(frozen=True)
class TrustedCheckpoint:
    origin: str
    size: int
    root_hash: bytes
    note: str

    def to_json(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root_hash": hash_to_b64(self.root_hash),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, obj: object) -> TrustedCheckpoint:
        if not isinstance(obj, dict):
            raise TrustStateError("trusted checkpoint record must be a JSON object")
        origin, size, root, note = (obj.get(k) for k in ("origin", "size", "root_hash", "note"))
        if not (
            isinstance(origin, str)
            and type(size) is int
            and size >= 0
            and isinstance(root, str)
            and isinstance(note, str)
        ):
            raise TrustStateError("trusted checkpoint record lacks origin, size, root_hash or note")
        try:
            root_hash = hash_from_b64(root, "trusted checkpoint root_hash")
        except HashEncodingError as exc:
            raise TrustStateError(str(exc)) from None
        return cls(origin, size, root_hash, note)

    def same_tree(self, other: TrustedCheckpoint | None) -> bool:
        return other is not None and (self.size, self.root_hash) == (other.size, other.root_hash)


class TrustStateStore(Protocol):
    def load(self) -> TrustedCheckpoint | None: ...

    def compare_and_swap(self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint) -> bool:
        """Store ``new`` if the current record is ``expected`` (same size and root); else False."""
        ...


class AsyncTrustStateStore(Protocol):
    async def load(self) -> TrustedCheckpoint | None: ...

    async def compare_and_swap(
        self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint
    ) -> bool: ...


def _check_forward(current: TrustedCheckpoint | None, new: TrustedCheckpoint) -> None:
    if current is not None and new.size < current.size:
        raise LedgerRollbackError(
            f"refusing to move the trusted checkpoint back from size {current.size} to {new.size}"
        )


class MemoryTrustStateStore:
    """Trust kept in memory only (tests, one-shot commands)."""

    def __init__(self, initial: TrustedCheckpoint | None = None) -> None:
        self._current = initial

    def load(self) -> TrustedCheckpoint | None:
        return self._current

    def compare_and_swap(self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint) -> bool:
        current = self._current
        if not (
            current is expected is None or (expected is not None and expected.same_tree(current))
        ):
            return False
        _check_forward(current, new)
        self._current = new
        return True


class FileTrustStateStore:
    """Trust kept in a JSON file, updated atomically (write, fsync, rename) under an flock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def load(self) -> TrustedCheckpoint | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return TrustedCheckpoint.from_json(json.loads(raw))
        except (TrustStateError, ValueError) as exc:  # ValueError: json.loads
            # A damaged record must not silently reset trust to "first use".
            raise LedgerTrustError(
                f"trusted checkpoint file {self.path} is unreadable: {exc}"
            ) from exc

    def compare_and_swap(self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(
            self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            current = self.load()
            if not (
                current is expected is None
                or (expected is not None and expected.same_tree(current))
            ):
                return False
            _check_forward(current, new)
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.write(json.dumps(new.to_json(), indent=2).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return True
        finally:
            os.close(lock_fd)
