"""A static file server for model artifacts, fast enough to benchmark against; on
127.0.0.1 unless told another address (a cluster's `host_address`, for pods to reach).

    with serve_files(root) as base_url:      # e.g. http://127.0.0.1:40123
        fetch_artifact(f"{base_url}/model.onnx", digest, dest)

GET and HEAD of files under `root` only (no listings, nothing outside `root`). Bodies go
out with sendfile(2), so the server costs almost no CPU next to the client it serves and
releases the GIL while sending (it can share a process with the code being measured).
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _FileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path  # set on the subclass serve_files makes

    def _resolve(self) -> Path | None:
        relative = unquote(urlsplit(self.path).path).lstrip("/")
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def _head(self) -> tuple[Path, int] | None:
        path = self._resolve()
        if path is None:
            self.send_error(404, "no such file")
            return None
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        return path, size

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        found = self._head()
        if found is None:
            return
        path, size = found
        self.wfile.flush()
        with path.open("rb") as f:
            self.connection.sendfile(f, 0, size)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a benchmark's server stays quiet


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # hundreds of ModelDeployments may fetch at once


@contextmanager
def serve_files(root: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `root` on an ephemeral port of `host` (loopback by default); yields the base URL."""
    resolved = Path(os.path.realpath(root))
    handler = type("Handler", (_FileHandler,), {"root": resolved})
    server = _Server((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="file-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
