"""Exceptions of the ledger library.

Every message names the check that failed, so a log line alone tells an operator
what was wrong (in the style of sigstore-python's verification errors).
Errors about malformed or unverifiable input also subclass ValueError, so callers
that only know "bad input" can catch that.
"""

from __future__ import annotations


class ChainError(Exception):
    """Base class of every error raised by modeltrust.chain."""


class HashSizeError(ChainError, ValueError):
    """A hash is not exactly 32 bytes."""


class ProofError(ChainError, ValueError):
    """A Merkle proof (or the request for one) is invalid."""


class InclusionProofError(ProofError):
    """An inclusion proof does not prove the leaf is in the tree."""


class ConsistencyProofError(ProofError):
    """A consistency proof does not prove one tree is a prefix of the other."""


class MissingNodeError(ChainError, KeyError):
    """The node store does not hold a node the computation needs."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else "missing node"


class NoteError(ChainError, ValueError):
    """A signed note is malformed or lacks the required verified signatures."""


class CheckpointError(ChainError, ValueError):
    """A checkpoint body is malformed or does not match what was expected."""


class EntryError(ChainError, ValueError):
    """A ledger entry is malformed (wrong field, type, length or format)."""


class SignatureError(ChainError, ValueError):
    """A publisher signature is malformed or does not verify."""


class CanonicalJSONError(ChainError, ValueError):
    """A value cannot be encoded as, or a document is not, strict canonical JSON."""


class BlockError(ChainError, ValueError):
    """A block header is malformed or does not link to its predecessor."""
