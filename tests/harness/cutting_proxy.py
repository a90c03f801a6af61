"""A TCP relay on 127.0.0.1 that cuts connections mid-answer: a network that drops a
download part way, for the tests of retries and resuming.

    with CuttingProxy(upstream_port, cut_after=8 << 20, cuts=1) as proxy:
        ... connect to 127.0.0.1:proxy.port ...

It relays bytes untouched (TLS passes through end to end; the upstream's certificate for
127.0.0.1 still matches). The first `cuts` connections that carry more than `cut_after`
bytes towards the client are closed at that point, both ways; later ones pass whole.
`cuts=None` cuts every such connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    def __init__(self, upstream_port: int, *, cut_after: int, cuts: int | None = 1) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.connections = 0
        self.cut = 0  # connections cut so far
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()  # the upstream is gone: so is this connection
                continue
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, downstream: bool) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                    return
                if downstream and sent + len(data) > self.cut_after and self._take_cut():
                    target.sendall(data[: max(self.cut_after - sent, 0)])
                    for sock in (source, target):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                    return
                target.sendall(data)
                sent += len(data)
        except OSError:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left is not None:
                if self.cuts_left <= 0:
                    return False
                self.cuts_left -= 1
            self.cut += 1
            return True
