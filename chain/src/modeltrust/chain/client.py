"""Verifying ledger clients: ``LedgerClient`` (blocking) and ``AsyncLedgerClient`` (asyncio).

Why one long module: the blocking and asyncio clients are two thin drivers of the same
sans-IO flows and must stay identical in what they check; they sit together for that.

Both pin the ledger's checkpoint verifier key and origin and keep the newest verified
checkpoint in a TrustStateStore; nothing they return is unverified. The verification
itself lives in ``client_flows`` and is shared by both.

    client = LedgerClient("http://ledger:8080", verifier_key=VKEY,
                          trust_store=FileTrustStateStore("~/.modeltrust/trusted.json"))
    for found in client.find_registrations("sha256:..."):
        ...  # found.entry is a Registration proven at found.checkpoint

Answers are read into memory only up to ``max_response_bytes`` (16 MiB by default): an
untrusted ledger must not be able to exhaust the caller's memory with one answer.
"""

from __future__ import annotations

import errno
import http.client
import inspect
import socket
from collections.abc import Callable, Collection, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from modeltrust.chain.client_flows import (
    MAX_LOOKUP_PAGES,
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
    TokenSource,
    VerifiedCheckpoint,
    VerifiedEntry,
    VerifiedReceipt,
)
from modeltrust.chain.digest import parse_digest
from modeltrust.chain.entries import AuditEntry, Entry, Registration, Revocation
from modeltrust.chain.errors import InvalidArgumentError
from modeltrust.chain.log_tail import PAGE_SIZE, LoggedEntry, LogTailError, TailResult, tail_flow
from modeltrust.chain.merkle import CompactRange
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.trust_state import (
    AsyncTrustStateStore,
    LedgerEquivocationError,
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
    "LogTailError",
    "LoggedEntry",
    "TailResult",
    "VerifiedCheckpoint",
    "VerifiedEntry",
    "VerifiedReceipt",
]


MAX_RESPONSE_BYTES = 16 * 1024 * 1024


def _flows(
    verifier_key: str, origin: str | None, bearer: TokenSource, max_lookup_pages: int
) -> Flows:
    verifier = NoteVerifier.from_verifier_key(verifier_key)
    return Flows(verifier, origin or verifier.name, bearer, max_lookup_pages=max_lookup_pages)


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused (nothing listens at that address and port)",
    errno.ECONNRESET: "the connection was reset",
    errno.ECONNABORTED: "the connection was aborted",
    errno.EHOSTUNREACH: "no route to the host",
    errno.ENETUNREACH: "the network is unreachable",
    errno.ETIMEDOUT: "the connection timed out",
    errno.EPIPE: "the connection was closed while sending",
    errno.EADDRNOTAVAIL: "the address is not available",
}


def no_answer(url: str, exc: BaseException, timeout: float | None) -> str:
    """Why the ledger at `url` gave no answer, in words (never a library's repr): what
    becomes a LedgerUnavailableError's message, and so the operator's condition and Event
    messages and the CLI's errors."""
    return f"ledger at {url} did not answer: {_network_failure(exc, timeout)}"


def _network_failure(exc: BaseException, timeout: float | None) -> str:
    within = f" within {timeout:g} s" if timeout else ""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "the TLS handshake failed (certificate or protocol)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return _os_error_words(exc.os_error)
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):  # also socket.timeout
        return f"no answer{within} (timed out)"
    if isinstance(exc, aiohttp.ServerDisconnectedError | http.client.RemoteDisconnected):
        return "it closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError | http.client.IncompleteRead):
        return "the answer was cut off"
    if isinstance(exc, aiohttp.ClientResponseError | http.client.HTTPException):
        return "the answer is not valid HTTP"
    if isinstance(exc, aiohttp.InvalidURL):
        return "the URL is not valid"
    if isinstance(exc, OSError):
        return _os_error_words(exc)
    return f"unexpected error ({type(exc).__name__})"


