"""A real HTTP proxy in front of a ledger that can rewrite its answers: the network attacker
(or a lying ledger) of the trust model, for tests.

    with TamperingProxy(ledger.url, rewrite) as proxy:
        client = LedgerClient(proxy.url, ...)

``rewrite(method, path_qs, status, body)`` returns the (status, body) to send instead, or
None to pass the answer on unchanged. It runs in the proxy's thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import ClientSession, web

from harness.ledger import free_port

Rewrite = Callable[[str, str, int, bytes], tuple[int, bytes] | None]
SESSION = web.AppKey("session", ClientSession)


class TamperingProxy:
    def __init__(self, upstream: str, rewrite: Rewrite) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite = rewrite
        self.port = free_port()
        self.requests: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _forward(self, request: web.Request) -> web.Response:
        session = request.app[SESSION]
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        path_qs = request.rel_url.raw_path_qs
        self.requests.append(f"{request.method} {path_qs}")
        async with session.request(
            request.method, self.upstream + path_qs, data=await request.read(), headers=headers
        ) as resp:
            status, body = resp.status, await resp.read()
            ctype = resp.headers.get("Content-Type", "application/json").split(";")[0]
        changed = self.rewrite(request.method, path_qs, status, body)
        if changed is not None:
            status, body = changed
        return web.Response(status=status, body=body, content_type=ctype)

    async def _start(self) -> None:
        app = web.Application()
        app[SESSION] = ClientSession()
        app.router.add_route("*", "/{tail:.*}", self._forward)

        async def close_session(app: web.Application) -> None:
            await app[SESSION].close()

        app.on_cleanup.append(close_session)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> TamperingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def edit_json(body: bytes, edit: Callable[[Any], None]) -> bytes:
    """Parse a JSON answer, let ``edit`` change it in place, and encode it again."""
    doc = orjson.loads(body)
    edit(doc)
    return orjson.dumps(doc)


def drop_revocations_from_range_reads(
    method: str, path_qs: str, status: int, body: bytes
) -> tuple[int, bytes] | None:
    """Remove every revocation from range reads (the indices are left as they were)."""
    if method != "GET" or not path_qs.startswith("/v1/entries?") or status != 200:
        return None

    def edit(doc: Any) -> None:
        doc["entries"] = [e for e in doc["entries"] if e["entry"]["kind"] != "revocation"]

    return status, edit_json(body, edit)


def empty_revocation_lookups(
    method: str, path_qs: str, status: int, body: bytes
) -> tuple[int, bytes] | None:
    """Answer every revocation lookup with "none": a lookup proves what it returns is in the
    log, never that nothing was left out, so this hides a revocation from a client that
    trusts lookups."""
    if method != "GET" or not path_qs.startswith("/v1/revocations") or status != 200:
        return None

    def edit(doc: Any) -> None:
        doc["entries"] = []
        doc["next_after"] = None

    return status, edit_json(body, edit)
