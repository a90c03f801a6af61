"""Ledger benchmarks (docs/architecture.md, performance goals): prints a markdown table
with targets and anchors, and the appends on SQLite and on PostgreSQL side by side.

    python bench/ledger_bench.py            # full run (1M-entry store; a few minutes)
    python bench/ledger_bench.py --quick    # CI smoke: small sizes, same code paths

The server is the real `modeltrust ledger serve` process (SQLite, synchronous=FULL,
one fsync per block); load comes from this process over loopback with aiohttp.
The same append workloads then run against `ledger serve --db postgresql://...` on a
PostgreSQL server started for the run (tests/harness/postgres.py: Debian's binaries,
default settings, fsync and synchronous_commit on, loopback TCP), right after the SQLite
ones, so both see the same machine.
The 1M-entry store for proof serving and `ledger verify` is built directly through
the storage interface (same blocks, nodes and signed checkpoints the sequencer writes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from modeltrust.chain.blocks import GENESIS_PREV_HASH, BlockHeader, header_hash
from modeltrust.chain.canonical import canonical_json
from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint, witness_cosignatures
from modeltrust.chain.entries import AuditEntry, entry_to_json
from modeltrust.chain.ledger_verify import verify_database
from modeltrust.chain.lookup import lookup_keys
from modeltrust.chain.merkle import CompactRange, empty_root, leaf_hash
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner, NoteVerifier
from modeltrust.chain.sequencer import block_time
from modeltrust.chain.storage import (
    AppendBatch,
    LedgerIdentity,
    NewEntry,
    StoredBlock,
    open_store,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.postgres import running_postgres  # noqa: E402  (the tests' PostgreSQL server)

ORIGIN = "bench.local/ledger"
TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback server


@dataclass
class Row:
    name: str
    measured: str
    target: str
    verdict: str


def audit_entry(i: int, run: str) -> AuditEntry:
    return AuditEntry(
        action="rollout",
        namespace="bench",
        name=f"model-{i % 1000}",
        uid=f"uid-{i % 1000}",
        generation=i,
        digest="sha256:" + f"{i:064x}",
        decision="allowed",
        reasons=("signature verified", "inclusion proven"),
        actor="system:serviceaccount:modeltrust:operator",
        time="2025-01-31T12:00:00Z",
        idempotency_key=f"{run}-{i}",
    )


def body_of(entries: list[AuditEntry]) -> bytes:
    docs = [entry_to_json(e) for e in entries]
    return orjson.dumps(docs[0] if len(docs) == 1 else docs)


# -- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1):  # noqa: S310
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready")


class Server:
    """`modeltrust ledger serve` on ``db``: a SQLite file or a postgresql:// URL."""

    def __init__(
        self, workdir: Path, db: str | Path, signer: NoteSigner, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.workdir, self.db, self.signer = workdir, db, signer
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> Server:
        pubs = self.workdir / "publishers"
        pubs.mkdir(exist_ok=True)
        pem = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        (pubs / "p.pem").write_bytes(pem)
        (self.workdir / "tokens").write_text(TOKEN + "\n")
        key = self.workdir / "ckpt.key"
        key.write_text(self.signer.signer_key())
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable, "-c", "from modeltrust.cli.main import main; main()",
            "ledger", "serve", "--db", str(self.db), "--key", str(key), "--origin", ORIGIN,
            "--publishers", str(pubs), "--static-tokens", str(self.workdir / "tokens"),
            "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING", *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd)
        wait_ready(self.url, "ledger")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class Witnesses:
    """`modeltrust ledger witness` processes: their ports are chosen first (the ledger names
    them in --witness), they start once the ledger listens (they copy it)."""

    def __init__(self, workdir: Path, count: int = 2) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.signers = [
            NoteSigner.generate(f"witness-{i}.bench.local", alg=ALG_COSIGNATURE_V1)
            for i in range(count)
        ]
        self.ports = [free_port() for _ in self.signers]
        self.procs: list[subprocess.Popen[bytes]] = []

    def ledger_args(self) -> tuple[str, ...]:
        args: list[str] = []
        for signer, port in zip(self.signers, self.ports, strict=True):
            args += ["--witness", f"http://127.0.0.1:{port}", signer.verifier_key()]
        return tuple(args)

    @property
    def verifiers(self) -> list[NoteVerifier]:
        return [s.verifier() for s in self.signers]

    def start(self, log_url: str, log_key: str) -> None:
        for signer, port in zip(self.signers, self.ports, strict=True):
            key = self.workdir / f"{signer.name}.key"
            key.write_text(signer.signer_key())
            cmd = [
                sys.executable, "-c", "from modeltrust.cli.main import main; main()",
                "ledger", "witness", "--state", str(self.workdir / signer.name),
                "--key", str(key), "--log-url", log_url, "--log-key", log_key,
                "--listen", f"127.0.0.1:{port}", "--log-level", "WARNING",
            ]  # fmt: skip
            self.procs.append(subprocess.Popen(cmd))
        for port in self.ports:
            wait_ready(f"http://127.0.0.1:{port}", "witness")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)


