"""Crash safety: SIGKILL a real ledger process under concurrent load, again and again.

Every acknowledged entry must be present after restart at the index it was given,
its proof must verify against a checkpoint that is consistent with every checkpoint
seen before, and a full audit of the database must pass.
"""

from __future__ import annotations

import itertools
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.ledger import TOKEN, audit, ledger_subprocess, make_keys
from modeltrust.chain.client import LedgerClient, LedgerClientError
from modeltrust.chain.trust_state import FileTrustStateStore
from modeltrust.cli.main import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_NUMBERS = itertools.count()  # unique entry numbers across writers (count() is thread-safe)
ROUNDS = 4
WRITERS = 6


def _writer(
    url: str,
    vkey: str,
    wid: int,
    stop: threading.Event,
    acked: dict[int, bytes],
    pending: list[int],
    lock: threading.Lock,
) -> None:
    """Append until the server dies; remember what was acknowledged and what is in doubt."""
    with LedgerClient(url, verifier_key=vkey, token=TOKEN, timeout=10) as client:
        while not stop.is_set():
            n = pending.pop() if pending else next(_NUMBERS)
            try:
                receipt = client.append(audit(n, key=f"w{n}"))
            except LedgerClientError:
                pending.append(n)  # in doubt: retried after restart with the same key
                return
            with lock:
                assert acked.setdefault(receipt.index, receipt.leaf_hash) == receipt.leaf_hash


def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k")
    db = tmp_path / "l.db"
    acked: dict[int, bytes] = {}
    lock = threading.Lock()
    pendings: list[list[int]] = [[] for _ in range(WRITERS)]
    trust = FileTrustStateStore(tmp_path / "trust.json")
    rnd = random.Random(7)
    for _ in range(ROUNDS):
        with ledger_subprocess(keys, db, tmp_path) as (proc, url):
            # Each restart must continue the same tree: consistent with what was trusted.
            with LedgerClient(url, verifier_key=keys.verifier_key, trust_store=trust) as c:
                assert c.checkpoint().size >= len(acked)
            stop = threading.Event()
            threads = [
                threading.Thread(
                    target=_writer,
                    args=(url, keys.verifier_key, w, stop, acked, pendings[w], lock),
                )
                for w in range(WRITERS)
            ]
            for t in threads:
                t.start()
            # Kill mid-load: once this round has acknowledged some entries, at a random moment.
            target, deadline = len(acked) + 20, time.monotonic() + 120
            while len(acked) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(acked) >= target, "no progress under load before the kill"
            time.sleep(rnd.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            stop.set()
            for t in threads:
                t.join(timeout=30)
    with (
        ledger_subprocess(keys, db, tmp_path) as (_, url),
        LedgerClient(url, verifier_key=keys.verifier_key, trust_store=trust) as c,
    ):
        cp = c.checkpoint()
        for index, lh in sorted(acked.items()):
            found = c.entry(index)
            assert found.leaf_hash == lh, f"acknowledged entry {index} changed or vanished"
        assert cp.size >= len(acked)
    result = CliRunner().invoke(
        main, ["ledger", "verify", "--db", str(db), "--verifier-key", keys.verifier_key, "--quiet"]
    )
    assert result.exit_code == 0, result.output
