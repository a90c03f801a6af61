"""`modeltrust keygen|sign|register|revoke|verify` through the real CLI entry point."""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.ledger import (
    LedgerKeys,
    LedgerThread,
    free_port,
    make_keys,
    registration,
    service_config,
)
from modeltrust.chain.canonical import canonical_json
from modeltrust.chain.digest import format_digest
from modeltrust.chain.entries import Registration, entry_from_json, entry_to_json
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.signatures import (
    key_id,
    load_public_key,
    private_key_pem,
    verify_registration,
)
from modeltrust.cli import sources
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
    monkeypatch.setattr(sources, "PROGRESS_THRESHOLD", 1)
    # CliRunner's stderr is no terminal; tests/cli/test_progress.py runs a real one.
    monkeypatch.setattr(sources, "is_terminal", lambda stream=None: True)
    args = ["sign", str(model), "--key", f"{prefix}.key", "--name", "m", "--version", "1"]
    result = runner.invoke(main, [*args, "--out", "-"])
    assert result.exit_code == 0, result.output
    reg = entry_from_json(json.loads(result.stdout))
    assert isinstance(reg, Registration)
    assert reg.digest == format_digest(hashlib.sha256(MODEL).digest())
    assert "hashing model.onnx" in result.stderr


def test_sign_bad_inputs_exit_3_and_usage_errors_2(
    runner: CliRunner, tmp_path: Path, model: Path
) -> None:
    ed = keygen(runner, tmp_path, "ed25519")
    base = ["sign", str(model), "--version", "1", "--out", str(tmp_path / "r.json")]
    cases = [
        ([*base, "--key", f"{ed}.key", "--name", "m", "--kind", "cosign-blob"], "P-256", 3),
        ([*base, "--key", f"{ed}.pub", "--name", "m"], "cannot load key", 3),
        ([*base, "--key", f"{ed}.key", "--name", ""], "model_name", 3),
        ([*base, "--key", str(tmp_path / "absent.key"), "--name", "m"], "does not exist", 2),
        (
            ["sign", str(tmp_path / "absent.onnx"), *base[2:], "--key", f"{ed}.key", "--name", "m"],
            "does not exist",
            2,
        ),
    ]
    for args, message, code in cases:
        result = runner.invoke(main, args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "r.json").exists()


# --- register / revoke / verify against a real ledger server -----------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[LedgerThread, LedgerKeys, Path]]:
    """A real ledger (SQLite file, aiohttp on loopback) trusting one publisher key.

    Yields (ledger, keys, publisher private key file)."""
    keys = make_keys(tmp_path / "keys")
    key_file = tmp_path / "publisher.key"
    key_file.write_bytes(private_key_pem(keys.publisher))
    with LedgerThread(service_config(keys, tmp_path / "ledger.db")) as thread:
        yield thread, keys, key_file


def ledger_args(thread: LedgerThread, keys: LedgerKeys, tmp_path: Path) -> list[str]:
    return [
        "--ledger",
        thread.url,
        "--ledger-key",
        keys.verifier_key,
        "--trust-state",
        str(tmp_path / "trusted.json"),
    ]


def test_sign_register_verify_revoke_round_trip(
    runner: CliRunner,
    tmp_path: Path,
    model: Path,
    ledger: tuple[LedgerThread, LedgerKeys, Path],
) -> None:
    thread, keys, key_file = ledger
    conn = ledger_args(thread, keys, tmp_path)
    publisher_pem = keys.publishers_dir / "publisher.pem"
    reg_file = tmp_path / "reg.json"
    signed = runner.invoke(
        main,
        [
            *["sign", str(model), "--key", str(key_file)],
            *["--name", "resnet", "--version", "1", "--out", str(reg_file)],
        ],
    )
    assert signed.exit_code == 0, signed.output
    verify_args = ["verify", str(model), "--publisher", str(publisher_pem), *conn]

    before = runner.invoke(main, verify_args)
    assert before.exit_code == 1, before.output
    assert "NOT VERIFIED (NotRegistered)" in before.stdout

    registered = runner.invoke(main, ["register", str(reg_file), *conn])
    assert registered.exit_code == 0, registered.output
    receipt = json.loads(registered.stdout)
    assert receipt["checkpoint_size"] > receipt["index"]
    assert receipt["existing"] is False
    again = runner.invoke(main, ["register", str(reg_file), *conn])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["index"] == receipt["index"]

    ok = runner.invoke(main, [*verify_args, "--json", "--name", "resnet", "--version", "1"])
    assert ok.exit_code == 0, ok.output
    verdict = json.loads(ok.stdout)
    assert verdict["verified"] is True
    assert verdict["reason"] == "Verified"
    assert verdict["findings"] == []
    assert [r["publisher"] for r in verdict["registrations"]] == ["publisher"]
    wrong_version = runner.invoke(main, [*verify_args, "--version", "2"])
    assert wrong_version.exit_code == 1
    assert "RegistrationMismatch: " in wrong_version.stdout
    assert "not 'resnet' version '2'" in wrong_version.stdout

    digest = format_digest(hashlib.sha256(MODEL).digest())
    revoked = runner.invoke(
        main,
        ["revoke", "--key", str(key_file), "--digest", digest, "--reason", "poisoned", *conn],
    )
    assert revoked.exit_code == 0, revoked.output
    after = runner.invoke(main, [*verify_args, "--json"])
    assert after.exit_code == 1
    doc = json.loads(after.stdout)
    assert doc["reason"] == "Revoked"
    assert "poisoned" in doc["findings"][0]["message"]
    assert [r["has_authority"] for r in doc["revocations"]] == [True]


