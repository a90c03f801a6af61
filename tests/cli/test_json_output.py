"""Every JSON document the CLI prints is one document on stdout ending with a newline
(shells, `jq -s` and line-oriented log shippers need the newline), on success and on
refusal alike. Run as real subprocesses: the bytes checked are the bytes written."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ledger import TOKEN, LedgerKeys, LedgerThread, audit, make_keys, service_config
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.signatures import private_key_pem

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from modeltrust.cli.main import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, check=False)


def one_document(stdout: str) -> object:
    assert stdout.endswith("}\n"), repr(stdout[-40:])
    return json.loads(stdout)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[LedgerThread, LedgerKeys, list[str]]]:
    keys = make_keys(tmp_path / "keys")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as thread:
        with LedgerClient(thread.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append(audit(1))
        yield thread, keys, ["--ledger", thread.url, "--ledger-key", keys.verifier_key]


def test_sign_register_verify_and_audit_json_end_with_a_newline(
    tmp_path: Path, ledger: tuple[LedgerThread, LedgerKeys, list[str]]
) -> None:
    _, keys, conn = ledger
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model bytes")
    key = tmp_path / "publisher.key"
    key.write_bytes(private_key_pem(keys.publisher))
    publisher = str(keys.publishers_dir / "publisher.pem")

    signed = run("sign", str(model), "--key", str(key), "--name", "m", "--version", "1",
                 "--out", "-")  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    one_document(signed.stdout)
    reg = tmp_path / "reg.json"
    reg.write_text(signed.stdout)

    verify = ["verify", str(model), "--publisher", publisher, "--json", *conn]
    refused = run(*verify)
    assert refused.returncode == 1, refused.stderr
    one_document(refused.stdout)

    registered = run("register", str(reg), *conn)
    assert registered.returncode == 0, registered.stderr
    one_document(registered.stdout)

    verified = run(*verify)
    assert verified.returncode == 0, verified.stderr
    one_document(verified.stdout)

    trail = run("audit", "--namespace", "default", "--name", "web", "--json", *conn)
    assert trail.returncode == 0, trail.stderr
    one_document(trail.stdout)
    nothing = run("audit", "--uid", "no-such-uid", "--json", *conn)
    assert nothing.returncode == 1, nothing.stderr
    one_document(nothing.stdout)
