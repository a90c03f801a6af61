"""Writer failover under load, shared by the failover tests and bench/ledger_failover_bench.py.

``Load`` appends audit entries from a thread to whichever ledger process answers (the
writer, then after failover the standby), remembering every acknowledged entry (index,
leaf hash) and every checkpoint a receipt carried; ``check_after_failover`` then proves
that each acknowledged entry is in the final log at its index and that every checkpoint
any client saw is consistent with the final one (consistency proofs, through the client).
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import threading
import time
from pathlib import Path

from harness.ledger import TOKEN, audit
from modeltrust.chain.client import LedgerClient, LedgerClientError
from modeltrust.chain.client_flows import VerifiedCheckpoint
from modeltrust.chain.storage import open_store
from modeltrust.chain.trust_state import MemoryTrustStateStore, TrustedCheckpoint

_NUMBERS = itertools.count(10**7)  # entry numbers unique across Loads in one process


class Load:
    """Appends from ``threads`` threads until ``stop()``; clients move on to the next URL
    when one stops answering. Entries in doubt are retried under their idempotency key."""

    def __init__(self, urls: list[str], verifier_key: str, threads: int = 2) -> None:
        self.urls = urls
        self.verifier_key = verifier_key
        self.acked: dict[int, bytes] = {}
        self.seen: dict[int, VerifiedCheckpoint] = {}  # size -> first checkpoint seen of it
        self.failed_requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        # Called with each receipt's checkpoint size as acknowledged (the benchmark's clock).
        self.on_ack: list[tuple[float, int, str]] = []  # (monotonic time, size, url)

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self) -> None:
        in_doubt: list[int] = []
        which = 0
        while not self._stop.is_set():
            url = self.urls[which % len(self.urls)]
            try:
                with LedgerClient(url, verifier_key=self.verifier_key, token=TOKEN, timeout=5) as c:
                    while not self._stop.is_set():
                        n = in_doubt.pop() if in_doubt else next(_NUMBERS)
                        try:
                            receipt = c.append(audit(n, key=f"load-{n}"))
                        except LedgerClientError:
                            in_doubt.append(n)
                            raise
                        cp = receipt.checkpoint
                        with self._lock:
                            known = self.acked.setdefault(receipt.index, receipt.leaf_hash)
                            assert known == receipt.leaf_hash, f"index {receipt.index} reused"
                            first = self.seen.setdefault(cp.size, cp)
                            assert first.checkpoint.root_hash == cp.checkpoint.root_hash, (
                                f"two checkpoints of size {cp.size} with different roots"
                            )
                            self.on_ack.append((time.monotonic(), cp.size, url))
            except LedgerClientError:
                with self._lock:
                    self.failed_requests += 1
                which += 1
                time.sleep(0.05)


def check_after_failover(
    url: str, verifier_key: str, load: Load, *, db: str | None = None, sample: int = 0
) -> int:
    """Every acknowledged entry is at its index on ``url`` (read through the client with
    its inclusion proof; or, given ``db``, read from the store in one pass); every
    checkpoint the load saw (or ``sample`` of them, the first and last included) is proven
    consistent with ``url``'s current one. Returns that checkpoint's size."""
    with LedgerClient(url, verifier_key=verifier_key) as c:
        final = c.checkpoint()
        if db is None:
            for index, lh in sorted(load.acked.items()):
                found = c.entry(index).leaf_hash
                assert found == lh, f"acknowledged entry {index} changed or vanished"
    if db is not None:
        reader = open_store(db, writer=False)
        try:
            stored = {e.index: e.leaf_hash for e in reader.get_entries(0, final.size)}
        finally:
            reader.close()
        for index, lh in load.acked.items():
            assert stored.get(index) == lh, f"acknowledged entry {index} changed or vanished"
    sizes = sorted(load.seen)
    if sample and len(sizes) > sample:
        picked = random.Random(0).sample(sizes[1:-1], sample - 2)
        sizes = sorted({sizes[0], sizes[-1], *picked})
    for size in sizes:
        seen = load.seen[size]
        cp = seen.checkpoint
        trusted = TrustedCheckpoint(cp.origin, cp.size, cp.root_hash, seen.note)
        with LedgerClient(
            url, verifier_key=verifier_key, trust_store=MemoryTrustStateStore(trusted)
        ) as c:
            # Raises LedgerForkError unless the final log extends what this client saw.
            assert c.checkpoint().size >= size
    return final.size


def block_sizes(db: str | Path) -> list[int]:
    """The tree size at the end of each stored block, in height order."""
    reader = open_store(db, writer=False)
    try:
        return [b.end_index for b in reader.get_blocks(0, 10**9)]
    finally:
        reader.close()


def lease_holder(kubeconfig: Path, namespace: str, name: str) -> str | None:
    """The Lease's holderIdentity, read with kubectl (None: no Lease, or nobody holds it)."""
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, "get", "lease", name,
         "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return None
    holder = json.loads(result.stdout).get("spec", {}).get("holderIdentity")
    return holder if isinstance(holder, str) and holder else None
