"""Full audit of a running ledger over its API (`modeltrust ledger verify --url`).

Downloads block headers and entries page by page and replays them exactly like the
database audit (minus stored nodes, which the API does not expose), then checks the
ledger's latest checkpoint is the tree it recomputed.
"""

from __future__ import annotations

import http.client
import itertools
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from modeltrust.chain.canonical import canonical_json
from modeltrust.chain.checkpoint import verify_checkpoint
from modeltrust.chain.errors import ChainError, HashEncodingError, InvalidArgumentError
from modeltrust.chain.ledger_verify import (
    EntryRow,
    LedgerVerificationError,
    Progress,
    VerifyReport,
    _Replay,
)
from modeltrust.chain.merkle import hash_from_b64
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.storage import StoredBlock


class _Api:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgumentError(f"ledger URL {url!r} must be http(s)://host[:port]")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.conn = cls(parts.hostname, parts.port, timeout=timeout)
        self.prefix = parts.path.rstrip("/")

    def get(self, path: str) -> bytes:
        try:
            self.conn.request("GET", self.prefix + path)
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ChainError(f"ledger unreachable: {exc}") from exc
        if resp.status != 200:
            raise ChainError(f"GET {path}: ledger answered {resp.status}: {body[:200]!r}")
        return body

    def json(self, path: str) -> Any:
        try:
            return orjson.loads(self.get(path))
        except orjson.JSONDecodeError as exc:
            raise LedgerVerificationError(f"GET {path}: answer is not JSON: {exc}") from exc


def _b64hash(value: object, what: str) -> bytes:
    try:
        return hash_from_b64(value, what)
    except HashEncodingError as exc:
        raise LedgerVerificationError(str(exc)) from None


def verify_remote(
    url: str,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    check_entries: bool = False,
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> VerifyReport:
    api = _Api(url, timeout)
    origin = origin or verifier.name
    note = api.get("/v1/checkpoint").decode("utf-8", "replace")
    try:
        latest = verify_checkpoint(note, verifier, origin=origin)
    except ChainError as exc:
        raise LedgerVerificationError(f"the latest checkpoint does not verify: {exc}") from exc
    replay = _Replay(verifier, origin, None, check_entries)
    rows = _entries(api, latest.size)
    height = 0
    while replay.size < latest.size:
        doc = api.json(f"/v1/blocks?start={height}&end={height + 1000}")
        for item in doc.get("blocks", []) if isinstance(doc, dict) else []:
            block = _block(item, height)
            count = block.end_index - replay.size
            if count < 0:
                raise LedgerVerificationError(
                    f"block {height}: ends before the previous block", height=height
                )
            replay.block(block, itertools.islice(rows, count))
            if progress is not None:
                progress(count)
            height += 1
            if replay.size >= latest.size:
                break
        else:
            if replay.size < latest.size:
                raise LedgerVerificationError(f"block {height} is missing", height=height)
    if replay.size != latest.size or replay._root() != latest.root_hash:
        raise LedgerVerificationError("the latest checkpoint does not match the recomputed tree")
    return VerifyReport(replay.size, height, note)


def _block(item: object, height: int) -> StoredBlock:
    if not isinstance(item, dict) or item.get("height") != height:
        raise LedgerVerificationError(f"block {height} is missing or malformed", height=height)
    header, note = item.get("header"), item.get("checkpoint")
    if not isinstance(header, dict) or not isinstance(note, str):
        raise LedgerVerificationError(f"block {height} is malformed", height=height)
    end = header.get("end_index")
    if type(end) is not int:
        raise LedgerVerificationError(f"block {height}: header has no end_index", height=height)
    try:
        header_bytes = canonical_json(header)
    except ChainError as exc:
        raise LedgerVerificationError(
            f"block {height}: header is not JSON: {exc}", height=height
        ) from exc
    return StoredBlock(
        height, header_bytes, _b64hash(item.get("header_hash"), "header_hash"), note, end
    )


def _entries(api: _Api, size: int, page: int = 1000) -> Iterator[EntryRow]:
    start = 0
    while start < size:
        doc = api.json(f"/v1/entries?start={start}&end={min(start + page, size)}")
        items = doc.get("entries") if isinstance(doc, dict) else None
        if not items:
            raise LedgerVerificationError(f"entry {start} is missing", index=start)
        for item in items:
            index = item.get("index") if isinstance(item, dict) else None
            if index != start:
                raise LedgerVerificationError(f"entry {start} is missing", index=start)
            try:
                data = canonical_json(item.get("entry"))
            except ChainError as exc:
                raise LedgerVerificationError(f"entry {start}: {exc}", index=start) from exc
            yield start, _b64hash(item.get("leaf_hash"), f"entry {start} leaf_hash"), data
            start += 1
