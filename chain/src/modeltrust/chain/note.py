"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.

A note is a text ending in a newline, a blank line, then one or more lines
``— <key name> base64(4-byte key id || signature)``. Two signature types are
supported:

* ``0x01`` Ed25519 over the note text (checkpoint signatures);
* ``0x04`` timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature), signing
  ``cosignature/v1\\ntime <unix seconds>\\n`` + the note text, with the signature
  being an 8-byte big-endian timestamp followed by the Ed25519 signature.

Key id = SHA-256(name || 0x0A || type || 32-byte public key)[:4]. Verifier keys are
``name+hex(id)+base64(type || public key)``; signer keys are
``PRIVATE+KEY+name+hex(id)+base64(type || seed)``.

Verification follows the spec: signatures from unknown keys are ignored, a known
key whose signature fails makes the whole note rejected (InvalidSignatureError: the
note is forged or altered), and at least ``quorum`` distinct trusted keys must have
signed (UnknownVerifierError otherwise: the note is not vouched for, nothing on it is
known to be forged). The two are told apart as Go's sumdb/note does, so a forged
ledger signature is never reported as a missing one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from modeltrust.chain.errors import (
    InvalidArgumentError,
    InvalidSignatureError,
    NoteError,
    UnknownVerifierError,
)

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
_ALGS = (ALG_ED25519, ALG_COSIGNATURE_V1)

MAX_NOTE_BYTES = 1 << 20
MAX_SIGNATURES = 100  # the spec demands at least 16; Go's reference caps at 100
_SIG_PREFIX = "\u2014 "  # em dash, space
_COSIGNATURE_HEADER = "cosignature/v1\n"
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # ASCII controls except newline


def key_id_for(name: str, alg: int, public_key: bytes) -> bytes:
    """The recommended 4-byte key id: SHA-256(name || 0x0A || alg || public key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


class NoteSigner:
    """An Ed25519 note signer (type 0x01) or witness cosigner (type 0x04)."""

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        *,
        alg: int = ALG_ED25519,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_name(name)
        if alg not in _ALGS:
            raise NoteError(f"unsupported note signature type {alg:#04x}")
        self.name = name
        self.alg = alg
        self._key = private_key
        self._clock = clock
        self._public = private_key.public_key().public_bytes_raw()
        self.key_id = key_id_for(name, alg, self._public)

    @classmethod
    def generate(cls, name: str, *, alg: int = ALG_ED25519) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate(), alg=alg)

    @classmethod
    def from_private_key(
        cls, name: str, private_key: Ed25519PrivateKey, *, alg: int = ALG_ED25519
    ) -> NoteSigner:
        return cls(name, private_key, alg=alg)

    @classmethod
    def from_signer_key(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+name+hexid+base64(type || seed)``."""
        parts = skey.strip().split("+", 4)  # base64 may itself contain '+'
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("signer key must look like PRIVATE+KEY+<name>+<hex id>+<base64 key>")
        name, hex_id, material = parts[2], parts[3], _b64decode(parts[4], "signer key")
        if len(material) != 33 or material[0] not in _ALGS:
            raise NoteError("signer key must hold a type byte (0x01 or 0x04) and a 32-byte seed")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(material[1:]), alg=material[0])
        if signer.key_id.hex() != hex_id:
            raise NoteError(
                f"signer key id {hex_id} does not match its key ({signer.key_id.hex()})"
            )
        return signer

    def signer_key(self) -> str:
        seed = self._key.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{_b64(bytes([self.alg]) + seed)}"

    def verifier_key(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.alg]) + self._public)}"

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, Ed25519PublicKey.from_public_bytes(self._public), self.alg)

    def sign(self, text: str) -> bytes:
        """The signature bytes for ``text`` (without the key id)."""
        if self.alg == ALG_COSIGNATURE_V1:
            timestamp = int(self._clock())
            message = _cosigned_message(text, timestamp)
            return timestamp.to_bytes(8, "big") + self._key.sign(message)
        return self._key.sign(text.encode())


