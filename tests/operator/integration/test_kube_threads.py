"""kube.Kube runs its blocking API calls on a pool of its own, as wide as asked: with the
kopf worker limit's worth of calls in flight, none waits for another (asyncio's default
executor has at most 32 threads). A real HTTP server on 127.0.0.1 answers only once all
calls have arrived."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import kubernetes
import pytest

from modeltrust.operator.kube import Kube

pytestmark = pytest.mark.integration

IN_FLIGHT = 40  # more than asyncio's default executor can run at once


@pytest.fixture
def api_server() -> Iterator[str]:
    arrived = threading.Barrier(IN_FLIGHT, timeout=20)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                arrived.wait()
            except threading.BrokenBarrierError:
                self.send_error(503, "not every call arrived together")
                return
            name = self.path.rsplit("/", 1)[-1]
            body = json.dumps({"metadata": {"name": name}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_calls_in_flight_up_to_the_worker_limit_run_at_once(api_server: str) -> None:
    previous = kubernetes.client.Configuration.get_default_copy()
    config = kubernetes.client.Configuration()
    config.host = api_server
    kubernetes.client.Configuration.set_default(config)
    try:
        kube = Kube(threads=IN_FLIGHT)
    finally:
        kubernetes.client.Configuration.set_default(previous)
    try:
        assert kube.api_client.configuration.connection_pool_maxsize == IN_FLIGHT
        names = [f"cm-{i}" for i in range(IN_FLIGHT)]
        got = await asyncio.gather(*(kube.get_config_map("ns", n) for n in names))
        assert [cm["metadata"]["name"] for cm in got if cm is not None] == names
    finally:
        kube.close()
