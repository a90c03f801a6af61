"""`modeltrust keygen --encrypt`: the private key encrypted under $MODELTRUST_KEY_PASSWORD,
read back by `sign` with the variable set, and a clear error without it. Real subprocesses
with no terminal on stdin, as in CI or a signing script."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from modeltrust.chain.entries import Registration, entry_from_json
from modeltrust.chain.signatures import load_public_key, verify_registration

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from modeltrust.cli.main import main; main()"]
VAR = "MODELTRUST_KEY_PASSWORD"


def run(*args: str | Path, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != VAR}
    if password is not None:
        env[VAR] = password
    return subprocess.run(
        [*CLI, *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"model bytes" * 100)
    return path


def sign(
    model: Path, key: Path, out: Path, password: str | None
) -> subprocess.CompletedProcess[str]:
    return run("sign", model, "--key", key, "--name", "m", "--version", "1", "--out", out,
               password=password)  # fmt: skip


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_an_encrypted_key_signs_with_the_password_and_not_without(
    tmp_path: Path, model: Path, kind: str
) -> None:
    made = run("keygen", "--kind", kind, "--encrypt", "--out", tmp_path / "pub", password="s3cret")
    assert made.returncode == 0, made.stderr
    key, pub = tmp_path / "pub.key", tmp_path / "pub.pub"
    assert key.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    out = tmp_path / "reg.json"
    signed = sign(model, key, out, "s3cret")
    assert signed.returncode == 0, signed.stderr
    reg = entry_from_json(json.loads(out.read_text()))
    assert isinstance(reg, Registration)
    verify_registration(reg, load_public_key(pub.read_bytes()))
    out.unlink()

    missing = sign(model, key, out, None)
    assert missing.returncode == 3
    assert f"it is encrypted; set {VAR} to its password" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert not out.exists()

    wrong = sign(model, key, out, "not it")
    assert wrong.returncode == 3
    assert f"wrong password ({VAR})" in wrong.stderr
    assert not out.exists()


def test_keygen_without_a_password_or_terminal_is_a_usage_error(tmp_path: Path) -> None:
    result = run("keygen", "--encrypt", "--out", tmp_path / "pub")
    assert result.returncode == 2
    assert VAR in result.stderr
    assert not (tmp_path / "pub.key").exists()


def test_plain_keys_still_sign_with_the_variable_exported(tmp_path: Path, model: Path) -> None:
    made = run("keygen", "--out", tmp_path / "pub", password="s3cret")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "pub.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    signed = sign(model, tmp_path / "pub.key", tmp_path / "reg.json", "s3cret")
    assert signed.returncode == 0, signed.stderr


def test_the_help_documents_the_variable() -> None:
    for command in ("keygen", "sign", "revoke"):
        result = run(command, "--help")
        assert VAR in result.stdout.replace("\n", " ").replace("  ", " "), command


def test_openssl_reads_the_encrypted_key(tmp_path: Path) -> None:
    # Debian's ca-certificates depends on openssl: wherever the suite runs, it is there.
    assert shutil.which("openssl"), "openssl is needed to cross-check the key format"
    made = run("keygen", "--encrypt", "--out", tmp_path / "pub", password="s3cret")
    assert made.returncode == 0, made.stderr
    result = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "pub.key"), "-passin", f"env:{VAR}",
         "-pubout"],
        env={**os.environ, VAR: "s3cret"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == (tmp_path / "pub.pub").read_text()
