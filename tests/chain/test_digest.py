"""Digest strings and streaming file hashing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modeltrust.chain.digest import format_digest, parse_digest, sha256_file
from modeltrust.chain.errors import EntryError

GOOD = "sha256:" + "ab" * 32


@pytest.mark.unit
def test_parse_and_format_round_trip() -> None:
    raw = parse_digest(GOOD)
    assert raw == bytes.fromhex("ab" * 32)
    assert format_digest(raw) == GOOD


@pytest.mark.unit
@pytest.mark.parametrize(
    "bad",
    [
        "sha256:" + "AB" * 32,
        "sha256:" + "ab" * 31,
        "sha256:" + "ab" * 33,
        "sha512:" + "ab" * 32,
        "ab" * 32,
        "sha256:" + "ab" * 31 + "zz",
        " sha256:" + "ab" * 32,
        "sha256:" + "ab" * 32 + "\n",
        "sha256:" + "\u0661" * 64,  # Arabic-Indic digits are not hex
        "",
    ],
)
def test_malformed_digests_are_refused(bad: str) -> None:
    with pytest.raises(EntryError, match="sha256:<64 lowercase hex digits>"):
        parse_digest(bad)


@pytest.mark.unit
def test_format_refuses_wrong_length() -> None:
    with pytest.raises(EntryError, match="32 bytes"):
        format_digest(b"\x00" * 31)


@pytest.mark.integration
@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 3 * 4096 + 7])
def test_sha256_file_matches_hashlib_and_reports_progress(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    seen: list[int] = []
    digest, length = sha256_file(path, progress=seen.append, chunk=4096)
    assert digest == hashlib.sha256(data).digest()
    assert length == size
    assert sum(seen) == size
    assert all(n <= 4096 for n in seen)


@pytest.mark.integration
def test_sha256_file_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "absent.onnx")