def cosigned_by_all(url: str, verifiers: list[NoteVerifier]) -> bool:
    """Whether the ledger serves its newest signed checkpoint cosigned by every witness."""
    with urllib.request.urlopen(url + "/v1/checkpoint", timeout=5) as r:  # noqa: S310
        note = r.read().decode()
    with urllib.request.urlopen(url + "/readyz", timeout=5) as r:  # noqa: S310
        signed = orjson.loads(r.read())["tree_size"]
    cosigned = len(witness_cosignatures(note, verifiers)) == len(verifiers)
    return cosigned and Checkpoint.from_text(note.split("\n\n")[0] + "\n").size == signed


def wait_cosigned(url: str, verifiers: list[NoteVerifier], timeout: float = 300) -> None:
    """Until the witnesses caught up: each measurement starts from a witnessed ledger."""
    deadline = time.monotonic() + timeout
    while not cosigned_by_all(url, verifiers):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the witnesses did not catch up within {timeout:.0f} s")
        time.sleep(0.2)


# -- append benchmarks ---------------------------------------------------------------------------


async def batched_appends(url: str, total: int, batch: int, clients: int) -> float:
    bodies = [
        body_of([audit_entry(i, "b") for i in range(s, s + batch)]) for s in range(0, total, batch)
    ]
    queue = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url + "/v1/entries", data=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 201, r.status

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return total / (time.perf_counter() - start)


async def single_appends(url: str, total: int, clients: int, run: str) -> float:
    bodies = [body_of([audit_entry(i, run)]) for i in range(total)]
    queue = list(reversed(bodies))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url + "/v1/entries", data=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 201, r.status

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return total / (time.perf_counter() - start)


