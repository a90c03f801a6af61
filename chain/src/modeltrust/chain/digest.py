"""Artifact digests: the ``sha256:<64 lowercase hex>`` form and streaming file hashing."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable

from modeltrust.chain.errors import EntryError, InvalidArgumentError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def parse_digest(s: str) -> bytes:
    """``sha256:<64 lowercase hex>`` -> the 32 raw bytes; anything else is an EntryError."""
    if not isinstance(s, str) or not _DIGEST.fullmatch(s):
        shown = s[:80] if isinstance(s, str) else type(s).__name__
        raise EntryError(f"digest {shown!r} is not of the form sha256:<64 lowercase hex digits>")
    return bytes.fromhex(s[7:])


def short_digest(digest: str) -> str:
    """The first 12 hex digits of a ``sha256:`` digest, as names and messages show it."""
    return digest.removeprefix("sha256:")[:12]


def format_digest(raw: bytes) -> str:
    """32 raw bytes -> ``sha256:<64 lowercase hex>``."""
    if len(raw) != 32:
        raise EntryError(f"a SHA-256 digest is 32 bytes, got {len(raw)}")
    return "sha256:" + raw.hex()


def sha256_file(
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int], object] | None = None,
    chunk: int = 1 << 20,
) -> tuple[bytes, int]:
    """Stream a file through SHA-256 with one reused buffer (memory stays flat in file size).

    ``progress`` is called with the number of bytes just hashed after each chunk (the
    shape of ``tqdm.update``). Returns (raw digest, size in bytes).
    """
    if chunk <= 0:
        raise InvalidArgumentError("chunk must be positive")
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])  # hashlib releases the GIL for large updates
            total += n
            if progress is not None:
                progress(n)
    return h.digest(), total
