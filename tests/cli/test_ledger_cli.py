"""`modeltrust ledger` keygen / serve / witness / verify / checkpoint, run as a user would."""

from __future__ import annotations

import http.server
import json
import shutil
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from harness.ledger import (
    TOKEN,
    LedgerThread,
    audit,
    free_port,
    ledger_subprocess,
    make_keys,
    service_config,
    wait_ready,
    write_signer_key,
)
from harness.postgres import store_sql
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner, NoteVerifier
from modeltrust.cli.main import main

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", "from modeltrust.cli.main import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _fill(keys_dir: Path, db: str | Path, batches: int = 4) -> str:
    keys = make_keys(keys_dir)
    with (
        LedgerThread(service_config(keys, db)) as ledger,
        LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c,
    ):
        for b in range(batches):
            c.append_many([audit(b * 100 + i) for i in range(25)])
    return keys.verifier_key


def test_keygen_writes_a_private_key_and_prints_the_verifier_key(tmp_path: Path) -> None:
    out = tmp_path / "ckpt.key"
    result = CliRunner().invoke(
        main, ["ledger", "keygen", "--origin", "example.org/log", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("example.org/log+")
    assert out.read_text().startswith("PRIVATE+KEY+example.org/log+")
    assert out.stat().st_mode & 0o077 == 0
    again = CliRunner().invoke(main, ["ledger", "keygen", "--origin", "x", "--out", str(out)])
    assert again.exit_code != 0
    assert "refusing to overwrite" in again.output


def test_verify_accepts_an_intact_ledger(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    vkey = _fill(tmp_path / "k", db)
    result = CliRunner().invoke(
        main,
        ["ledger", "verify", "--db", str(db), "--verifier-key", vkey, "--quiet", "--check-entries"],
    )
    assert result.exit_code == 0, result.output
    assert "OK: 100 entries in 4 blocks" in result.output


def _flip_in_file(db: Path, record: bytes, offset: int) -> None:
    """Flip the lowest bit of byte ``offset`` of a stored record, in the database file itself."""
    raw = bytearray(db.read_bytes())
    at = raw.find(record)
    assert at >= 0, "record not found in the file"
    assert raw.find(record, at + 1) < 0, "record must occur exactly once"
    raw[at + offset] ^= 0x01
    db.write_bytes(bytes(raw))


@pytest.mark.parametrize("victim", [3, 57, 99])
def test_verify_names_the_entry_whose_stored_bytes_changed(tmp_path: Path, victim: int) -> None:
    db = tmp_path / "l.db"
    vkey = _fill(tmp_path / "k", db)
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (data,) = con.execute("SELECT data FROM entries WHERE idx = ?", (victim,)).fetchone()
    # Flip one byte inside the entry's generation value, directly in the file.
    _flip_in_file(db, data, data.index(b'"generation"') + 14)
    result = CliRunner().invoke(
        main, ["ledger", "verify", "--db", str(db), "--verifier-key", vkey, "--quiet"]
    )
    assert result.exit_code == 1
    assert f"first bad index: {victim}" in result.output, result.output


def test_verify_names_the_block_whose_header_changed(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    vkey = _fill(tmp_path / "k", db)
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (header,) = con.execute("SELECT header FROM blocks WHERE height = 2").fetchone()
    _flip_in_file(db, header, header.index(b'"time"') + 12)
    result = CliRunner().invoke(
        main, ["ledger", "verify", "--db", str(db), "--verifier-key", vkey, "--quiet"]
    )
    assert result.exit_code == 1
    assert "first bad block: 2" in result.output, result.output


def test_verify_with_another_key_fails(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    _fill(tmp_path / "k", db, batches=1)
    other = make_keys(tmp_path / "other").verifier_key
    result = CliRunner().invoke(
        main, ["ledger", "verify", "--db", str(db), "--verifier-key", other, "--quiet"]
    )
    assert result.exit_code == 1
    assert "does not verify" in result.output


def test_verify_reads_a_postgresql_ledger_named_in_the_environment(
    tmp_path: Path, postgres_url: str
) -> None:
    vkey = _fill(tmp_path / "k", postgres_url)
    args = ["ledger", "verify", "--verifier-key", vkey, "--quiet"]
    env = {"MODELTRUST_LEDGER_DATABASE_URL": postgres_url}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "OK: 100 entries in 4 blocks" in result.output
    # On the command line, --db wins over the variable; both options at once are refused.
    other = CliRunner().invoke(main, [*args, "--db", str(tmp_path / "none.db")], env=env)
    assert other.exit_code == 2
    assert "none.db' does not exist" in other.output
    both = CliRunner().invoke(
        main, [*args, "--db", str(tmp_path / "l.db"), "--database-url", postgres_url]
    )
    assert both.exit_code == 2
    assert "not both" in both.output
    # Damage one entry's bytes (as the database's superuser): the first bad index is named.
    store_sql(postgres_url, "UPDATE entries SET data = ? WHERE idx = 57", b'{"kind": "x"}')
    result = CliRunner().invoke(main, [*args, "--db", postgres_url])
    assert result.exit_code == 1
    assert "first bad index: 57" in result.output, result.output


def test_verify_of_an_unreachable_database_is_unchecked_not_failed(
    tmp_path: Path, postgres_url: str
) -> None:
    # The server is there, the database is not: exit 3 (could not check), saying why.
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    result = CliRunner().invoke(
        main,
        ["ledger", "verify", "--db", missing, "--verifier-key", make_keys(tmp_path).verifier_key],
    )
    assert result.exit_code == 3, result.output
    assert "cannot connect to the ledger database" in result.output
    assert "no_such_database" in result.output


def test_serve_keeps_the_database_password_out_of_its_log(
    tmp_path: Path, postgres_url: str
) -> None:
    keys = make_keys(tmp_path / "k")
    # The test server trusts loopback connections: the password is checked by no one,
    # but it must not be written anywhere.
    with_password = postgres_url.replace("postgres@", "postgres:hunter2-pw@")
    with (
        ledger_subprocess(keys, with_password, tmp_path) as (_, url),
        LedgerClient(url, verifier_key=keys.verifier_key, token=TOKEN) as c,
    ):
        assert c.append(audit(1)).index == 0
    log = next(tmp_path.glob("ledger-*.log")).read_text()
    assert "hunter2-pw" not in log
    assert "store postgresql://postgres:***@127.0.0.1" in log
    assert "the database password is on the command line" in log


def test_a_bounded_second_serve_on_postgresql_names_the_writer_it_waited_for(
    tmp_path: Path, postgres_url: str
) -> None:
    keys = make_keys(tmp_path / "k")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with ledger_subprocess(keys, postgres_url, tmp_path / "a") as (first, _):
        with (
            pytest.raises(RuntimeError, match="exited with 1"),
            ledger_subprocess(keys, postgres_url, tmp_path / "b", "--writer-wait", "1"),
        ):
            pass
        log = next((tmp_path / "b").glob("ledger-*.log")).read_text()
        assert "another ledger writer holds the writer lock" in log
        assert "(waited 1 s)" in log
        assert f"modeltrust-ledger writer pid {first.pid}" in log


def test_serve_verify_url_checkpoint_and_single_writer(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    db = tmp_path / "l.db"
    with ledger_subprocess(keys, db, tmp_path) as (_, url):
        with LedgerClient(url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append_many([audit(i) for i in range(30)])
        remote = _cli(
            "ledger", "verify", "--url", url, "--verifier-key", keys.verifier_key, "--quiet"
        )
        assert remote.returncode == 0, remote.stderr
        assert "OK: 30 entries in 1 blocks" in remote.stdout
        trust = tmp_path / "trust.json"
        cp = _cli(
            "ledger",
            "checkpoint",
            "--url",
            url,
            "--verifier-key",
            keys.verifier_key,
            "--trust-file",
            str(trust),
        )
        assert cp.returncode == 0
        assert cp.stdout.splitlines()[1] == "30"
        # A second sequencer on the same database refuses to start.
        with pytest.raises(RuntimeError, match="exited"), ledger_subprocess(keys, db, tmp_path):
            pass
        logs = "".join(p.read_text() for p in tmp_path.glob("ledger-*.log"))
        assert "another sequencer process holds" in logs
    # Restore an older copy and the checkpoint command reports the rollback.
    backup = tmp_path / "old.db"
    shutil.copy(db, backup)
    with ledger_subprocess(keys, db, tmp_path) as (_, url):
        with LedgerClient(url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append(audit(1000))
        assert (
            _cli(
                "ledger",
                "checkpoint",
                "--url",
                url,
                "--verifier-key",
                keys.verifier_key,
                "--trust-file",
                str(trust),
            ).returncode
            == 0
        )
    shutil.copy(backup, db)
    with ledger_subprocess(keys, db, tmp_path) as (_, url):
        rolled = _cli(
            "ledger",
            "checkpoint",
            "--url",
            url,
            "--verifier-key",
            keys.verifier_key,
            "--trust-file",
            str(trust),
        )
        assert rolled.returncode == 1
        assert "rollback" in rolled.stderr


# --- TokenReview audiences -------------------------------------------------------------------

OPERATOR_SA = "system:serviceaccount:modeltrust-system:operator"
LEDGER_OWN_TOKEN = "ledger-sa-api-token"
# The operator's two tokens: its API-server token and a projected one bound to the ledger.
API_TOKEN, LEDGER_TOKEN = "operator-api-token", "operator-ledger-token"


class TokenReviewServer(http.server.ThreadingHTTPServer):
    """Answers POST .../tokenreviews as kube-apiserver does: a token is authenticated only for
    an audience it was issued for, and status.audiences names the audiences that matched."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TokenReviewHandler)
        self.issued = {
            API_TOKEN: ["https://kubernetes.default.svc"],
            LEDGER_TOKEN: ["modeltrust-ledger"],
        }
        self.reviews: list[dict[str, Any]] = []


class _TokenReviewHandler(http.server.BaseHTTPRequestHandler):
    server: TokenReviewServer

    def do_POST(self) -> None:
        ok = self.path == "/apis/authentication.k8s.io/v1/tokenreviews" and (
            self.headers.get("Authorization") == f"Bearer {LEDGER_OWN_TOKEN}"
        )
        if not ok:
            self._answer(401, {"kind": "Status", "code": 401})
            return
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.reviews.append(review)
        spec = review["spec"]
        wanted = spec.get("audiences") or ["https://kubernetes.default.svc"]
        matched = [a for a in wanted if a in self.server.issued.get(spec["token"], [])]
        status: dict[str, Any] = {"authenticated": False, "error": "invalid bearer token"}
        if matched:
            status = {
                "authenticated": True,
                "audiences": matched,
                "user": {"username": OPERATOR_SA},
            }
        self._answer(201, {**review, "status": status})

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def tokenreview() -> Iterator[TokenReviewServer]:
    server = TokenReviewServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _post_audit(url: str, token: str, i: int) -> int:
    request = urllib.request.Request(  # noqa: S310 -- loopback
        url + "/v1/entries",
        data=orjson.dumps(entry_to_json(audit(i))),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 -- loopback
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_serve_with_an_audience_accepts_only_tokens_issued_for_the_ledger(
    tmp_path: Path, tokenreview: TokenReviewServer
) -> None:
    keys = make_keys(tmp_path / "k")
    credentials = tmp_path / "ledger-sa-token"
    credentials.write_text(LEDGER_OWN_TOKEN + "\n")
    port = free_port()
    cmd = [
        sys.executable, "-c", "from modeltrust.cli.main import main; main()",
        "ledger", "serve", "--db", str(tmp_path / "l.db"),
        "--key", str(write_signer_key(keys, tmp_path)), "--origin", keys.signer.name,
        "--publishers", str(keys.publishers_dir), "--listen", f"127.0.0.1:{port}",
        "--tokenreview-allow", OPERATOR_SA, "--tokenreview-audience", "modeltrust-ledger",
        "--tokenreview-url", f"http://127.0.0.1:{tokenreview.server_address[1]}",
        "--tokenreview-credentials", str(credentials),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "ledger.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(url, proc)
            # The operator's API-server token is refused, though the account is allowed.
            assert _post_audit(url, API_TOKEN, 1) == 401
            assert _post_audit(url, LEDGER_TOKEN, 2) == 201
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert [r["spec"]["audiences"] for r in tokenreview.reviews] == [["modeltrust-ledger"]] * 2


def test_an_audience_without_tokenreview_is_a_usage_error(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    args = [
        "ledger", "serve", "--db", str(tmp_path / "l.db"),
        "--key", str(write_signer_key(keys, tmp_path)), "--origin", keys.signer.name,
        "--publishers", str(keys.publishers_dir),
    ]  # fmt: skip
    lone = CliRunner().invoke(main, [*args, "--tokenreview-audience", "modeltrust-ledger"])
    assert lone.exit_code == 2
    assert "--tokenreview-audience needs --tokenreview-allow" in lone.output


def test_keygen_witness_makes_a_timestamped_cosignature_key(tmp_path: Path) -> None:
    out = tmp_path / "w.key"
    result = CliRunner().invoke(
        main,
        ["ledger", "keygen", "--witness", "--origin", "witness.example.org", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    verifier = NoteVerifier.from_verifier_key(result.output.strip())
    assert (verifier.name, verifier.alg) == ("witness.example.org", ALG_COSIGNATURE_V1)
    assert NoteSigner.from_signer_key(out.read_text()).alg == ALG_COSIGNATURE_V1


def test_serve_and_witness_refuse_a_witness_key_without_time(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    untimed = NoteSigner.generate("witness.example.org")  # type 0x01: no time in signatures
    served = _cli(
        "ledger", "serve", "--db", str(tmp_path / "l.db"),
        "--key", str(write_signer_key(keys, tmp_path)), "--origin", keys.signer.name,
        "--publishers", str(keys.publishers_dir),
        "--witness", "http://127.0.0.1:9", untimed.verifier_key(),
    )  # fmt: skip
    assert served.returncode == 3, served.stderr
    assert "not a timestamped cosignature key (type 0x04" in served.stderr
    key = tmp_path / "untimed.key"
    key.write_text(untimed.signer_key())
    witnessed = _cli(
        "ledger", "witness", "--state", str(tmp_path / "w"), "--key", str(key),
        "--log-url", "http://127.0.0.1:9", "--log-key", keys.verifier_key,
    )  # fmt: skip
    assert witnessed.returncode == 3, witnessed.stderr
    assert "keygen --witness" in witnessed.stderr
