"""`modeltrust keygen` and `modeltrust sign` through the real CLI entry point."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from modeltrust.chain.digest import format_digest
from modeltrust.chain.entries import Registration, entry_from_json
from modeltrust.chain.signatures import key_id, load_public_key, verify_registration
from modeltrust.cli import publisher
from modeltrust.cli.main import main

pytestmark = pytest.mark.integration

MODEL = b"onnx-ish bytes " * 1000


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def keygen(runner: CliRunner, tmp_path: Path, kind: str, name: str = "pub") -> Path:
    result = runner.invoke(main, ["keygen", "--kind", kind, "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    return tmp_path / name


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(MODEL)
    return path


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_keygen_writes_private_0600_and_prints_key_id(
    runner: CliRunner, tmp_path: Path, kind: str
) -> None:
    result = runner.invoke(main, ["keygen", "--kind", kind, "--out", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert result.stdout.strip() == key_id(load_public_key(public.read_bytes()))


def test_keygen_refuses_to_overwrite_unless_forced(runner: CliRunner, tmp_path: Path) -> None:
    prefix = keygen(runner, tmp_path, "ed25519")
    before = (tmp_path / "pub.key").read_bytes()
    result = runner.invoke(main, ["keygen", "--out", str(prefix)])
    assert result.exit_code == 1
    assert "refusing to overwrite" in result.stderr
    assert (tmp_path / "pub.key").read_bytes() == before
    forced = runner.invoke(main, ["keygen", "--out", str(prefix), "--force"])
    assert forced.exit_code == 0
    assert (tmp_path / "pub.key").read_bytes() != before
    assert stat.S_IMODE((tmp_path / "pub.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("key_kind", "signature_kind"),
    [("ed25519", "modeltrust-v1"), ("ecdsa-p256", "modeltrust-v1"), ("ecdsa-p256", "cosign-blob")],
)
def test_sign_writes_a_registration_that_verifies(
    runner: CliRunner, tmp_path: Path, model: Path, key_kind: str, signature_kind: str
) -> None:
    prefix = keygen(runner, tmp_path, key_kind)
    out = tmp_path / "reg.json"
    args = ["sign", str(model), "--key", f"{prefix}.key", "--name", "resnet", "--version", "2"]
    result = runner.invoke(main, [*args, "--kind", signature_kind, "--out", str(out)])
    assert result.exit_code == 0, result.output
    reg = entry_from_json(json.loads(out.read_text()))
    assert isinstance(reg, Registration)
    assert reg.digest == format_digest(hashlib.sha256(MODEL).digest())
    assert reg.size == len(MODEL)
    assert (reg.model_name, reg.model_version, reg.signature_kind) == (
        "resnet",
        "2",
        signature_kind,
    )
    verify_registration(reg, load_public_key(Path(f"{prefix}.pub").read_bytes()))
    assert reg.digest in result.stderr


def test_sign_to_stdout_and_progress_for_large_files(
    runner: CliRunner, tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = keygen(runner, tmp_path, "ed25519")
    monkeypatch.setattr(publisher, "PROGRESS_THRESHOLD", 1)
    args = ["sign", str(model), "--key", f"{prefix}.key", "--name", "m", "--version", "1"]
    result = runner.invoke(main, [*args, "--out", "-"])
    assert result.exit_code == 0, result.output
    reg = entry_from_json(json.loads(result.stdout))
    assert isinstance(reg, Registration)
    assert reg.digest == format_digest(hashlib.sha256(MODEL).digest())
    assert "hashing model.onnx" in result.stderr


def test_sign_bad_inputs_exit_2(runner: CliRunner, tmp_path: Path, model: Path) -> None:
    ed = keygen(runner, tmp_path, "ed25519")
    base = ["sign", str(model), "--version", "1", "--out", str(tmp_path / "r.json")]
    cases = [
        ([*base, "--key", f"{ed}.key", "--name", "m", "--kind", "cosign-blob"], "P-256"),
        ([*base, "--key", f"{ed}.pub", "--name", "m"], "cannot load key"),
        ([*base, "--key", f"{ed}.key", "--name", ""], "model_name"),
        ([*base, "--key", str(tmp_path / "absent.key"), "--name", "m"], "does not exist"),
        (["sign", str(tmp_path / "absent.onnx"), "--key", f"{ed}.key"], "does not exist"),
    ]
    for args, message in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "r.json").exists()
