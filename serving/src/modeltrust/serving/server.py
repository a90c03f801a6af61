"""A lean HTTP/1.1 server for the OIP application: asyncio + httptools (+ uvloop).

Why one long module: the HTTP/1.1 state machine (request line, headers, limits,
keep-alive, Upgrade) is one protocol; its limits only make sense read together.

Why not a framework: see docs/serving.md ("The HTTP transport") for the measured
comparison with uvicorn. This server parses with httptools (llhttp, in C), keeps
connections alive and answers pipelined requests in order.

Where requests run: small inference requests of a fast model are answered inline on
the event loop (for a model that runs in microseconds a thread hop costs more than
the inference). An inference request whose body is over `inline_body_bytes`, or any
inference while the model's recent requests took over `inline_budget` seconds, is
parsed and run on a thread pool, so the loop keeps answering health probes and
metadata meanwhile. `inference_threads` > 0 sends every inference to a pool of that
size.

Limits: a request line over `max_request_line_bytes` gets 414, a header section over
`max_header_bytes` 431 (both counted while reading, so a client cannot fill memory
with an endless header); bodies above `max_body_bytes` get 413 (checked on
Content-Length before reading, and while reading chunked bodies); an HTTP/1.1 request
without exactly one Host header gets 400 (RFC 9112 section 3.2); a request must arrive
completely within `request_timeout` seconds; idle keep-alive connections close after
`keepalive_timeout`. `Upgrade` (e.g. h2c from `curl --http2`) is ignored, as RFC 9110
section 7.8 allows: the request is answered over HTTP/1.1 with its body. SIGTERM/SIGINT:
stop accepting, answer what is in flight (with `Connection: close`), close idle
connections, exit within `shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import httptools

from modeltrust.serving.oip import InferenceApp, Request, Response, error_response

log = logging.getLogger(__name__)

_MAX_PIPELINED = 32  # queued requests per connection before we stop reading from it
_INTERESTING_HEADERS = frozenset(
    {
        "content-length",
        "content-encoding",
        "content-type",
        "expect",
        "inference-header-content-length",
        "transfer-encoding",
    }
)
# How much more than the two limits a connection may send before its head is complete:
# httptools buffers a header internally until it ends, so this bounds that buffer.
_HEAD_SLACK = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 64 * 1024 * 1024
    inference_threads: int = 0
    inline_body_bytes: int = 256 * 1024
    inline_budget: float = 0.002
    max_request_line_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    keepalive_timeout: float = 75.0
    request_timeout: float = 60.0
    shutdown_timeout: float = 30.0
    backlog: int = 2048


def _status_line(status: int) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")


_STATUS_LINES: dict[int, bytes] = {s.value: _status_line(s.value) for s in HTTPStatus}


@dataclass(slots=True)
class _Pending:
    """A request waiting for its turn; `ready` is set for answers made by the transport."""

    request: Request
    ready: Response | None
    keep_alive: bool
    http10: bool
    started: float


class _Refuse(Exception):
    """Raised inside a parser callback: answer `status` with `message`, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HttpServer:
    """Owns the listening socket, the connections, and graceful shutdown."""

    def __init__(self, app: InferenceApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings
        self.metrics = app.metrics
        self.connections: set[_Connection] = set()
        self.draining = False
        self.all_closed = asyncio.Event()  # set once draining and the last connection closed
        threads = settings.inference_threads or max(2, min(4, os.cpu_count() or 1))
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="infer")
        self.inline_cost = 0.0  # moving average of an inference's handling time, seconds
        self.date_header = b""
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._tick()
        self._server = await self.loop.create_server(
            lambda: _Connection(self),
            self.settings.host,
            self.settings.port,
            backlog=self.settings.backlog,
            reuse_address=True,
        )
        for sock in self._server.sockets:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _tick(self) -> None:
        """Once a second: refresh the Date header and close stale connections."""
        assert self.loop is not None
        self.date_header = b"date: " + formatdate(usegmt=True).encode("ascii") + b"\r\n"
        now = self.loop.time()
        for connection in list(self.connections):
            connection.check_timeouts(now)
        self._sweeper = self.loop.call_later(1.0, self._tick)

    async def shutdown(self) -> None:
        """Stop accepting; let in-flight requests finish; close everything."""
        self.draining = True
        self.app.ready = False
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close_if_idle()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), self.settings.shutdown_timeout)
        for connection in list(self.connections):
            log.warning("closing a connection still busy after the shutdown timeout")
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.executor.shutdown(wait=True)

    def offloads(self, request: Request) -> bool:
        """Whether an inference request is handled on the pool rather than the loop."""
        settings = self.settings
        return (
            settings.inference_threads > 0
            or len(request.body) > settings.inline_body_bytes
            or self.inline_cost > settings.inline_budget
        )

    def note_cost(self, seconds: float) -> None:
        self.inline_cost += (seconds - self.inline_cost) * 0.2

    def timed_handle(self, request: Request) -> tuple[Response, float]:
        started = time.perf_counter()
        response = self.app.handle(request)
        return response, time.perf_counter() - started


