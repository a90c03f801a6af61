"""Verifying ledger clients: ``LedgerClient`` (blocking) and ``AsyncLedgerClient`` (asyncio).

Both pin the ledger's checkpoint verifier key and origin and keep the newest verified
checkpoint in a TrustStateStore; nothing they return is unverified. The verification
itself lives in ``client_flows`` and is shared by both.

    client = LedgerClient("http://ledger:8080", verifier_key=VKEY,
                          trust_store=FileTrustStateStore("~/.modeltrust/trusted.json"))
    for found in client.find_registrations("sha256:..."):
        ...  # found.entry is a Registration proven at found.checkpoint
"""

from __future__ import annotations

import http.client
import inspect
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from modeltrust.chain.client_flows import (
    EntryExistsError,
    Flow,
    Flows,
    HttpRequest,
    HttpResponse,
    LedgerClientError,
    LedgerHTTPError,
    LedgerResponseError,
    LedgerUnavailableError,
    LoadTrust,
    SwapTrust,
    VerifiedCheckpoint,
    VerifiedEntry,
    VerifiedReceipt,
)
from modeltrust.chain.digest import parse_digest
from modeltrust.chain.entries import AuditEntry, Entry, Registration, Revocation
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.trust_state import (
    AsyncTrustStateStore,
    LedgerForkError,
    LedgerRollbackError,
    LedgerTrustError,
    MemoryTrustStateStore,
    TrustStateStore,
)

__all__ = [
    "AsyncLedgerClient",
    "EntryExistsError",
    "LedgerClient",
    "LedgerClientError",
    "LedgerForkError",
    "LedgerHTTPError",
    "LedgerResponseError",
    "LedgerRollbackError",
    "LedgerTrustError",
    "LedgerUnavailableError",
    "VerifiedCheckpoint",
    "VerifiedEntry",
    "VerifiedReceipt",
]


def _flows(verifier_key: str, origin: str | None, bearer: str | None) -> Flows:
    verifier = NoteVerifier.from_verifier_key(verifier_key)
    return Flows(verifier, origin or verifier.name, bearer)


def _revocation_matches(digest: str | None, key_id: str | None) -> Any:
    def accept(e: Entry) -> bool:
        return isinstance(e, Revocation) and (
            (e.target_kind == "digest" and e.target == digest)
            or (e.target_kind == "key" and e.target == key_id)
        )

    return accept


def _audit_query(
    namespace: str | None, name: str | None, uid: str | None
) -> tuple[dict[str, str], Any]:
    if uid is not None:
        return {"uid": uid}, lambda e: isinstance(e, AuditEntry) and e.uid == uid
    if namespace is None or name is None:
        raise ValueError("audit_trail needs uid, or namespace and name")
    return {"namespace": namespace, "name": name}, (
        lambda e: isinstance(e, AuditEntry) and e.namespace == namespace and e.name == name
    )


def _revocation_query(digest: str | None, key_id: str | None) -> dict[str, str]:
    if digest is None and key_id is None:
        raise ValueError("revocations_for needs a digest and/or a key id")
    params = {}
    if digest is not None:
        parse_digest(digest)
        params["digest"] = digest
    if key_id is not None:
        params["key_id"] = key_id
    return params


class LedgerClient:
    """Blocking verifying client over one keep-alive HTTP connection (not thread-safe)."""

    def __init__(
        self,
        url: str,
        *,
        verifier_key: str,
        origin: str | None = None,
        trust_store: TrustStateStore | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._flows = _flows(verifier_key, origin, token)
        self._trust: TrustStateStore = trust_store or MemoryTrustStateStore()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"ledger URL {url!r} must be http(s)://host[:port]")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, flow: Flow) -> Any:
        try:
            op = next(flow)
            while True:
                if isinstance(op, HttpRequest):
                    result: Any = self._http(op)
                elif isinstance(op, LoadTrust):
                    result = self._trust.load()
                elif isinstance(op, SwapTrust):
                    result = self._trust.compare_and_swap(op.expected, op.new)
                else:  # pragma: no cover - the flows yield nothing else
                    raise TypeError(op)
                op = flow.send(result)
        except StopIteration as done:
            return done.value

    def _http(self, req: HttpRequest) -> HttpResponse:
        headers = {"Accept": "application/json"}
        if req.body is not None:
            headers["Content-Type"] = "application/json"
        if req.bearer:
            headers["Authorization"] = f"Bearer {req.bearer}"
        # Retry once on a stale keep-alive connection; never retry a POST that may have landed
        # (a resubmitted entry would be refused as a replay, not duplicated, but say it plainly).
        for attempt in range(2):
            try:
                conn = self._connection()
                conn.request(req.method, self._prefix + req.path, body=req.body, headers=headers)
                resp = conn.getresponse()
                return HttpResponse(resp.status, resp.read())
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                stale = isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError)
                if attempt == 0 and stale and req.method == "GET":
                    continue
                raise LedgerUnavailableError(
                    f"ledger {self._host}:{self._port} unreachable: {exc}"
                ) from exc
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(self._host, self._port, timeout=self._timeout)
            self._conn.connect()
            if self._conn.sock is not None:
                self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    # -- the API ------------------------------------------------------------------------------

    def checkpoint(self) -> VerifiedCheckpoint:
        result: VerifiedCheckpoint = self._run(self._flows.checkpoint())
        return result

    def append(self, entry: Entry) -> VerifiedReceipt:
        receipts: list[VerifiedReceipt] = self._run(self._flows.append([entry], single=True))
        return receipts[0]

    def append_many(self, entries: Sequence[Entry]) -> list[VerifiedReceipt]:
        """Append atomically (all or none), in one block."""
        result: list[VerifiedReceipt] = self._run(self._flows.append(list(entries), single=False))
        return result

    def entry(self, index: int) -> VerifiedEntry:
        result: VerifiedEntry = self._run(self._flows.entry(index))
        return result

    def find_registrations(self, digest: str) -> list[VerifiedEntry]:
        parse_digest(digest)
        flow = self._flows.lookup(
            "/v1/registrations",
            {"digest": digest},
            lambda e: isinstance(e, Registration) and e.digest == digest,
        )
        result: list[VerifiedEntry] = self._run(flow)
        return result

    def revocations_for(
        self, digest: str | None = None, key_id: str | None = None
    ) -> list[VerifiedEntry]:
        params = _revocation_query(digest, key_id)
        result: list[VerifiedEntry] = self._run(
            self._flows.lookup("/v1/revocations", params, _revocation_matches(digest, key_id))
        )
        return result

    def audit_trail(
        self, *, namespace: str | None = None, name: str | None = None, uid: str | None = None
    ) -> list[VerifiedEntry]:
        params, accept = _audit_query(namespace, name, uid)
        result: list[VerifiedEntry] = self._run(self._flows.lookup("/v1/audit", params, accept))
        return result


