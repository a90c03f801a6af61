"""C2SP tlog-checkpoint bodies (c2sp.org/tlog-checkpoint) and their signed notes.

Body: ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` then optional non-empty
extension lines. Parsing is strict: a checkpoint any other implementation would
read differently is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from modeltrust.chain.errors import (
    CheckpointError,
    HashEncodingError,
    InvalidArgumentError,
    InvalidSignatureError,
    UnknownVerifierError,
)
from modeltrust.chain.merkle import HASH_SIZE, hash_from_b64, hash_to_b64
from modeltrust.chain.note import (
    ALG_COSIGNATURE_V1,
    NoteSigner,
    NoteVerifier,
    cosignature_time,
    open_note,
    parse_note,
    sign_note,
)

MAX_TREE_SIZE = (1 << 63) - 1
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")  # ASCII decimal, no leading zeroes


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("checkpoint origin must be a non-empty single line")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint tree size {self.size} is out of range")
        if len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash is {len(self.root_hash)} bytes, not 32")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise CheckpointError("checkpoint extension lines must be non-empty single lines")

    def to_text(self) -> str:
        root = hash_to_b64(self.root_hash)
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointError("checkpoint body must end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint body needs origin, tree size and root hash lines")
        origin, size, root, *extensions = lines
        if not _SIZE.fullmatch(size):
            raise CheckpointError(f"checkpoint tree size {size[:30]!r} is not a canonical decimal")
        try:
            root_hash = hash_from_b64(root, "checkpoint root hash")
        except HashEncodingError as exc:
            raise CheckpointError(str(exc)) from None
        return cls(origin, int(size), root_hash, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    """The signed note carrying ``cp``, signed by the log key."""
    return sign_note(cp.to_text(), [signer])


def verify_checkpoint(
    note: str,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    witnesses: Sequence[NoteVerifier] = (),
    witness_quorum: int = 0,
) -> Checkpoint:
    """Verify the log's signature (and ``witness_quorum`` witness cosignatures) on a checkpoint.

    Raises InvalidSignatureError when a signature by the log key or a witness key does
    not verify (forged or altered), UnknownVerifierError when the log's signature or the
    witness quorum is missing, NoteError when the note is malformed, CheckpointError when
    the body is malformed or its origin is not the expected one.
    """
    if any((w.name, w.key_id) == (verifier.name, verifier.key_id) for w in witnesses):
        raise InvalidArgumentError("the log's own key cannot count as one of its witnesses")
    if witness_quorum > len(witnesses):
        raise InvalidArgumentError(
            f"witness quorum {witness_quorum} exceeds the {len(witnesses)} witnesses"
        )
    text = open_note(note, [verifier]).text
    cp = Checkpoint.from_text(text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin {cp.origin!r} is not the expected {origin!r}")
    if witness_quorum > 0:
        try:
            open_note(note, witnesses, quorum=witness_quorum)
        except UnknownVerifierError as e:
            raise UnknownVerifierError(f"witness quorum not met: {e}") from e
    return cp


@dataclass(frozen=True)
class Cosignature:
    """A witness cosignature that verified: whose, and when it was made (Unix seconds;
    None for a witness key of type 0x01, whose signatures carry no time)."""

    witness: NoteVerifier
    timestamp: int | None

    @property
    def name(self) -> str:
        return self.witness.name


def witness_cosignatures(note: str, witnesses: Sequence[NoteVerifier]) -> list[Cosignature]:
    """The cosignatures on ``note`` by ``witnesses`` that verify, one per witness key.

    Only the witnesses' lines are read (the log's signature is verify_checkpoint's job);
    lines by other keys are ignored. A line by one of ``witnesses`` that does not verify
    raises InvalidSignatureError, as in open_note: the note was altered or the line forged.
    """
    text, signatures = parse_note(note)
    known = {(w.name, w.key_id): w for w in witnesses}
    found: dict[tuple[str, bytes], Cosignature] = {}
    for sig in signatures:
        witness = known.get((sig.name, sig.key_id))
        if witness is None:
            continue
        if not witness.verify(text, sig.signature):
            raise InvalidSignatureError(
                f"cosignature by witness {sig.name}+{sig.key_id.hex()} does not verify"
            )
        stamp = cosignature_time(sig) if witness.alg == ALG_COSIGNATURE_V1 else None
        found[(sig.name, sig.key_id)] = Cosignature(witness, stamp)
    return list(found.values())
