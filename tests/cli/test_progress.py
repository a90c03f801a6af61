"""Progress bars are for people at a terminal: a log, a pipe or a file gets none.

Each command runs in a real subprocess, with stderr a file (as under a CI runner or a
log collector) and then a pseudo-terminal (as for a person), so the check is the one
the process itself makes, not a test double's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from harness.ledger import TOKEN, LedgerThread, audit, make_keys, service_config
from modeltrust.chain.client import LedgerClient
from modeltrust.cli.sources import PROGRESS_THRESHOLD

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from modeltrust.cli.main import main; main()"]


def run_to_file(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run the CLI with stderr redirected to a file; return (exit code, stderr)."""
    err = tmp_path / "stderr.log"
    with err.open("wb") as f:
        proc = subprocess.run(
            [*CLI, *args], stdout=subprocess.DEVNULL, stderr=f, timeout=120, check=False
        )
    return proc.returncode, err.read_text(errors="replace")


def run_on_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; return (exit code, what it drew)."""
    master, slave = pty.openpty()
    # A new pty is 0x0; tqdm would draw a bar zero columns wide. Make it 24x80.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the last writer closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [*CLI, *args], stdout=subprocess.DEVNULL, stderr=slave, timeout=120, check=False
        )
    finally:
        os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    """A file over the progress threshold (sparse: no 64 MiB written to disk)."""
    path = tmp_path / "big.onnx"
    with path.open("wb") as f:
        f.truncate(PROGRESS_THRESHOLD + (1 << 20))
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    code, err = run_to_file(tmp_path, "keygen", "--out", str(tmp_path / "pub"))
    assert code == 0, err
    return tmp_path / "pub.key"


def sign_args(model: Path, key: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "reg.json"
    return [
        "sign",
        str(model),
        "--key",
        str(key),
        "--name",
        "m",
        "--version",
        "1",
        "--out",
        str(out),
    ]


def test_sign_draws_no_progress_bar_into_a_file(tmp_path: Path, big_model: Path, key: Path) -> None:
    code, err = run_to_file(tmp_path, *sign_args(big_model, key, tmp_path))
    assert code == 0, err
    assert "hashing" not in err
    assert "\r" not in err
    assert err.startswith("signed m 1 sha256:"), err
    assert len(err.splitlines()) == 1, err


def test_sign_draws_a_progress_bar_on_a_terminal(
    tmp_path: Path, big_model: Path, key: Path
) -> None:
    code, drawn = run_on_terminal(*sign_args(big_model, key, tmp_path))
    assert code == 0, drawn
    assert "hashing big.onnx" in drawn
    assert "signed m 1 sha256:" in drawn


def test_ledger_verify_draws_no_progress_bar_into_a_file(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    db = tmp_path / "l.db"
    with (
        LedgerThread(service_config(keys, db)) as ledger,
        LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as c,
    ):
        c.append_many([audit(i) for i in range(10)])
    args = ["ledger", "verify", "--db", str(db), "--verifier-key", keys.verifier_key]
    code, err = run_to_file(tmp_path, *args)
    assert code == 0, err
    assert err == ""
    code, drawn = run_on_terminal(*args)
    assert code == 0, drawn
    assert "entries" in drawn  # tqdm's bar, " entries" its unit


def test_fetch_draws_no_progress_bar_into_a_file(tmp_path: Path, big_model: Path) -> None:
    digest = "sha256:" + hashlib.sha256(big_model.read_bytes()).hexdigest()
    args = ["fetch", "--uri", str(big_model), "--digest", digest, "--dest"]
    code, err = run_to_file(tmp_path, *args, str(tmp_path / "a.onnx"))
    assert code == 0, err
    assert err == ""
    code, drawn = run_on_terminal(*args, str(tmp_path / "b.onnx"))
    assert code == 0, drawn
    assert "fetch" in drawn
