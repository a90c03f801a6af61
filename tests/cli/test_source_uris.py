"""`sign`, `verify` and `fetch` read a model from a URI as the operator does: hashed straight
from the source with the same credentials, nothing kept."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.private_http import PrivateFileServer
from modeltrust.chain.entries import Registration, entry_from_json
from modeltrust.cli.main import main

TOKEN = "cli-token-77e1d0"
MODEL = os.urandom(1 << 20)
DIGEST = "sha256:" + hashlib.sha256(MODEL).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> PrivateFileServer:
    root = tmp_path / "models"
    root.mkdir()
    (root / "model.onnx").write_bytes(MODEL)
    return PrivateFileServer(root, tmp_path, token=TOKEN)


@pytest.fixture
def credentials_dir(tmp_path: Path, server: PrivateFileServer) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "token").write_text(TOKEN + "\n")
    (directory / "ca.crt").write_bytes(server.ca_pem)
    return directory


def keygen(runner: CliRunner, tmp_path: Path) -> Path:
    prefix = tmp_path / "pub"
    assert runner.invoke(main, ["keygen", "--out", str(prefix)]).exit_code == 0
    return prefix


def test_sign_hashes_a_private_https_model_without_keeping_it(
    tmp_path: Path, server: PrivateFileServer, credentials_dir: Path
) -> None:
    runner = CliRunner()
    prefix = keygen(runner, tmp_path)
    before = set(tmp_path.iterdir())
    with server:
        result = runner.invoke(
            main,
            [
                "sign", server.url("model.onnx"), "--key", f"{prefix}.key",
                "--name", "m", "--version", "1", "--out", "-",
                "--credentials-dir", str(credentials_dir),
            ],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    reg = entry_from_json(json.loads(result.stdout))
    assert isinstance(reg, Registration)
    assert (reg.digest, reg.size) == (DIGEST, len(MODEL))
    assert set(tmp_path.iterdir()) == before  # nothing written beside the inputs
    assert server.requests[0][1]["Authorization"] == f"Bearer {TOKEN}"


def test_a_refused_source_says_why_and_never_shows_the_token(
    tmp_path: Path, server: PrivateFileServer, credentials_dir: Path
) -> None:
    runner = CliRunner()
    prefix = keygen(runner, tmp_path)
    base = ["sign", "--key", f"{prefix}.key", "--name", "m", "--version", "1", "--out", "-"]
    (credentials_dir / "token").write_text("wrong-token-31337")
    with server:
        wrong = runner.invoke(
            main, [*base, server.url("model.onnx"), "--credentials-dir", str(credentials_dir)]
        )
        elsewhere = runner.invoke(
            main,
            [
                *base, server.url("model.onnx"), "--credentials-dir", str(credentials_dir),
                "--credential-hosts", "models.example.com",
            ],
        )  # fmt: skip
    assert wrong.exit_code == 3
    assert "FetchFailed" in wrong.stderr
    assert "credentials were refused" in wrong.stderr
    assert "wrong-token-31337" not in wrong.output
    assert elsewhere.exit_code == 3
    assert "may not be sent to 127.0.0.1" in elsewhere.stderr
    assert len(server.requests) == 1  # the one with the wrong token; none to elsewhere


def test_fetch_uses_the_mounted_secret_layout(
    tmp_path: Path, server: PrivateFileServer, credentials_dir: Path
) -> None:
    dest = tmp_path / "out" / "model.onnx"
    with server:
        result = CliRunner().invoke(
            main,
            [
                "fetch", "--uri", server.url("model.onnx"), "--digest", DIGEST,
                "--dest", str(dest), "--credentials-dir", str(credentials_dir),
                "--credential-hosts", f"127.0.0.1:{server.port}",
            ],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert dest.read_bytes() == MODEL
