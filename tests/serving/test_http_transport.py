"""HTTP/1.1 behaviour of the server on raw sockets: keep-alive, pipelining, limits."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from modeltrust.serving.server import ServerSettings
from serving.helpers import RunningServer, running_server

pytestmark = pytest.mark.integration

BODY = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.25] * 784}]}
)


def _post(body: bytes = BODY, path: str = "/v2/models/mnist/infer", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class RawClient:
    """Reads HTTP/1.1 responses off a socket, one at a time, by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed before a full response")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed inside a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(mnist_server: RunningServer) -> Iterator[RawClient]:
    raw = RawClient(mnist_server.port)
    yield raw
    raw.close()


def test_keep_alive_serves_many_requests_on_one_connection(client: RawClient) -> None:
    for _ in range(20):
        client.send(_post())
        status, headers, body = client.response()
        assert status == 200
        assert "connection" not in headers  # HTTP/1.1: persistent by default
        assert orjson.loads(body)["outputs"][0]["shape"] == [1, 10]


def test_pipelined_requests_are_answered_in_order(client: RawClient) -> None:
    ids = [f"r{i}" for i in range(10)]
    wire = b""
    for i, request_id in enumerate(ids):
        if i == 4:  # an error in the middle must not disturb the order
            wire += _post(b"{broken", extra="")
        document = orjson.loads(BODY)
        document["id"] = request_id
        wire += _post(orjson.dumps(document))
    wire += b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    client.send(wire)  # all requests in one write
    answers = []
    for _ in range(len(ids) + 2):
        status, _, body = client.response()
        answers.append((status, orjson.loads(body).get("id") if status == 200 else None))
    assert answers == [
        *[(200, r) for r in ids[:4]],
        (400, None),
        *[(200, r) for r in ids[4:]],
        (200, None),  # the readiness answer, {"ready": true}
    ]


def test_connection_close_and_http10(client: RawClient, mnist_server: RunningServer) -> None:
    client.send(_post(extra="Connection: close\r\n"))
    status, headers, _ = client.response()
    assert (status, headers["connection"]) == (200, "close")
    assert client.closed_by_server()

    old = RawClient(mnist_server.port)
    old.send(b"GET /v2 HTTP/1.0\r\n\r\n")
    status, headers, _ = old.response()
    assert (status, headers["connection"]) == (200, "close")
    assert old.closed_by_server()
    old.close()

    kept = RawClient(mnist_server.port)
    for _ in range(2):
        kept.send(b"GET /v2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = kept.response()
        assert (status, headers["connection"]) == (200, "keep-alive")
    kept.close()


def test_chunked_request_body(client: RawClient) -> None:
    head = b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = b"".join(
        f"{len(BODY[i : i + 1000]):x}\r\n".encode() + BODY[i : i + 1000] + b"\r\n"
        for i in range(0, len(BODY), 1000)
    )
    client.send(head + chunks + b"0\r\n\r\n")
    status, _, body = client.response()
    assert status == 200
    assert orjson.loads(body)["outputs"][0]["name"] == "logits"


def test_expect_100_continue(client: RawClient) -> None:
    client.send(
        b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        + f"Content-Length: {len(BODY)}\r\n\r\n".encode()
    )
    interim = client.sock.recv(64)
    assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    client.buffer = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
    client.send(BODY)
    assert client.response()[0] == 200


def test_malformed_http_gets_400_and_close(client: RawClient) -> None:
    client.send(b"THIS IS NOT HTTP\r\n\r\n")
    status, headers, body = client.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert "malformed HTTP request" in orjson.loads(body)["error"]
    assert client.closed_by_server()


@pytest.fixture
def small_limit_server(mnist_path: Path) -> Iterator[RunningServer]:
    with running_server(mnist_path, "mnist", ServerSettings(port=0, max_body_bytes=4096)) as server:
        yield server


def test_body_over_the_limit_is_413_before_reading_it(small_limit_server: RunningServer) -> None:
    client = RawClient(small_limit_server.port)
    # Announce 100 MB but send only the headers: the answer must not wait for the body.
    client.send(
        b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
    )
    status, headers, body = client.response()
    assert status == 413
    assert headers["connection"] == "close"
    assert "exceeds the limit of 4096 bytes" in orjson.loads(body)["error"]
    assert client.closed_by_server()
    client.close()


def test_chunked_body_over_the_limit_is_413(small_limit_server: RunningServer) -> None:
    client = RawClient(small_limit_server.port)
    client.send(
        b"POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(3):
        client.send(b"800\r\n" + b" " * 0x800 + b"\r\n")  # 2 KiB chunks, never finishing
    status, _, body = client.response()
    assert status == 413
    assert "exceeds the limit" in orjson.loads(body)["error"]
    client.close()


def test_metrics_and_requests_through_the_same_connection(client: RawClient) -> None:
    client.send(_post())
    assert client.response()[0] == 200
    client.send(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _headers, body = client.response()
    assert status == 200
    assert b"modeltrust_serving_requests_total" in body


def test_thread_pool_mode_keeps_pipelined_order(mnist_path: Path) -> None:
    settings = ServerSettings(port=0, inference_threads=2)
    with running_server(mnist_path, "mnist", settings) as server:
        client = RawClient(server.port)
        wire = b""
        for i in range(12):
            document = orjson.loads(BODY)
            document["id"] = f"t{i}"
            wire += _post(orjson.dumps(document))
            if i % 4 == 3:  # answered inline, between pool answers
                wire += b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        client.send(wire)
        seen = []
        for _ in range(15):
            status, headers, body = client.response()
            assert status == 200
            if headers["content-type"] == "application/json":
                seen.append(orjson.loads(body)["id"])
            else:
                seen.append("metrics")
        client.close()
    expected: list[str] = []
    for i in range(12):
        expected.append(f"t{i}")
        if i % 4 == 3:
            expected.append("metrics")
    assert seen == expected
