"""Real model servers on 127.0.0.1 for tests: a background-thread event loop per server."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modeltrust.serving.model import ServedModel
from modeltrust.serving.oip import InferenceApp
from modeltrust.serving.runtime import build_app
from modeltrust.serving.server import HttpServer, ServerSettings, serve


def sha256_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class RunningServer:
    app: InferenceApp
    port: int

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = self.connect()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def infer(self, document: dict[str, Any], model: str | None = None) -> tuple[int, Any]:
        name = model or self.app.model.name
        status, _, body = self.request(
            "POST",
            f"/v2/models/{name}/infer",
            orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
        )
        return status, orjson.loads(body) if body else None


@contextmanager
def running_server(
    model_path: Path, name: str, settings: ServerSettings | None = None
) -> Iterator[RunningServer]:
    """Serve `model_path` on an ephemeral port in a background thread's event loop."""
    model = ServedModel.load(model_path, name=name, expected_digest=sha256_digest(model_path))
    app = build_app(model)
    settings = settings or ServerSettings(port=0)
    started = threading.Event()
    holder: dict[str, Any] = {}

    def on_started(server: HttpServer) -> None:
        holder["server"] = server
        holder["loop"] = asyncio.get_running_loop()
        started.set()

    async def main() -> None:
        holder["stop"] = asyncio.Event()
        await serve(app, settings, on_started=on_started, stop=holder["stop"])

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(10), "server did not start"
    try:
        yield RunningServer(app, holder["server"].port)
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