class NoteVerifier:
    """A trusted public key for verifying note signatures."""

    def __init__(self, name: str, public_key: Ed25519PublicKey, alg: int = ALG_ED25519) -> None:
        _check_name(name)
        if alg not in _ALGS:
            raise NoteError(f"unsupported note signature type {alg:#04x}")
        self.name = name
        self.alg = alg
        self.public_key = public_key
        self.key_id = key_id_for(name, alg, public_key.public_bytes_raw())

    @classmethod
    def from_verifier_key(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hexid+base64(type || public key)``, checking the id matches the key."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise NoteError("verifier key must look like <name>+<hex id>+<base64 key>")
        name, hex_id, material = parts[0], parts[1], _b64decode(parts[2], "verifier key")
        if len(material) != 33 or material[0] not in _ALGS:
            raise NoteError(
                "verifier key must hold a type byte (0x01 or 0x04) and a 32-byte Ed25519 key"
            )
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(material[1:]), material[0])
        if verifier.key_id.hex() != hex_id:
            raise NoteError(
                f"verifier key id {hex_id} does not match its key ({verifier.key_id.hex()})"
            )
        return verifier

    def verifier_key(self) -> str:
        raw = bytes([self.alg]) + self.public_key.public_bytes_raw()
        return f"{self.name}+{self.key_id.hex()}+{_b64(raw)}"

    def verify(self, text: str, sig: bytes) -> bool:
        """Whether ``sig`` (without key id) is this key's valid signature of ``text``."""
        if self.alg == ALG_COSIGNATURE_V1:
            if len(sig) != 8 + 64:
                return False
            timestamp = int.from_bytes(sig[:8], "big")
            if timestamp >= 1 << 63:
                return False
            message, sig = _cosigned_message(text, timestamp), sig[8:]
        else:
            if len(sig) != 64:
                return False
            message = text.encode()
        try:
            self.public_key.verify(sig, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, signature bytes."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {_b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class VerifiedNote:
    text: str
    verified_by: tuple[str, ...]  # names of the trusted keys whose signatures verified


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` (which must end in a newline) with every signer."""
    _check_text(text)
    _check_size(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    lines = [NoteSignature(s.name, s.key_id, s.sign(text)).line() for s in signers]
    note = text + "\n" + "".join(lines)
    _check_size(note)
    return note


def add_signatures(note: str, signers: Sequence[NoteSigner]) -> str:
    """Cosign: keep the note's signature lines and add one per signer not already present."""
    text, existing = parse_note(note)
    have = {(s.name, s.key_id) for s in existing}
    lines = [s.line() for s in existing]
    for signer in signers:
        if (signer.name, signer.key_id) not in have:
            lines.append(NoteSignature(signer.name, signer.key_id, signer.sign(text)).line())
    result = text + "\n" + "".join(lines)
    _check_size(result)
    return result


def with_signatures(note: str, extra: Sequence[NoteSignature]) -> str:
    """The note with the signature lines ``extra`` added, checking only syntax.

    A line in ``extra`` replaces a line by the same key (name and key id) already on the
    note: a witness's newer cosignature supersedes its older one on the same text.
    Nothing is verified here; whoever calls this has verified ``extra`` or passes it on.
    """
    text, existing = parse_note(note)
    replaced = {(s.name, s.key_id) for s in extra}
    kept = [s for s in existing if (s.name, s.key_id) not in replaced]
    lines = [s.line() for s in (*kept, *extra)]
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note would have {len(lines)} signatures, more than {MAX_SIGNATURES}")
    result = text + "\n" + "".join(lines)
    _check_size(result)
    return result


def parse_signature_lines(block: str) -> list[NoteSignature]:
    """Signature lines as a witness answers them (c2sp.org/tlog-witness): each ``— name
    base64`` line ends in a newline; syntax only."""
    if not block.endswith("\n") or _CONTROL.search(block):
        raise NoteError("signature lines must be text ending in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"{len(lines)} signature lines, more than the {MAX_SIGNATURES} allowed")
    return [_parse_signature_line(line) for line in lines]


def cosignature_time(sig: NoteSignature) -> int | None:
    """The timestamp (Unix seconds) a tlog-cosignature/v1 signature carries; None for any
    other signature (an Ed25519 note signature has no time). Unverified: read it only from
    a signature that verified."""
    if len(sig.signature) != 8 + 64:
        return None
    timestamp = int.from_bytes(sig.signature[:8], "big")
    return timestamp if timestamp < 1 << 63 else None


def parse_note(note: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines, checking only syntax."""
    _check_size(note)
    if _CONTROL.search(note):
        raise NoteError("note contains a control character other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no blank line separating the text from the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise NoteError("note signatures must end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures, more than the {MAX_SIGNATURES} allowed")
    return text, [_parse_signature_line(line) for line in lines]


def open_note(note: str, verifiers: Sequence[NoteVerifier], *, quorum: int = 1) -> VerifiedNote:
    """Verify a note against trusted keys; return its text once ``quorum`` keys signed it.

    Signatures by unknown keys are ignored; a failing signature by a known key rejects
    the note with InvalidSignatureError. Fewer than ``quorum`` known keys raise
    UnknownVerifierError; a malformed note raises NoteError.
    """
    if quorum < 1:
        raise InvalidArgumentError(
            "quorum must be at least 1: a note nobody trusted signed proves nothing"
        )
    text, signatures = parse_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: dict[tuple[str, bytes], str] = {}
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(text, sig.signature):
            raise InvalidSignatureError(
                f"signature by trusted key {sig.name}+{sig.key_id.hex()} does not verify"
            )
        verified[(sig.name, sig.key_id)] = sig.name
    if len(verified) < quorum:
        trusted = ", ".join(sorted({v.name for v in verifiers})) or "none"
        raise UnknownVerifierError(
            f"note is signed by {len(verified)} trusted key(s), {quorum} required "
            f"(trusted: {trusted})"
        )
    return VerifiedNote(text, tuple(verified.values()))


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError(f"note signature line does not start with an em dash: {line[:40]!r}")
    name, sep, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep:
        raise NoteError(f"note signature line lacks a signature: {line[:40]!r}")
    _check_name(name)
    raw = _b64decode(encoded, f"signature of {name}")
    if len(raw) < 5:
        raise NoteError(f"signature of {name} is too short to hold a key id and a signature")
    return NoteSignature(name, raw[:4], raw[4:])


def _cosigned_message(text: str, timestamp: int) -> bytes:
    return f"{_COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


def _check_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end in a newline")
    if _CONTROL.search(text):
        raise NoteError("note text contains a control character other than newline")


def _check_size(note: str) -> None:
    try:
        size = len(note.encode())
    except UnicodeEncodeError:
        raise NoteError("note is not valid UTF-8 (it holds a lone surrogate)") from None
    if size > MAX_NOTE_BYTES:
        raise NoteError(f"note is larger than {MAX_NOTE_BYTES} bytes")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _b64decode(s: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None
    if _b64(raw) != s:  # reject non-canonical encodings (stray bits, missing padding)
        raise NoteError(f"{what} is not canonical base64")
    return raw
