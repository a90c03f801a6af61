"""Exceptions of the ledger library.

Every message names the check that failed, so a log line alone tells an operator
what was wrong (in the style of sigstore-python's verification errors).

modeltrust.chain raises only ChainError subclasses: a caller catches ChainError (or one
of its subclasses), never bare ValueError or TypeError, so its own bugs are not
mistaken for a bad input. Errors about malformed or unverifiable input also subclass
ValueError for older callers; new code should not rely on that.
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


class InvalidSignatureError(NoteError):
    """A note carries a signature by a trusted key, and it does not verify: the note is
    forged or altered (golang.org/x/mod/sumdb/note's InvalidSignatureError)."""


class UnknownVerifierError(NoteError):
    """A note is not signed by (enough of) the trusted keys: every signature on it is by
    a key the verifier does not know, or fewer than the quorum signed (sumdb/note's
    UnknownVerifierError / UnverifiedNoteError). Nothing on the note is known to be
    forged; it is just not vouched for."""


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


class HashEncodingError(HashSizeError):
    """A hash in a document is not the base64 of exactly 32 bytes."""


class InvalidArgumentError(ChainError, ValueError):
    """A caller passed the library an argument it cannot act on (a size out of range, a
    URL that is not http(s), an empty batch); a programming or configuration error."""


class ConfigError(ChainError, ValueError):
    """The ledger's or a client's configuration is unusable (keys, tokens, origin)."""


class TrustStateError(ChainError, ValueError):
    """A stored trusted-checkpoint record is malformed."""


class PolicyError(ChainError, ValueError):
    """A verification policy cannot be used (no publishers, a threshold out of range, two
    publishers sharing one key)."""


class ProvenanceError(ChainError, ValueError):
    """Offline provenance material (registration, publisher key, checkpoint, inclusion
    proof) does not verify; ``reason`` is the trust.Reason value of the failed check."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
