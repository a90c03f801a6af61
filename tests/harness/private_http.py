"""A private model server: HTTPS with its own CA, files only for a bearer token or basic
auth, Range requests, and faults a network has (a connection cut mid-body).

    with PrivateFileServer(root, tmp, token="s3cret") as server:
        server.url("model.onnx")        # https://127.0.0.1:PORT/model.onnx
        server.ca_pem                   # the CA that signed its certificate
        server.requests                 # (path, headers) of every request, in order

`cut_after`: the first GET (of the next ones) sends that many body bytes and closes the
connection. `ignore_range`: answer Range requests with the whole file (200), as servers
without Range support do. `redirect_to`: answer every GET with a 302 to that base URL.
"""

from __future__ import annotations

import base64
import http.server
import ssl
import threading
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

from harness.pki import Pki


class PrivateFileServer:
    def __init__(
        self,
        root: Path,
        workdir: Path,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        tls: bool = True,
        pki: Pki | None = None,
    ) -> None:
        self.root = root
        self.token = token
        self.basic = basic
        self.host = host
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.cut_after: int | None = None
        self.ignore_range = False
        self.redirect_to: str | None = None
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = http.server.ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self.ca_pem = b""
        if tls:
            pki = pki or Pki(workdir / f"pki-{id(self)}")
            credential = pki.issue(
                f"server-{id(self)}", host, server_names=(host, "localhost"), client=False
            )
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(credential.cert), str(credential.key))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.ca_pem = pki.ca.read_bytes()
        self.scheme = "https" if tls else "http"
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def __enter__(self) -> PrivateFileServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def authorized(self, header: str | None) -> bool:
        if self.token is None and self.basic is None:
            return True
        if header is None:
            return False
        if self.token is not None and header == f"Bearer {self.token}":
            return True
        if self.basic is not None:
            pair = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            return header == f"Basic {pair}"
        return False

    def take_cut(self) -> int | None:
        with self._lock:
            cut, self.cut_after = self.cut_after, None
            return cut


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: PrivateFileServer

    def do_GET(self) -> None:
        owner = self.owner
        owner.requests.append((self.path, dict(self.headers.items())))
        if owner.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", owner.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if not owner.authorized(self.headers.get("Authorization")):
            body = b"credentials required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Bearer realm="models"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = (owner.root / unquote(urlsplit(self.path).path).lstrip("/")).resolve()
        if not path.is_relative_to(owner.root.resolve()) or not path.is_file():
            self.send_error(404, "no such file")
            return
        size = path.stat().st_size
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and ranged.endswith("-") and not owner.ignore_range:
            start = int(ranged[len("bytes=") : -1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        cut = owner.take_cut()
        remaining = size - start if cut is None else min(cut, size - start)
        with path.open("rb") as f:  # streamed: a 1 GiB model costs the server no memory
            f.seek(start)
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

    def log_message(self, format: str, *args: object) -> None:
        pass