async def paced_latency(url: str, rate: int, seconds: float) -> list[float]:
    """Open loop: one single-entry append every 1/rate s; latency until the signed receipt."""
    total = int(rate * seconds)
    bodies = [body_of([audit_entry(i, f"lat{rate}")]) for i in range(total)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            async with session.post(url + "/v1/entries", data=body, headers=headers) as r:
                doc = orjson.loads(await r.read())
                assert r.status == 201, r.status
                assert doc["checkpoint"]
            latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return latencies


async def cosigned_latency(
    url: str, rate: int, seconds: float, witnesses: list[NoteVerifier]
) -> tuple[list[float], int]:
    """Open loop like paced_latency, with witnesses: the time until the receipt, whose
    checkpoint must carry every witness's cosignature to count. Returns the latencies of
    the cosigned receipts and how many receipts lacked a cosignature."""
    total = int(rate * seconds)
    bodies = [body_of([audit_entry(i, f"cos{rate}")]) for i in range(total)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    latencies: list[float] = []
    missing = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(body: bytes) -> None:
            nonlocal missing
            t0 = time.perf_counter()
            async with session.post(url + "/v1/entries", data=body, headers=headers) as r:
                doc = orjson.loads(await r.read())
                assert r.status == 201, r.status
            done = time.perf_counter()
            if len(witness_cosignatures(doc["checkpoint"], witnesses)) == len(witnesses):
                latencies.append(done - t0)
            else:
                missing += 1

        start = time.perf_counter()
        tasks = []
        for i, body in enumerate(bodies):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    return latencies, missing


def witnessed_rows(
    tmp: Path, signer: NoteSigner, n_batched: int, latency_s: float
) -> list[tuple[str, str]]:
    """One writer and two witnesses on this machine: appends and their cosigned receipts."""
    witnesses = Witnesses(tmp / "witnesses")
    rows: list[tuple[str, str]] = []
    rates = (100, 300, 1000)
    # The same open-loop load without witnesses, side by side (same run, same machine load).
    with Server(tmp, tmp / "unwitnessed.db", signer) as server:
        for per_second in rates:
            lat = asyncio.run(paced_latency(server.url, per_second, latency_s))
            p50, p99 = p(lat, 0.5) * 1000, p(lat, 0.99) * 1000
            rows.append(
                (f"append -> signed checkpoint, no witnesses, at {per_second:,} appends/s",
                 f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
            )  # fmt: skip
    with Server(tmp, tmp / "witnessed.db", signer, witnesses.ledger_args()) as server:
        try:
            witnesses.start(server.url, signer.verifier_key())
            for per_second in rates:
                wait_cosigned(server.url, witnesses.verifiers)
                lat, missing = asyncio.run(
                    cosigned_latency(server.url, per_second, latency_s, witnesses.verifiers)
                )
                if not lat:
                    raise RuntimeError("no receipt carried both witnesses' cosignatures")
                p50, p99 = p(lat, 0.5) * 1000, p(lat, 0.99) * 1000
                total = len(lat) + missing
                rows.append(
                    (f"append -> checkpoint cosigned by 2 witnesses at {per_second:,} appends/s",
                     f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lat)}/{total} receipts cosigned "
                     "by both)")
                )  # fmt: skip
            wait_cosigned(server.url, witnesses.verifiers)
            rate = asyncio.run(batched_appends(server.url, n_batched, batch=1000, clients=4))
            started = time.perf_counter()
            wait_cosigned(server.url, witnesses.verifiers)
            rows.append(
                ("sustained appends with 2 witnesses, batched (1000/request, 4 clients)",
                 f"{rate:,.0f} entries/s (witnesses caught up {time.perf_counter() - started:.1f}"
                 " s after the last append)")
            )  # fmt: skip
        finally:
            witnesses.stop()
    return rows


# -- a big store, built through the storage interface --------------------------------------------


def build_store(db: str | Path, signer: NoteSigner, size: int, block: int = 8192) -> float:
    """Write ``size`` audit entries in blocks, exactly as the sequencer would; returns seconds."""
    template_entry = audit_entry(0, "big")
    # Canonical JSON of every entry differs only in a few values; render them from a
    # template (checked against canonical_json below) so building 1M entries is quick.
    marker = 987654321987
    probe = canonical_json(
        {**entry_to_json(template_entry), "generation": marker, "digest": f"sha256:{marker:064x}",
         "idempotency_key": f"big-{marker}", "name": "model-M", "uid": "uid-M"}
    ).decode()  # fmt: skip
    fmt = (
        probe.replace("{", "{{")
        .replace("}", "}}")
        .replace(f"{marker:064x}", "{i:064x}")
        .replace(f"big-{marker}", "big-{i}")
        .replace(str(marker), "{i}")
        .replace("model-M", "model-{m}")
        .replace("uid-M", "uid-{m}")
    )
    for i in (0, 1, 12345):
        want = canonical_json(entry_to_json(audit_entry(i, "big")))
        assert fmt.format(i=i, m=i % 1000).encode() == want, "template drifted from canonical JSON"
    store = open_store(db, writer=True)
    start = time.perf_counter()
    store.initialize(
        LedgerIdentity(
            ORIGIN,
            signer.verifier_key(),
            sign_checkpoint(Checkpoint(ORIGIN, 0, empty_root()), signer),
        )
    )
    rng = CompactRange.empty()
    prev, height = GENESIS_PREV_HASH, 0
    for first in range(0, size, block):
        entries, nodes = [], []
        for i in range(first, min(first + block, size)):
            m = i % 1000
            data = fmt.format(i=i, m=m).encode()
            lh = leaf_hash(data)
            keys = (
                ("audit.object", f"bench/model-{m}"),
                ("audit.uid", f"uid-{m}"),
                ("audit.idempotency", f"big-{i}"),
            )
            entries.append(NewEntry(i, lh, data, keys))
            nodes.extend(rng.append(lh))
        root = rng.root()
        header = BlockHeader(height, prev, first, rng.size, rng.size, root, block_time())
        note = sign_checkpoint(Checkpoint(ORIGIN, rng.size, root), signer)
        hh = header_hash(header)
        store.append(
            AppendBatch(
                entries, nodes, StoredBlock(height, header.header_bytes(), hh, note, rng.size)
            )
        )
        prev, height = hh, height + 1
    store.close()
    assert lookup_keys(audit_entry(5, "big"))[1] == ("audit.uid", "uid-5")
    return time.perf_counter() - start


def proof_latencies(url: str, size: int, count: int, kind: str) -> list[float]:
    import http.client

    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    rnd = random.Random(1)
    out = []
    for _ in range(count):
        if kind == "inclusion":
            path = f"/v1/proofs/inclusion?index={rnd.randrange(size)}&size={size}"
        else:
            a = rnd.randrange(1, size)
            path = f"/v1/proofs/consistency?from={a}&to={rnd.randrange(a, size + 1)}"
        t0 = time.perf_counter()
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t0)
        assert resp.status == 200
    conn.close()
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def verdict(ok: bool) -> str:
    return "meets" if ok else "BELOW target"


