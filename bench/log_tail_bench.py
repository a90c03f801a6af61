"""How long the operator takes to know every revocation: reading the whole log over HTTP.

    python bench/log_tail_bench.py            # 1,000,000-entry ledger
    python bench/log_tail_bench.py --quick    # 100,000 entries (CI smoke)
    python bench/log_tail_bench.py --size N

The operator starts with no revocation knowledge and reads every entry through the
range read (`modeltrust.chain.log_tail`: strict parse, canonical re-encoding, leaf hash,
compact range, root check against the verified checkpoint). Reference in the same run,
on the same server: `modeltrust ledger verify --url` (remote_verify), which reads the
same entries plus every block and checkpoint. Also measured: the per-decision cost once
the index is built (verify the latest checkpoint and read one new entry).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ledger_bench import (  # type: ignore[import-not-found,unused-ignore]
    ORIGIN,
    TOKEN,
    Server,
    audit_entry,
    build_store,
)
from modeltrust.chain.client import AsyncLedgerClient
from modeltrust.chain.merkle import CompactRange
from modeltrust.chain.note import NoteSigner, NoteVerifier
from modeltrust.chain.remote_verify import verify_remote


async def full_read(url: str, verifier_key: str) -> tuple[float, int]:
    async with AsyncLedgerClient(url, verifier_key=verifier_key, timeout=120) as c:
        vcp = await c.checkpoint()
        start = time.perf_counter()
        result = await c.tail(CompactRange.empty(), vcp)
        elapsed = time.perf_counter() - start
    assert result.compact_range.root() == vcp.checkpoint.root_hash
    return elapsed, result.size


async def catch_up(url: str, verifier_key: str, rounds: int) -> list[float]:
    """Per decision once the index exists: append one entry, then checkpoint + tail."""
    async with AsyncLedgerClient(url, verifier_key=verifier_key, token=TOKEN, timeout=120) as c:
        vcp = await c.checkpoint()
        state = (await c.tail(CompactRange.empty(), vcp)).compact_range
        times = []
        for i in range(rounds):
            await c.append(audit_entry(10_000_000 + i, "catch-up"))
            start = time.perf_counter()
            vcp = await c.checkpoint()
            state = (await c.tail(state, vcp)).compact_range
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 entries")
    ap.add_argument("--size", type=int, default=None)
    args = ap.parse_args()
    size = args.size or (100_000 if args.quick else 1_000_000)
    signer = NoteSigner.generate(ORIGIN)
    with tempfile.TemporaryDirectory(prefix="log-tail-bench-") as d:
        tmp = Path(d)
        build_store(tmp / "big.db", signer, size)
        with Server(tmp, tmp / "big.db", signer) as server:
            tail_s, read = asyncio.run(full_read(server.url, signer.verifier_key()))
            start = time.perf_counter()
            report = verify_remote(
                server.url, NoteVerifier.from_verifier_key(signer.verifier_key())
            )
            ref_s = time.perf_counter() - start
            assert report.tree_size == size
            times = asyncio.run(catch_up(server.url, signer.verifier_key(), 50))
    rate, ref_rate = read / tail_s, size / ref_s
    p50 = statistics.median(times) * 1000
    p99 = sorted(times)[int(len(times) * 0.99) - 1] * 1000
    print(f"| benchmark ({size:,} entries, audit entries of ~330 bytes) | measured |")
    print("|---|---|")
    print(f"| operator start: read the whole log, revocation index built | {tail_s:.1f} s, "
          f"{rate:,.0f} entries/s |")  # fmt: skip
    print(f"| reference: `ledger verify --url` on the same server | {ref_s:.1f} s, "
          f"{ref_rate:,.0f} entries/s |")  # fmt: skip
    print(f"| ratio operator read / ledger verify --url | {rate / ref_rate:.2f} |")
    print(f"| per decision afterwards: checkpoint + 1 new entry | p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms |")  # fmt: skip


if __name__ == "__main__":
    main()
