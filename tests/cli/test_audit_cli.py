"""`modeltrust audit` against a real ledger server, including tampered and rolled-back stores."""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from harness.ledger import (
    TOKEN,
    LedgerKeys,
    LedgerThread,
    audit,
    free_port,
    make_keys,
    service_config,
)
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import AuditEntry
from modeltrust.cli.main import main

pytestmark = pytest.mark.integration


def _append(ledger: LedgerThread, keys: LedgerKeys, *entries: AuditEntry) -> str:
    """Append audit entries with the static token; return the new checkpoint's root (base64)."""
    with LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as client:
        for entry in entries:
            client.append(entry)
        return base64.b64encode(client.checkpoint().checkpoint.root_hash).decode()


def _audit(
    url: str, keys: LedgerKeys, trust: Path | None, *args: str, verifier_key: str | None = None
) -> Result:
    conn = ["--ledger", url, "--ledger-key", verifier_key or keys.verifier_key]
    if trust is not None:
        conn += ["--trust-state", str(trust)]
    return CliRunner().invoke(main, ["audit", *args, *conn])


def _backup(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite ledger (what an old snapshot of its volume holds)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def test_audit_lists_every_entry_of_a_deployment_proven(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger:
        root = _append(
            ledger,
            keys,
            audit(1),
            audit(2, name="other", uid="uid-2"),
            audit(3),
            audit(4),
        )
        text = _audit(ledger.url, keys, None, "--namespace", "default", "--name", "web")
        assert text.exit_code == 0, text.output
        lines = text.stdout.splitlines()
        assert lines[0] == f"audit trail of default/web on {keys.signer.name}"
        assert lines[1].split()[:4] == ["INDEX", "TIME", "ACTION", "DECISION"]
        rows = [line.split() for line in lines[2:-1]]
        assert [r[0] for r in rows] == ["0", "2", "3"]  # index 1 belongs to another deployment
        assert all(
            r[1:4] == ["2025-01-31T12:00:00Z", "rollout", "allowed"] and "ok" in r for r in rows
        )
        assert "sha256:000000000000…" in lines[2]
        assert "system:serviceaccount:modeltrust:operator" in lines[2]
        assert lines[2].endswith("signature verified")
        assert lines[-1] == f"3 entries, all proven against checkpoint size 4 (root {root})"

        by_uid = _audit(ledger.url, keys, tmp_path / "trust.json", "--uid", "uid-2", "--json")
        assert by_uid.exit_code == 0, by_uid.output
        doc = json.loads(by_uid.stdout)
        assert doc["status"] == "verified"
        assert doc["checkpoint"]["size"] == 4
        assert doc["checkpoint"]["root_hash"] == root
        assert [e["index"] for e in doc["entries"]] == [1]
        assert doc["entries"][0]["entry"]["name"] == "other"
        assert doc["entries"][0]["proven_at_size"] == 4
        assert json.loads((tmp_path / "trust.json").read_text())["size"] == 4


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    url = f"http://127.0.0.1:{free_port()}"  # never contacted: usage is checked first
    for args in (
        [],
        ["--namespace", "default"],
        ["--name", "web"],
        ["--uid", "u", "--name", "web"],
        ["--uid", ""],
    ):
        result = _audit(url, keys, None, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "give --uid UID, or both --namespace NS and --name NAME" in result.stderr


def test_unknown_deployment_exits_1_and_an_unreachable_ledger_3(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger:
        _append(ledger, keys, audit(1))
        missing = _audit(ledger.url, keys, None, "--namespace", "default", "--name", "nope")
        assert missing.exit_code == 1
        assert "no audit entries for default/nope" in missing.stderr
        assert "checkpoint size 1" in missing.stderr
        as_json = _audit(ledger.url, keys, None, "--uid", "nope", "--json")
        assert as_json.exit_code == 1
        assert json.loads(as_json.stdout)["status"] == "no_entries"

    down = _audit(f"http://127.0.0.1:{free_port()}", keys, None, "--uid", "uid-1", "--json")
    assert down.exit_code == 3
    assert "no verified answer" in down.stderr
    assert "did not answer: connection refused" in down.stderr
    assert json.loads(down.stdout)["status"] == "unavailable"


def test_a_tampered_entry_is_named_and_nothing_is_listed(tmp_path: Path) -> None:
    keys, db = make_keys(tmp_path / "keys"), tmp_path / "l.db"
    with LedgerThread(service_config(keys, db)) as ledger:
        _append(ledger, keys, audit(1), audit(2), audit(3))
    # Someone with access to the ledger's volume turns a recorded refusal into history
    # that never happened: entry 1's bytes change, its tree nodes do not.
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute("SELECT data FROM entries WHERE idx = 1").fetchone()
        forged = bytes(data).replace(b'"decision":"allowed"', b'"decision":"refused"')
        assert forged != bytes(data)
        conn.execute("UPDATE entries SET data = ? WHERE idx = 1", (forged,))
    # A ledger server refuses to start on such a store (tests/chain/test_robustness.py);
    # one started without its start-up audit still refuses to serve the forged entry
    # (a 500 naming it), and the client must not list anything either way.
    config = dataclasses.replace(service_config(keys, db), audit_on_start=False)
    with LedgerThread(config) as ledger:
        text = _audit(ledger.url, keys, None, "--namespace", "default", "--name", "web")
        assert text.exit_code == 3  # no verified answer to be had
        assert "entry 1" in text.stderr
        assert "damaged" in text.stderr
        assert text.stdout == ""  # not one unproven row is shown
        as_json = _audit(ledger.url, keys, None, "--uid", "uid-1", "--json")
        assert as_json.exit_code == 3
        doc = json.loads(as_json.stdout)
        assert "entry 1" in doc["message"]
        assert doc["entries"] == []


def test_a_rolled_back_ledger_is_refused_loudly_and_trust_is_kept(tmp_path: Path) -> None:
    keys, db, old = make_keys(tmp_path / "keys"), tmp_path / "l.db", tmp_path / "old.db"
    trust = tmp_path / "trust.json"
    with LedgerThread(service_config(keys, db)) as ledger:
        _append(ledger, keys, audit(1), audit(2))
        _backup(db, old)
        _append(ledger, keys, audit(3))
        ok = _audit(ledger.url, keys, trust, "--uid", "uid-1")
        assert ok.exit_code == 0, ok.output
        assert "3 entries, all proven against checkpoint size 3" in ok.stdout
    trusted_before = trust.read_bytes()

    with LedgerThread(service_config(keys, old)) as rolled_back:
        result = _audit(rolled_back.url, keys, trust, "--uid", "uid-1", "--json")
        assert result.exit_code == 1
        assert "LEDGER ROLLBACK DETECTED" in result.stderr
        assert "size 2, older than the verified checkpoint of size 3" in result.stderr
        assert json.loads(result.stdout)["status"] == "rollback"
        # Without the remembered checkpoint the same old ledger is self-consistent.
        assert _audit(rolled_back.url, keys, None, "--uid", "uid-1").exit_code == 0
    assert trust.read_bytes() == trusted_before


def test_a_forked_ledger_is_refused_loudly(tmp_path: Path) -> None:
    keys, trust = make_keys(tmp_path / "keys"), tmp_path / "trust.json"
    with LedgerThread(service_config(keys, tmp_path / "a.db")) as ledger:
        _append(ledger, keys, audit(1), audit(2))
        assert _audit(ledger.url, keys, trust, "--uid", "uid-1").exit_code == 0
    # The same checkpoint key signing a different history of the same and of a larger size.
    with LedgerThread(service_config(keys, tmp_path / "b.db")) as fork:
        _append(fork, keys, audit(1), audit(5))
        same_size = _audit(fork.url, keys, trust, "--uid", "uid-1")
        assert same_size.exit_code == 1
        assert "LEDGER FORK DETECTED" in same_size.stderr
        _append(fork, keys, audit(6))
        larger = _audit(fork.url, keys, trust, "--uid", "uid-1")
        assert larger.exit_code == 1
        assert "LEDGER FORK DETECTED" in larger.stderr
        assert "not consistent with the verified checkpoint 2" in larger.stderr


def test_a_wrong_ledger_key_is_not_a_verified_answer(tmp_path: Path) -> None:
    keys, other = make_keys(tmp_path / "keys"), make_keys(tmp_path / "other")
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as ledger:
        _append(ledger, keys, audit(1))
        result = _audit(ledger.url, keys, None, "--uid", "uid-1", verifier_key=other.verifier_key)
        assert result.exit_code == 1
        assert "NOT VERIFIED" in result.stderr
        assert "checkpoint does not verify" in result.stderr
        assert result.stdout == ""