def _os_error_words(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "the connection timed out"
    if isinstance(exc, socket.gaierror):
        return "its host name does not resolve"
    words = _ERRNO_WORDS.get(exc.errno or 0)
    if words is not None:
        return words
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _too_large(limit: int) -> LedgerResponseError:
    return LedgerResponseError(
        f"the ledger's answer is larger than {limit} bytes; refusing to read it"
    )


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
        raise InvalidArgumentError("audit_trail needs uid, or namespace and name")
    return {"namespace": namespace, "name": name}, (
        lambda e: isinstance(e, AuditEntry) and e.namespace == namespace and e.name == name
    )


def _revocation_query(digest: str | None, key_id: str | None) -> dict[str, str]:
    if digest is None and key_id is None:
        raise InvalidArgumentError("revocations_for needs a digest and/or a key id")
    params = {}
    if digest is not None:
        parse_digest(digest)
        params["digest"] = digest
    if key_id is not None:
        params["key_id"] = key_id
    return params


def primary_gave_no_answer(exc: LedgerClientError) -> bool:
    """Whether a read may move on to a mirror: the ledger did not answer, or answered that
    it cannot now (503: a writer failing over, a standby). Anything else it said stands."""
    return isinstance(exc, LedgerUnavailableError) or (
        isinstance(exc, LedgerHTTPError) and exc.status == 503
    )


def mirror_cannot_serve(exc: Exception) -> bool:
    """Whether a mirror's failure only disqualifies that mirror. A mirror is a copy of the
    log we do not trust: its answers are verified like the ledger's, but its failures (a
    copy behind the verified checkpoint cannot prove it a prefix; a damaged copy serves bad
    proofs) say nothing about the ledger. Only signed evidence does: two checkpoints of one
    size with different roots, both signed by the ledger's key, whoever relayed them."""
    if isinstance(exc, LedgerEquivocationError):
        return False
    return isinstance(exc, LedgerClientError | LedgerTrustError)


class LedgerClient:
    """Blocking verifying client over one keep-alive HTTP connection (not thread-safe).

    ``token`` is the bearer token for audit appends: a string, or a function called for
    every write (so a rotated token is picked up without a new client).
    """

    def __init__(
        self,
        url: str,
        *,
        verifier_key: str,
        origin: str | None = None,
        trust_store: TrustStateStore | None = None,
        token: TokenSource = None,
        timeout: float = 30.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_lookup_pages: int = MAX_LOOKUP_PAGES,
    ) -> None:
        self._flows = _flows(verifier_key, origin, token, max_lookup_pages)
        self._max_bytes = max_response_bytes
        self._trust: TrustStateStore = trust_store or MemoryTrustStateStore()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgumentError(f"ledger URL {url!r} must be http(s)://host[:port]")
        self._scheme, self._host = parts.scheme, parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")
        self._url = url.rstrip("/")
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
                    raise InvalidArgumentError(f"a client flow yielded {op!r}")
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
                declared = resp.getheader("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                    self.close()
                    raise _too_large(self._max_bytes)
                body = resp.read(self._max_bytes + 1)
                if len(body) > self._max_bytes:
                    self.close()  # the rest of the answer is still on the connection
                    raise _too_large(self._max_bytes)
                if not resp.isclosed():
                    resp.read()  # an empty tail: lets the connection be reused
                return HttpResponse(resp.status, body)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                stale = isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError)
                if attempt == 0 and stale and req.method == "GET":
                    continue
                raise LedgerUnavailableError(no_answer(self._url, exc, self._timeout)) from exc
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
        found, _ = self.find_registrations_at(digest)
        return found

    def find_registrations_at(self, digest: str) -> tuple[list[VerifiedEntry], VerifiedCheckpoint]:
        """Registrations of ``digest``, and the (oldest) checkpoint the lookup was answered
        at: the ledger claims these are all of them in that tree."""
        parse_digest(digest)
        flow = self._flows.lookup_at(
            "/v1/registrations",
            {"digest": digest},
            lambda e: isinstance(e, Registration) and e.digest == digest,
        )
        result: tuple[list[VerifiedEntry], VerifiedCheckpoint] = self._run(flow)
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

    def tail(
        self,
        start: CompactRange,
        to: VerifiedCheckpoint,
        *,
        keep: Collection[str] = ("revocation",),
        page_size: int = PAGE_SIZE,
    ) -> TailResult:
        """Every entry of ``[start.size, to.size)``, proven complete against ``to``'s root
        (see ``log_tail.tail_flow``); entries of the kinds in ``keep`` are returned."""
        result: TailResult = self._run(tail_flow(start, to, keep=keep, page_size=page_size))
        return result


class AsyncLedgerClient:
    """The asyncio verifying client (for the operator); accepts sync or async trust stores.

    ``token`` as for LedgerClient: a string or a function read on every write.
    """

    def __init__(
        self,
        url: str,
        *,
        verifier_key: str,
        origin: str | None = None,
        trust_store: TrustStateStore | AsyncTrustStateStore | None = None,
        token: TokenSource = None,
        timeout: float = 30.0,
        session: aiohttp.ClientSession | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_lookup_pages: int = MAX_LOOKUP_PAGES,
        mirrors: Sequence[str] = (),
    ) -> None:
        self._flows = _flows(verifier_key, origin, token, max_lookup_pages)
        self._max_bytes = max_response_bytes
        self._trust: TrustStateStore | AsyncTrustStateStore = trust_store or MemoryTrustStateStore()
        self._base = url.rstrip("/")
        # Read-only copies of the log (witnesses), asked in order when the ledger gives no
        # answer; appends only ever go to the ledger.
        self._mirrors = tuple(m.rstrip("/") for m in mirrors)
        self.answered_by = self._base  # who answered the last read: the ledger or a mirror
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

    async def _read(self, make: Callable[[], Flow]) -> Any:
        """Run a read-only flow on the ledger, else on each mirror in turn; a flow runs
        whole against one server, so every answer in it comes from the same copy."""
        try:
            result = await self._run(make())
            self.answered_by = self._base
            return result
        except LedgerClientError as exc:
            if not self._mirrors or not primary_gave_no_answer(exc):
                raise
            reasons = [str(exc)]
        for mirror in self._mirrors:
            try:
                result = await self._run(make(), mirror)
            except (LedgerClientError, LedgerTrustError) as exc:
                if not mirror_cannot_serve(exc):
                    raise
                reasons.append(f"mirror {mirror}: {exc}")
                continue
            self.answered_by = mirror
            return result
        raise LedgerUnavailableError("; ".join(reasons))

    async def _run(self, flow: Flow, base: str | None = None) -> Any:
        try:
            op = next(flow)
            while True:
                if isinstance(op, HttpRequest):
                    result: Any = await self._http(op, base or self._base)
                elif isinstance(op, LoadTrust):
                    result = self._trust.load()
                elif isinstance(op, SwapTrust):
                    result = self._trust.compare_and_swap(op.expected, op.new)
                else:  # pragma: no cover
                    raise InvalidArgumentError(f"a client flow yielded {op!r}")
                if inspect.isawaitable(result):
                    result = await result
                op = flow.send(result)
        except StopIteration as done:
            return done.value

    async def _http(self, req: HttpRequest, base: str) -> HttpResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Accept": "application/json"}
        if req.body is not None:
            headers["Content-Type"] = "application/json"
        if req.bearer:
            headers["Authorization"] = f"Bearer {req.bearer}"
        try:
            async with self._session.request(
                req.method, base + req.path, data=req.body, headers=headers
            ) as resp:
                return HttpResponse(resp.status, await self._read_capped(resp))
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            raise LedgerUnavailableError(no_answer(base, exc, self._timeout.total)) from exc

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self._max_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise _too_large(limit)
        body = bytearray()
        async for chunk in resp.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:
                resp.close()  # drop the connection rather than drain the rest
                raise _too_large(limit)
        return bytes(body)

    async def checkpoint(self) -> VerifiedCheckpoint:
        result: VerifiedCheckpoint = await self._read(self._flows.checkpoint)
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
        result: VerifiedEntry = await self._read(lambda: self._flows.entry(index))
        return result

    async def find_registrations(self, digest: str) -> list[VerifiedEntry]:
        found, _ = await self.find_registrations_at(digest)
        return found

    async def find_registrations_at(
        self, digest: str
    ) -> tuple[list[VerifiedEntry], VerifiedCheckpoint]:
        """Registrations of ``digest``, and the (oldest) checkpoint the lookup was answered
        at: the ledger claims these are all of them in that tree."""
        parse_digest(digest)
        result: tuple[list[VerifiedEntry], VerifiedCheckpoint] = await self._read(
            lambda: self._flows.lookup_at(
                "/v1/registrations",
                {"digest": digest},
                lambda e: isinstance(e, Registration) and e.digest == digest,
            )
        )
        return result

    async def revocations_for(
        self, digest: str | None = None, key_id: str | None = None
    ) -> list[VerifiedEntry]:
        params = _revocation_query(digest, key_id)
        result: list[VerifiedEntry] = await self._read(
            lambda: self._flows.lookup(
                "/v1/revocations", params, _revocation_matches(digest, key_id)
            )
        )
        return result

    async def audit_trail(
        self, *, namespace: str | None = None, name: str | None = None, uid: str | None = None
    ) -> list[VerifiedEntry]:
        params, accept = _audit_query(namespace, name, uid)
        result: list[VerifiedEntry] = await self._read(
            lambda: self._flows.lookup("/v1/audit", params, accept)
        )
        return result

    async def tail(
        self,
        start: CompactRange,
        to: VerifiedCheckpoint,
        *,
        keep: Collection[str] = ("revocation",),
        page_size: int = PAGE_SIZE,
    ) -> TailResult:
        """Every entry of ``[start.size, to.size)``, proven complete against ``to``'s root
        (see ``log_tail.tail_flow``); entries of the kinds in ``keep`` are returned."""
        result: TailResult = await self._read(
            lambda: tail_flow(start, to, keep=keep, page_size=page_size)
        )
        return result
