"""`modeltrust fetch` and `modeltrust serve` as users and init containers run them."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from modeltrust.cli.main import main
from serving.helpers import DIGEST as REGISTERED_DIGEST
from serving.helpers import ORIGIN, build_ledger, sha256_digest

pytestmark = pytest.mark.integration

WRONG = "sha256:" + "0" * 64


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(os.urandom(200_000))
    return path


def test_fetch_success(artifact: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "model.onnx"
    digest = sha256_digest(artifact)
    code, out, _ = _run("fetch", "--uri", str(artifact), "--digest", digest, "--dest", str(dest))
    assert code == 0
    assert f"verified {digest} (200000 bytes) -> {dest}" in out
    assert dest.read_bytes() == artifact.read_bytes()


def test_fetch_mismatch_exits_1_and_leaves_nothing(artifact: Path, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "model.onnx"
    code, _, err = _run("fetch", "--uri", artifact.as_uri(), "--digest", WRONG, "--dest", str(dest))
    assert code == 1
    assert f"expected {WRONG}, got {sha256_digest(artifact)}" in err
    assert list(dest.parent.iterdir()) == []


def test_fetch_size_cap_exits_3(artifact: Path, tmp_path: Path) -> None:
    code, _, err = _run(
        "fetch", "--uri", str(artifact), "--digest", sha256_digest(artifact),
        "--dest", str(tmp_path / "m"), "--max-size", "1000",
    )  # fmt: skip
    assert code == 3
    assert "over the limit of 1000 bytes" in err


def test_fetch_malformed_digest_is_a_usage_error(artifact: Path, tmp_path: Path) -> None:
    code, _, err = _run(
        "fetch", "--uri", str(artifact), "--digest", "md5:abc", "--dest", str(tmp_path / "m")
    )
    assert code == 2
    assert "sha256:<64 lowercase hex digits>" in err


def _ledger_files(tmp_path: Path, artifact: bytes) -> tuple[str, list[str]]:
    ledger = build_ledger(
        digest="sha256:" + hashlib.sha256(artifact).hexdigest(), size=len(artifact)
    )
    files = tmp_path / "ledger"
    files.mkdir()
    (files / "reg.json").write_text(json.dumps(ledger.registration))
    (files / "pub.pem").write_bytes(ledger.publisher_pem)
    (files / "checkpoint").write_text(ledger.checkpoint)
    (files / "vkey").write_text(ledger.verifier_key + "\n")
    (files / "proof.json").write_text(json.dumps(ledger.proof))
    options = [
        "--registration", str(files / "reg.json"),
        "--publisher-key", str(files / "pub.pem"),
        "--checkpoint", str(files / "checkpoint"),
        "--ledger-key", str(files / "vkey"),
        "--inclusion-proof", str(files / "proof.json"),
        "--origin", ORIGIN,
    ]  # fmt: skip
    return ledger.verifier_key, options


def test_fetch_with_ledger_proof(artifact: Path, tmp_path: Path) -> None:
    _, options = _ledger_files(tmp_path, artifact.read_bytes())
    dest = tmp_path / "m.onnx"
    code, out, err = _run(
        "fetch",
        "--uri",
        str(artifact),
        "--digest",
        sha256_digest(artifact),
        "--dest",
        str(dest),
        *options,
    )
    assert code == 0, err
    assert "registered: mnist 3 signed by key" in out
    assert f"proven at ledger index 5 of checkpoint {ORIGIN} size 11" in out
    assert dest.exists()


def test_fetch_with_a_bad_proof_downloads_nothing(artifact: Path, tmp_path: Path) -> None:
    _, options = _ledger_files(tmp_path, artifact.read_bytes())
    proof_path = Path(options[options.index("--inclusion-proof") + 1])
    proof = json.loads(proof_path.read_text())
    proof["index"] = 4
    proof.pop("leaf_hash")
    proof_path.write_text(json.dumps(proof))
    dest = tmp_path / "m.onnx"
    code, _, err = _run(
        "fetch",
        "--uri",
        str(artifact),
        "--digest",
        sha256_digest(artifact),
        "--dest",
        str(dest),
        *options,
    )
    assert code == 1
    assert "inclusion check failed" in err
    assert not dest.exists()


def test_fetch_with_some_ledger_options_is_a_usage_error(artifact: Path, tmp_path: Path) -> None:
    _, options = _ledger_files(tmp_path, artifact.read_bytes())
    code, _, err = _run(
        "fetch", "--uri", str(artifact), "--digest", REGISTERED_DIGEST,
        "--dest", str(tmp_path / "m"), *options[:4],
    )  # fmt: skip
    assert code == 2
    assert "missing --checkpoint, --ledger-key, --inclusion-proof" in err


def test_serve_refuses_a_model_whose_digest_differs(mnist_path: Path) -> None:
    code, _, err = _run(
        "serve",
        "--model-path",
        str(mnist_path),
        "--model-name",
        "mnist",
        "--digest",
        WRONG,
        "--port",
        "0",
    )
    assert code == 1
    assert f"expected {WRONG}, got {sha256_digest(mnist_path)}" in err
    assert "refusing" in err


def test_serve_refuses_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    code, _, err = _run(
        "serve", "--model-path", str(junk), "--model-name", "m", "--digest", sha256_digest(junk)
    )
    assert code == 3
    assert "onnxruntime cannot load" in err


def _start_server(model: Path) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(
        [
            sys.executable, "-c", "from modeltrust.cli.main import main; main()",
            "serve", "--model-path", str(model), "--model-name", "mnist",
            "--digest", sha256_digest(model), "--port", "0",
        ],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline().decode()
        found = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return process, int(found.group(1))
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError("the server did not report its port")


def test_sigterm_finishes_in_flight_requests_then_exits(mnist_path: Path) -> None:
    process, port = _start_server(mnist_path)
    try:
        body = orjson.dumps(
            {
                "inputs": [
                    {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.1] * 784}
                ]
            }
        )
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        busy = socket.create_connection(("127.0.0.1", port), timeout=10)
        head = (
            "POST /v2/models/mnist/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        busy.sendall(head.encode() + body[:1000])  # a request half received
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert idle.recv(1) == b""  # idle keep-alive connections are closed
        # No new connections are accepted once shutdown has begun.
        refused = False
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except ConnectionRefusedError:
                refused = True
                break
            time.sleep(0.05)
        assert refused
        busy.sendall(body[1000:])  # the in-flight request still gets its answer
        answer = b""
        while chunk := busy.recv(65536):
            answer += chunk
        head_part, _, payload = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 200 OK")
        assert b"connection: close" in head_part
        assert orjson.loads(payload)["outputs"][0]["shape"] == [1, 10]
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