# -- main ------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes for a CI smoke run")
    ap.add_argument(
        "--witnesses-only", action="store_true", help="only the benchmarks with 2 witnesses"
    )
    args = ap.parse_args()
    quick = args.quick
    n_batched = 20_000 if quick else 200_000
    n_single = 3_000 if quick else 30_000
    latency_s = 2.0 if quick else 10.0
    n_big = 100_000 if quick else 1_000_000
    n_proofs = 1_000 if quick else 10_000
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows: list[Row] = []

    def add(name: str, measured: str, target: str = "-", ok: bool | None = None) -> None:
        rows.append(Row(name, measured, target, "-" if ok is None else verdict(ok)))

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    signer = NoteSigner.generate(ORIGIN)
    by_store: dict[str, Appends] = {}
    big_by_store: dict[str, BigStore] = {}
    postgres_version = ""
    try:
        for name, measured in witnessed_rows(tmp, signer, n_batched // 2, latency_s):
            add(name, measured)
        if args.witnesses_only:
            return print_table(rows, quick, load_before)
        with running_postgres() as pg:
            postgres_version = pg.server_version()
            # The same workloads on each store, one right after the other.
            with Server(tmp, tmp / "appends.db", signer) as server:
                by_store["SQLite"] = append_workloads(server.url, n_batched, n_single, latency_s)
            with Server(tmp, pg.create_database(), signer) as server:
                by_store["PostgreSQL"] = append_workloads(
                    server.url, n_batched, n_single, latency_s
                )
            big_by_store["SQLite"] = big_store(str(tmp / "big.db"), signer, n_big, n_proofs, tmp)
            big_by_store["PostgreSQL"] = big_store(
                pg.create_database(), signer, n_big, n_proofs, tmp
            )
        sqlite = by_store["SQLite"]
        add(
            "sustained appends, batched requests (1000/request, 4 clients)",
            f"{sqlite.batched:,.0f} entries/s",
            ">= 10,000/s",
            sqlite.batched >= 10_000,
        )
        add(
            "single-entry appends, 64 concurrent clients",
            f"{sqlite.single:,.0f} entries/s",
            ">= 3,000/s",
            sqlite.single >= 3_000,
        )
        add(
            "append -> signed checkpoint latency at 1,000 appends/s",
            f"p50 {sqlite.p50_ms:.1f} ms, p99 {sqlite.p99_ms:.1f} ms",
            "p99 <= 100 ms",
            sqlite.p99_ms <= 100,
        )
        big = big_by_store["SQLite"]
        add(f"build a {n_big:,}-entry store through storage", f"{big.build_s:.1f} s")
        for kind, lat in (("inclusion", big.inclusion), ("consistency", big.consistency)):
            p50, p99 = p(lat, 0.5) * 1000, p(lat, 0.99) * 1000
            add(
                f"{kind} proof at {n_big:,} entries (HTTP, keep-alive)",
                f"p50 {p50:.2f} ms, p99 {p99:.2f} ms",
                "p99 <= 2 ms",
                p99 <= 2,
            )
        add(
            f"`ledger verify` of {n_big:,} entries (hashes, nodes, headers, checkpoints)",
            f"{big.verify_rate:,.0f} entries/s",
            ">= 200,000/s",
            big.verify_rate >= 200_000,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    add("anchor: Trillian (MySQL)", "~400-500 appends/s", "reference")
    add("anchor: Tessera (POSIX)", "~10,000 appends/s, seconds to integrate", "reference")
    add("anchor: Rekor v2", "up to ~20 s until a checkpoint", "reference")
    print_table(rows, quick, load_before)
    print_by_store(by_store, big_by_store, postgres_version, n_big)


def print_table(rows: list[Row], quick: bool, load_before: tuple[float, float, float]) -> None:
    mode = "quick" if quick else "full"
    load_after = os.getloadavg()
    print(f"\nLedger benchmark ({mode}; {os.cpu_count()} CPUs, SQLite synchronous=FULL)")
    # The machine is shared: say how busy it was, the figures scale with the CPU we got.
    load_start, load_end = (", ".join(f"{a:.2f}" for a in la) for la in (load_before, load_after))
    print(f"load average (1, 5, 15 min) at start {load_start}; at end {load_end}\n")
    print("| benchmark | measured | target | verdict |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.measured} | {r.target} | {r.verdict} |")


@dataclass
class Appends:
    """One store's append figures: entries/s, and latency to the signed receipt."""

    batched: float
    single: float
    p50_ms: float
    p99_ms: float


def append_workloads(url: str, n_batched: int, n_single: int, latency_s: float) -> Appends:
    batched = asyncio.run(batched_appends(url, n_batched, batch=1000, clients=4))
    single = asyncio.run(single_appends(url, n_single, clients=64, run="s"))
    lat = asyncio.run(paced_latency(url, 1000, latency_s))
    return Appends(batched, single, p(lat, 0.5) * 1000, p(lat, 0.99) * 1000)


@dataclass
class BigStore:
    """A store of n_big entries built through storage: build time, proof latencies (s)
    from a server on it, and `ledger verify`'s rate (what a writer's start-up audit costs)."""

    build_s: float
    inclusion: list[float]
    consistency: list[float]
    verify_rate: float


def big_store(db: str, signer: NoteSigner, n_big: int, n_proofs: int, tmp: Path) -> BigStore:
    build_s = build_store(db, signer, n_big)
    with Server(tmp, db, signer) as server:
        inclusion = proof_latencies(server.url, n_big, n_proofs, "inclusion")
        consistency = proof_latencies(server.url, n_big, n_proofs, "consistency")
    start = time.perf_counter()
    report = verify_database(db, signer.verifier())
    return BigStore(
        build_s, inclusion, consistency, report.tree_size / (time.perf_counter() - start)
    )


def print_by_store(
    by_store: dict[str, Appends],
    big_by_store: dict[str, BigStore],
    postgres_version: str,
    n_big: int,
) -> None:
    sqlite, postgres = by_store["SQLite"], by_store["PostgreSQL"]
    big_sqlite, big_postgres = big_by_store["SQLite"], big_by_store["PostgreSQL"]
    print(
        f"\n### By store: SQLite (WAL, synchronous=FULL) vs PostgreSQL {postgres_version} "
        "(local server, default settings, fsync and synchronous_commit on)\n"
    )
    print(
        "Ratio: PostgreSQL's figure over SQLite's (entries/s: above 1 is faster; times: below).\n"
    )
    print("| workload | SQLite | PostgreSQL | PostgreSQL / SQLite |")
    print("|---|---:|---:|---:|")
    for name, a, b, unit in (
        ("batched appends (1000/request, 4 clients)", sqlite.batched, postgres.batched, "/s"),
        ("single-entry appends (64 clients)", sqlite.single, postgres.single, "/s"),
        ("append -> signed checkpoint at 1,000/s, p50", sqlite.p50_ms, postgres.p50_ms, " ms"),
        ("append -> signed checkpoint at 1,000/s, p99", sqlite.p99_ms, postgres.p99_ms, " ms"),
    ):
        shown = (f"{v:,.0f} entries/s" if unit == "/s" else f"{v:.1f} ms" for v in (a, b))
        print(f"| {name} | {' | '.join(shown)} | {b / a:.2f} |")
    print(
        f"| build a {n_big:,}-entry store through storage | {big_sqlite.build_s:.1f} s "
        f"| {big_postgres.build_s:.1f} s | {big_postgres.build_s / big_sqlite.build_s:.2f} |"
    )
    for kind in ("inclusion", "consistency"):
        a99 = p(getattr(big_sqlite, kind), 0.99) * 1000
        b99 = p(getattr(big_postgres, kind), 0.99) * 1000
        a50 = p(getattr(big_sqlite, kind), 0.5) * 1000
        b50 = p(getattr(big_postgres, kind), 0.5) * 1000
        print(
            f"| {kind} proof at {n_big:,} entries, p50 / p99 | {a50:.2f} / {a99:.2f} ms "
            f"| {b50:.2f} / {b99:.2f} ms | {b50 / a50:.2f} / {b99 / a99:.2f} |"
        )
    print(
        f"| `ledger verify` (= a writer's start-up audit) of {n_big:,} entries "
        f"| {big_sqlite.verify_rate:,.0f} entries/s | {big_postgres.verify_rate:,.0f} entries/s "
        f"| {big_postgres.verify_rate / big_sqlite.verify_rate:.2f} |"
    )


if __name__ == "__main__":
    main()