class AsyncLedgerClient:
    """The asyncio verifying client (for the operator); accepts sync or async trust stores."""

    def __init__(
        self,
        url: str,
        *,
        verifier_key: str,
        origin: str | None = None,
        trust_store: TrustStateStore | AsyncTrustStateStore | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._flows = _flows(verifier_key, origin, token)
        self._trust: TrustStateStore | AsyncTrustStateStore = trust_store or MemoryTrustStateStore()
        self._base = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> AsyncLedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    async def _run(self, flow: Flow) -> Any:
        try:
            op = next(flow)
            while True:
                if isinstance(op, HttpRequest):
                    result: Any = await self._http(op)
                elif isinstance(op, LoadTrust):
                    result = self._trust.load()
                elif isinstance(op, SwapTrust):
                    result = self._trust.compare_and_swap(op.expected, op.new)
                else:  # pragma: no cover
                    raise TypeError(op)
                if inspect.isawaitable(result):
                    result = await result
                op = flow.send(result)
        except StopIteration as done:
            return done.value

    async def _http(self, req: HttpRequest) -> HttpResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Accept": "application/json"}
        if req.body is not None:
            headers["Content-Type"] = "application/json"
        if req.bearer:
            headers["Authorization"] = f"Bearer {req.bearer}"
        try:
            async with self._session.request(
                req.method, self._base + req.path, data=req.body, headers=headers
            ) as resp:
                return HttpResponse(resp.status, await resp.read())
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            raise LedgerUnavailableError(f"ledger {self._base} unreachable: {exc!r}") from exc

    async def checkpoint(self) -> VerifiedCheckpoint:
        result: VerifiedCheckpoint = await self._run(self._flows.checkpoint())
        return result

    async def append(self, entry: Entry) -> VerifiedReceipt:
        receipts: list[VerifiedReceipt] = await self._run(self._flows.append([entry], single=True))
        return receipts[0]

    async def append_many(self, entries: Sequence[Entry]) -> list[VerifiedReceipt]:
        result: list[VerifiedReceipt] = await self._run(
            self._flows.append(list(entries), single=False)
        )
        return result

    async def entry(self, index: int) -> VerifiedEntry:
        result: VerifiedEntry = await self._run(self._flows.entry(index))
        return result

    async def find_registrations(self, digest: str) -> list[VerifiedEntry]:
        parse_digest(digest)
        flow = self._flows.lookup(
            "/v1/registrations",
            {"digest": digest},
            lambda e: isinstance(e, Registration) and e.digest == digest,
        )
        result: list[VerifiedEntry] = await self._run(flow)
        return result

    async def revocations_for(
        self, digest: str | None = None, key_id: str | None = None
    ) -> list[VerifiedEntry]:
        params = _revocation_query(digest, key_id)
        result: list[VerifiedEntry] = await self._run(
            self._flows.lookup("/v1/revocations", params, _revocation_matches(digest, key_id))
        )
        return result

    async def audit_trail(
        self, *, namespace: str | None = None, name: str | None = None, uid: str | None = None
    ) -> list[VerifiedEntry]:
        params, accept = _audit_query(namespace, name, uid)
        result: list[VerifiedEntry] = await self._run(
            self._flows.lookup("/v1/audit", params, accept)
        )
        return result