class _Connection(asyncio.Protocol):
    """One client connection: parse, answer in order, keep alive."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.loop = server.loop or asyncio.get_running_loop()
        self.queue: deque[_Pending] = deque()
        self.busy = False  # a request is being answered on the thread pool
        self.closing = False
        self.reading_paused = False
        self.writing_paused = False
        self.last_active = 0.0
        # The message being parsed:
        self.in_message = False
        self.message_started = 0.0
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.in_head = False  # between the first byte of a request and its last header
        self.head_bytes = 0  # bytes received while in_head (an upper bound of the head)
        self.header_bytes = 0
        self.hosts = 0
        # A request with Upgrade: httptools stops at the end of its head and hands the
        # rest over as "another protocol"; we read its body ourselves (Content-Length).
        self.upgrading = False
        self.raw_pending: _Pending | None = None
        self.raw_remaining = 0

    # asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        self.last_active = self.loop.time()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.server.draining and not self.server.connections:
            self.server.all_closed.set()
        self.closing = True
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.raw_remaining:
            data = self._take_raw_body(data)
            if not data or self.closing:
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            refused = error.__context__
            if isinstance(refused, _Refuse):
                self._fail(refused.status, refused.message)
            else:
                log.error("HTTP parser callback failed", exc_info=refused)
                self._fail(500, "internal server error")
            return
        except httptools.HttpParserUpgrade as upgrade:
            # The head asked for another protocol; we stay on HTTP/1.1 (RFC 9110 7.8).
            rest = data[int(upgrade.args[0]) :] if upgrade.args else b""
            self.parser = httptools.HttpRequestParser(self)
            self.upgrading = False
            if rest:
                self.data_received(rest)
            return
        except httptools.HttpParserError as error:
            self._fail(400, f"malformed HTTP request: {error}")
            return
        if self.in_head:
            self.head_bytes += len(data)
            settings = self.server.settings
            if self.head_bytes > settings.max_request_line_bytes + settings.max_header_bytes + (
                _HEAD_SLACK
            ):
                self._fail(431, self._head_too_large())

    def _head_too_large(self) -> str:
        return f"the request's header section exceeds {self.server.settings.max_header_bytes} bytes"

    def _take_raw_body(self, data: bytes) -> bytes:
        """Body bytes of an Upgrade request; returns what follows the body."""
        take = data[: self.raw_remaining]
        self.raw_remaining -= len(take)
        self.body.append(take)
        pending = self.raw_pending
        if self.raw_remaining or pending is None:
            return b""
        self.raw_pending = None
        self.in_message = False
        pending.request.body = b"".join(self.body)
        self.body = []
        self._enqueue(pending)
        return data[len(take) :]

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests.
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if len(self.queue) < _MAX_PIPELINED:
            self._resume_reading()

    # httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_message = True
        self.in_head = True
        self.head_bytes = 0
        self.header_bytes = 0
        self.hosts = 0
        self.message_started = self.last_active = self.loop.time()
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        limit = self.server.settings.max_request_line_bytes
        if len(self.url) > limit:
            raise _Refuse(414, f"the request target exceeds {limit} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.server.settings.max_header_bytes:
            raise _Refuse(431, self._head_too_large())
        key = name.decode("latin-1").lower()
        if key in _INTERESTING_HEADERS:
            self.headers[key] = value.decode("latin-1")
        elif key == "host":
            self.hosts += 1

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self.parser
        if self.hosts > 1 or (self.hosts == 0 and parser.get_http_version() == "1.1"):
            raise _Refuse(
                400,
                "an HTTP/1.1 request needs exactly one Host header (RFC 9112 section 3.2), "
                f"this one has {self.hosts}",
            )
        length = self.headers.get("content-length")
        if (
            length is not None
            and length.isdigit()
            and int(length) > self.server.settings.max_body_bytes
        ):
            raise _Refuse(
                413,
                f"request body exceeds the limit of {self.server.settings.max_body_bytes} bytes",
            )
        if parser.should_upgrade():
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                raise _Refuse(
                    400, "a request asking for a protocol upgrade must not have a chunked body"
                )
            self.upgrading = True
            self.raw_remaining = int(length) if length is not None and length.isdigit() else 0
        if (
            self.headers.get("expect", "").lower() == "100-continue"
            and not self.busy
            and not self.queue
            and self.transport is not None
        ):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.server.settings.max_body_bytes:
            raise _Refuse(
                413,
                f"request body exceeds the limit of {self.server.settings.max_body_bytes} bytes",
            )
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = Request(
            parser.get_method().decode("ascii"), self.url.decode("latin-1"), self.headers, body
        )
        pending = _Pending(
            request,
            None,
            parser.should_keep_alive(),
            parser.get_http_version() == "1.0",
            time.perf_counter(),
        )
        self.body = []
        if self.upgrading and self.raw_remaining:
            # httptools skipped the body as "the other protocol": read it ourselves.
            self.raw_pending = pending
            return
        self.in_message = False
        self._enqueue(pending)

    def _enqueue(self, pending: _Pending) -> None:
        if self.busy or self.queue:
            self.queue.append(pending)
            if len(self.queue) >= _MAX_PIPELINED:
                self._pause_reading()
        else:
            self._dispatch(pending)

    # Answering ---------------------------------------------------------------------

    def _dispatch(self, pending: _Pending) -> None:
        server = self.server
        server.metrics.in_flight += 1
        request = pending.request
        # Only inference goes to the pool: metadata, health and /metrics are cheap, and
        # /metrics must read the counters on the loop thread that writes them.
        if pending.ready is not None:
            self._send(pending, pending.ready)
            return
        if not request.path.endswith("/infer"):
            self._send(pending, self.app.handle(request))
            return
        if not server.offloads(request):
            response, seconds = server.timed_handle(request)
            server.note_cost(seconds)
            self._send(pending, response)
            return
        self.busy = True
        future = self.loop.run_in_executor(server.executor, server.timed_handle, request)
        future.add_done_callback(lambda done: self._finish_async(pending, done))

    def _finish_async(
        self, pending: _Pending, done: asyncio.Future[tuple[Response, float]]
    ) -> None:
        self.busy = False
        try:
            response, seconds = done.result()
            self.server.note_cost(seconds)
        except Exception:
            log.exception("request handler failed")
            response = error_response(500, "internal server error")
        self._send(pending, response)
        while self.queue and not self.busy and self.transport is not None:
            self._dispatch(self.queue.popleft())
        if not self.queue and not self.writing_paused:
            self._resume_reading()

    def _send(self, pending: _Pending, response: Response) -> None:
        server = self.server
        server.metrics.in_flight -= 1
        keep_alive = pending.keep_alive and not server.draining and self.transport is not None
        keep_alive = keep_alive and not (self.closing and not self.queue)
        head = [
            _STATUS_LINES.get(response.status) or _status_line(response.status),
            b"content-type: ",
            response.content_type.encode("latin-1"),
            b"\r\ncontent-length: ",
            str(len(response.body)).encode("ascii"),
            b"\r\n",
            server.date_header,
        ]
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        elif pending.http10:
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        if pending.request.method != "HEAD":
            head.append(response.body)
        transport = self.transport
        if transport is not None:
            transport.write(b"".join(head))
            if not keep_alive:
                self.closing = True
                self.queue.clear()
                transport.close()
        self.last_active = self.loop.time()
        server.metrics.observe(
            response.model,
            response.endpoint,
            response.status,
            time.perf_counter() - pending.started,
        )

    def _fail(self, status: int, message: str) -> None:
        """Answer a request we could not parse, after anything queued, then close."""
        pending = _Pending(
            Request("GET", self.url.decode("latin-1")),
            error_response(status, message),
            False,
            False,
            time.perf_counter(),
        )
        self.in_message = False
        self.in_head = False
        self.raw_remaining = 0
        self._pause_reading()
        if self.busy or self.queue:
            self.queue.append(pending)
            self.closing = True  # read nothing more; the queued answers still go out
        else:
            self.closing = True
            self._dispatch(pending)

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    # Housekeeping ------------------------------------------------------------------

    def idle(self) -> bool:
        return not self.busy and not self.queue and not self.in_message

    def close_if_idle(self) -> None:
        if self.idle() and self.transport is not None:
            self.closing = True
            self.transport.close()

    def check_timeouts(self, now: float) -> None:
        settings = self.server.settings
        if self.in_message and now - self.message_started > settings.request_timeout:
            self._fail(408, f"the request did not arrive within {settings.request_timeout:g} s")
        elif self.idle() and now - self.last_active > settings.keepalive_timeout:
            self.close_if_idle()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def install_fast_event_loop() -> None:
    """Use uvloop when it is installed (about twice the request rate of asyncio's loop)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(
    app: InferenceApp,
    settings: ServerSettings,
    *,
    on_started: Callable[[HttpServer], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then shut down gracefully."""
    server = HttpServer(app, settings)
    await server.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    if on_started is not None:
        on_started(server)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing %d connection(s)", len(server.connections))
        await server.shutdown()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
