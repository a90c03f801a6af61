"""Crash safety and failover: SIGKILL a real ledger process under concurrent load, again
and again (on SQLite and on PostgreSQL); with PostgreSQL, pause the writer (SIGSTOP) under
load until a standby takes over, then resume it.

Every acknowledged entry must be present afterwards at the index it was given, its proof
must verify against a checkpoint that is consistent with every checkpoint seen before, no
two checkpoints of one size may exist, and a full audit of the database must pass.
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

from harness.ledger import TOKEN, audit, ledger_subprocess, make_keys, wait_ready
from harness.waiting import wait_for
from modeltrust.chain.client import LedgerClient, LedgerClientError
from modeltrust.chain.storage import open_store
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


def test_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path, ledger_db: str) -> None:
    keys = make_keys(tmp_path / "k")
    db = ledger_db
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
        main, ["ledger", "verify", "--db", db, "--verifier-key", keys.verifier_key, "--quiet"]
    )
    assert result.exit_code == 0, result.output


def _load(
    url: str, vkey: str, stop: threading.Event, acked: dict[int, bytes], lock: threading.Lock
) -> list[int]:
    """Appends to ``url`` until ``stop``; returns the entry numbers left in doubt."""
    pending: list[int] = []
    _writer(url, vkey, 0, stop, acked, pending, lock)
    return pending


def test_a_paused_writer_is_fenced_after_a_standby_takes_over(
    tmp_path: Path, postgres_url: str
) -> None:
    keys = make_keys(tmp_path / "k")
    lease = ("--writer-lease", "2")
    acked: dict[int, bytes] = {}
    lock = threading.Lock()
    trust = FileTrustStateStore(tmp_path / "trust.json")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # B starts once A serves: a standby, waiting for the writer lock, not serving.
    with (
        ledger_subprocess(keys, postgres_url, tmp_path / "a", *lease) as (a, url_a),
        ledger_subprocess(keys, postgres_url, tmp_path / "b", *lease, wait=False) as (b, url_b),
    ):
        stop = threading.Event()
        doubts: list[list[int]] = []
        load = threading.Thread(
            target=lambda: doubts.append(_load(url_a, keys.verifier_key, stop, acked, lock))
        )
        load.start()
        wait_for("A to acknowledge entries", lambda: len(acked) >= 50, timeout=60)
        b_log = next((tmp_path / "b").glob("ledger-*.log"))
        wait_for("B to wait as a standby", lambda: "standby: waiting" in b_log.read_text())
        assert b.poll() is None
        with LedgerClient(url_a, verifier_key=keys.verifier_key, trust_store=trust) as c:
            seen_from_a = c.checkpoint().size
        a.send_signal(signal.SIGSTOP)  # mid-load: A's requests hang, some in doubt
        paused_at = time.monotonic()
        wait_ready(url_b, b, timeout=60)
        failover = time.monotonic() - paused_at
        stop.set()
        load.join(timeout=60)
        # B continued A's log: consistent with what A showed, and it takes appends,
        # including A's in-doubt entries, retried under their idempotency keys.
        in_doubt = [n for d in doubts for n in d]
        with LedgerClient(
            url_b, verifier_key=keys.verifier_key, token=TOKEN, trust_store=trust
        ) as c:
            assert c.checkpoint().size >= seen_from_a
            for n in [*in_doubt, *range(10**6, 10**6 + 20)]:
                receipt = c.append(audit(n, key=f"w{n}"))
                with lock:
                    assert acked.setdefault(receipt.index, receipt.leaf_hash) == (receipt.leaf_hash)
        # A resumes: it must never commit again, and it stops by itself.
        a.send_signal(signal.SIGCONT)
        with (
            pytest.raises(LedgerClientError),
            LedgerClient(url_a, verifier_key=keys.verifier_key, token=TOKEN, timeout=10) as c,
        ):
            c.append(audit(2 * 10**6, key="after-resume"))
        assert a.wait(timeout=30) == 1
        a_log = next((tmp_path / "a").glob("ledger-*.log")).read_text()
        assert "writer lock" in a_log
        # Every acknowledged entry is in B's log at the index it was given.
        with LedgerClient(url_b, verifier_key=keys.verifier_key, trust_store=trust) as c:
            for index, lh in sorted(acked.items()):
                assert c.entry(index).leaf_hash == lh, f"acknowledged entry {index} changed"
    assert failover < 20, f"failover took {failover:.1f} s with a 2 s lease"
    # Nothing forked: one checkpoint per size, and the whole log verifies from genesis.
    reader = open_store(postgres_url, writer=False)
    blocks = reader.get_blocks(0, 10**6)
    reader.close()
    sizes = [blk.end_index for blk in blocks]
    assert sizes == sorted(set(sizes)), "two blocks share a size, or sizes went backwards"
    result = CliRunner().invoke(
        main,
        ["ledger", "verify", "--db", postgres_url, "--verifier-key", keys.verifier_key, "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert f"OK: {sizes[-1]} entries in {len(blocks)} blocks" in result.output
