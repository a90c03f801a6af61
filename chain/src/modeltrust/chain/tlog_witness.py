"""C2SP tlog-witness (c2sp.org/tlog-witness): the add-checkpoint request and answers, no I/O.

A log asks a witness to cosign a checkpoint with

    POST <submission prefix>/add-checkpoint

    old <size the witness last cosigned>\\n
    <base64 consistency proof hash>\\n          (0 to 63 lines, none when old is 0)
    \\n
    <signed checkpoint note>

and gets back 200 with the witness's cosignature lines (``— name base64\\n``), or a refusal:
404 (origin unknown), 403 (no trusted log signature verifies), 400 (old size larger than
the checkpoint's), 409 with ``text/x.tlog.size`` body ``<size>\\n`` (the old size is not the
size the witness last cosigned, or the same size with another root), 422 (the consistency
proof does not verify). Both sides of this protocol live in modeltrust.chain: the witness
(witness.py) parses with ``AddCheckpoint.parse``; the ledger (cosigning.py) encodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modeltrust.chain.errors import ChainError, HashEncodingError
from modeltrust.chain.merkle import hash_from_b64, hash_to_b64

ADD_CHECKPOINT_PATH = "/add-checkpoint"
SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_PROOF_LINES = 63  # the spec's limit: a consistency proof of a tree of up to 2**63 leaves
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


class WitnessProtocolError(ChainError, ValueError):
    """An add-checkpoint request or a witness's answer is not what c2sp.org/tlog-witness says."""


@dataclass(frozen=True)
class AddCheckpoint:
    """One add-checkpoint request: the old size, a consistency proof from it, the note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def encode(self) -> bytes:
        lines = [f"old {self.old_size}\n", *(hash_to_b64(h) + "\n" for h in self.proof), "\n"]
        return ("".join(lines) + self.note).encode()

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        """Parse a request body; WitnessProtocolError names what is malformed (answer 400)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WitnessProtocolError("the request body is not UTF-8") from None
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise WitnessProtocolError(
                "the request body needs an old size line, proof lines, an empty line and "
                "the checkpoint"
            )
        lines = head.split("\n")
        first = lines[0]
        if not first.startswith("old ") or not _SIZE.fullmatch(first[4:]):
            raise WitnessProtocolError(
                f"the first line must be 'old <size>' in decimal without leading zeroes, "
                f"got {first[:40]!r}"
            )
        old = int(first[4:])
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise WitnessProtocolError(
                f"{len(lines) - 1} consistency proof lines, at most {MAX_PROOF_LINES} are allowed"
            )
        try:
            proof = tuple(
                hash_from_b64(line, f"consistency proof line {i + 1}")
                for i, line in enumerate(lines[1:])
            )
        except HashEncodingError as exc:
            raise WitnessProtocolError(str(exc)) from None
        if old == 0 and proof:
            raise WitnessProtocolError("the consistency proof must be empty when the old size is 0")
        return cls(old, proof, note)


def encode_size(size: int) -> bytes:
    """The body of a 409 answer: the size the witness last cosigned."""
    return f"{size}\n".encode()


def parse_size(body: bytes) -> int:
    """The size in a 409 answer's ``text/x.tlog.size`` body."""
    text = body.decode("ascii", "replace")
    if not text.endswith("\n") or not _SIZE.fullmatch(text[:-1]):
        raise WitnessProtocolError(
            f"the witness's 409 answer is not a tree size line: {text[:40]!r}"
        )
    return int(text[:-1])
