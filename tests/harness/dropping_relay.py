"""A TCP relay on 127.0.0.1 in front of a server that drops one connection part way
through an answer: the network failing mid-download, for the tests of resuming.

    with DroppingRelay(("127.0.0.1", server_port), drop_after=8 << 20) as relay:
        ... point the client at relay.url ...
        relay.request_heads   # what the client asked, e.g. to see its Range header

Bytes pass untouched both ways (a SigV4 signature made for the relay's host:port still
verifies upstream, since the Host header is not rewritten). The first connection that
carries more than `drop_after` bytes towards the client is closed right there, both ways;
every later one passes whole. Plain HTTP only for `request_heads` (it reads the requests).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class DroppingRelay:
    def __init__(self, upstream: tuple[str, int], *, drop_after: int) -> None:
        self.upstream = upstream
        self.drop_after = drop_after
        self.dropped = 0  # connections dropped so far (at most one)
        self.request_heads: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DroppingRelay:
        self._accepting.start()
        return self

    def __exit__(self, *exc: object) -> None:
        _close(self._listener)  # shutdown() first: close() alone does not wake accept()
        with self._lock:
            for sock in list(self._open):
                _close(sock)
        self._accepting.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by __exit__
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _close(client)
                continue
            server.settimeout(None)
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""
        while chunk := _recv(client):
            pending += chunk
            # GET and HEAD have no body: the stream is request heads, one after another.
            while b"\r\n\r\n" in pending:
                head, _, pending = pending.partition(b"\r\n\r\n")
                with self._lock:
                    self.request_heads.append(head.decode("latin-1"))
            if not _send(server, chunk):
                break
        self._finish(client, server)

    def _answers(self, server: socket.socket, client: socket.socket) -> None:
        sent = 0
        while chunk := _recv(server):
            with self._lock:
                drop = not self.dropped and sent + len(chunk) > self.drop_after
                if drop:
                    self.dropped += 1
            if drop:
                _send(client, chunk[: self.drop_after - sent])
                break
            if not _send(client, chunk):
                break
            sent += len(chunk)
        self._finish(client, server)

    def _finish(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._open.discard(sock)
                _close(sock)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