def test_verify_refuses_untrusted_publishers_and_revoked_keys(
    runner: CliRunner,
    tmp_path: Path,
    model: Path,
    ledger: tuple[LedgerThread, LedgerKeys, Path],
) -> None:
    thread, keys, key_file = ledger
    conn = ledger_args(thread, keys, tmp_path)
    reg_file = tmp_path / "reg.json"
    args = ["sign", str(model), "--key", str(key_file), "--name", "m", "--version", "1"]
    assert runner.invoke(main, [*args, "--out", str(reg_file)]).exit_code == 0
    assert runner.invoke(main, ["register", str(reg_file), *conn]).exit_code == 0

    stranger = keygen(runner, tmp_path, "ecdsa-p256", name="stranger")
    untrusted = runner.invoke(main, ["verify", str(model), "--publisher", f"{stranger}.pub", *conn])
    assert untrusted.exit_code == 1
    assert "UntrustedKey: " in untrusted.stdout

    own_id = key_id(keys.publisher.public_key())
    revoke_key = ["revoke", "--key", str(key_file), "--key-id", own_id, "--reason", "leaked"]
    assert runner.invoke(main, [*revoke_key, *conn]).exit_code == 0
    publisher_pem = keys.publishers_dir / "publisher.pem"
    result = runner.invoke(main, ["verify", str(model), "--publisher", str(publisher_pem), *conn])
    assert result.exit_code == 1
    assert "NOT VERIFIED (Revoked)" in result.stdout
    assert "revokes signer key" in result.stdout


def test_ledger_failures_and_bad_arguments(
    runner: CliRunner,
    tmp_path: Path,
    model: Path,
    ledger: tuple[LedgerThread, LedgerKeys, Path],
) -> None:
    thread, keys, key_file = ledger
    publisher_pem = str(keys.publishers_dir / "publisher.pem")
    other_log = NoteSigner.generate(keys.signer.name).verifier_key()
    wrong_key = ["verify", str(model), "--publisher", publisher_pem, "--ledger", thread.url]
    result = runner.invoke(main, [*wrong_key, "--ledger-key", other_log])
    assert result.exit_code == 1  # an answer that does not verify is a finding
    assert "NOT VERIFIED (LedgerUnavailable)" in result.stdout
    assert "does not verify" in result.stdout

    port = free_port()  # nothing listens there
    down = ["--ledger", f"http://127.0.0.1:{port}", "--ledger-key", keys.verifier_key]
    result = runner.invoke(main, ["verify", str(model), "--publisher", publisher_pem, *down])
    assert result.exit_code == 3  # no answer: could not check
    assert "NOT VERIFIED (LedgerUnavailable)" in result.stdout
    assert "did not answer: connection refused" in result.stdout

    conn = ledger_args(thread, keys, tmp_path)
    both = ["revoke", "--key", str(key_file), "--reason", "x", *conn]
    result = runner.invoke(main, [*both, "--digest", "sha256:" + "0" * 64, "--key-id", "a" * 64])
    assert result.exit_code == 2
    result = runner.invoke(main, [*both, "--digest", "md5:00"])
    assert result.exit_code == 2
    assert "digest" in result.stderr
    not_a_reg = tmp_path / "x.json"
    not_a_reg.write_text("{}")
    result = runner.invoke(main, ["register", str(not_a_reg), *conn])
    assert result.exit_code == 3
    assert "entry kind" in result.stderr


def test_register_on_a_rolled_back_ledger_refuses_before_appending(
    runner: CliRunner, tmp_path: Path
) -> None:
    keys = make_keys(tmp_path / "keys")
    regs = []
    for i in range(3):
        path = tmp_path / f"reg{i}.json"
        path.write_bytes(canonical_json(entry_to_json(registration(keys, i))))
        regs.append(str(path))
    state = ["--trust-state", str(tmp_path / "trusted.json")]
    with LedgerThread(service_config(keys, tmp_path / "ledger.db")) as thread:
        conn = ["--ledger", thread.url, "--ledger-key", keys.verifier_key, *state]
        for reg in regs[:2]:
            result = runner.invoke(main, ["register", reg, *conn])
            assert result.exit_code == 0, result.output
    # The same log, restored from an older (here: empty) backup: a rollback from size 2.
    with LedgerThread(service_config(keys, tmp_path / "restored.db")) as thread:
        conn = ["--ledger", thread.url, "--ledger-key", keys.verifier_key, *state]
        result = runner.invoke(main, ["register", regs[2], *conn])
        assert result.exit_code != 0, result.output
        assert "rollback" in result.stderr
        sequencer = thread.service.sequencer
        assert sequencer is not None
        assert sequencer.latest.size == 0  # nothing was written to the rolled-back ledger
