"""s3:// fetch benchmark: modeltrust's `fetch_artifact` from a real S3 store (versitygw
on 127.0.0.1, tests/harness/s3_server.py) against boto3 on its own, same object, same run.

    python bench/s3_fetch_bench.py           # 1 GiB object; memory at 64 MiB and 1 GiB
    python bench/s3_fetch_bench.py --quick   # smoke run: 256 MiB; memory at 16 and 256 MiB

Each contender runs in its own process (measuring its own time and VmHWM), alternating,
best of three, page cache warm:

1. ours: `fetch_artifact("s3://...")`: HEAD, one streaming GET through SHA-256 into a
   temporary file, fsync, rename (what the operator and the init container do);
2. boto3 streamed: `get_object` read in 4 MiB chunks, SHA-256, written, fsynced: the
   same work with no checks, so the ratio is our overhead on top of boto3;
3. boto3 `download_file` (s3transfer: parallel ranged GETs), then SHA-256 of the file:
   what a script would do without modeltrust, for reference;
4. `fetch_artifact` over loopback HTTP of the same file (the machine's fetch speed
   without S3 in the way), for reference.

Prints markdown tables with targets and a pass/miss column; a miss still exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.file_server import serve_files  # noqa: E402
from harness.s3_server import S3Server, s3_server  # noqa: E402
from hashing_bench import make_file  # noqa: E402

MIB = 1 << 20
BUCKET = "models"
TARGET_RATIO = 0.9  # our throughput / boto3 streamed's
TARGET_FLAT_MIB = 8.0  # peak RSS growth from the small to the large object

_CHILD = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from pathlib import Path
    args = json.load(sys.stdin)
    kind, dest = args["kind"], Path(args["dest"])

    def peak_kib():
        # VmHWM: this process's own peak RSS.
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    def boto3_client():
        import boto3
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=args["endpoint"], region_name="us-east-1",
            aws_access_key_id=args["access_key"], aws_secret_access_key=args["secret_key"],
            config=Config(s3={"addressing_style": "path"}))

    if kind == "ours" or kind == "http":
        from modeltrust.serving.credentials import SourceCredentials
        from modeltrust.serving.fetch import fetch_artifact
        from modeltrust.serving.sources import S3Options, SourceAccess
        credentials = SourceCredentials(
            source_name="bench", hosts=(args["host"],), s3_access_key=args["access_key"],
            s3_secret_key=args["secret_key"])
        access = SourceAccess(
            credentials=credentials if kind == "ours" else None,
            s3=S3Options(endpoint=args["endpoint"], region="us-east-1", addressing="path"))
    # Timed from here for every contender: importing boto3 and making a client count
    # (fetch_artifact imports modeltrust.serving.s3, and so boto3, only for s3:// URIs).
    start = time.perf_counter()
    if kind == "ours" or kind == "http":
        # As ArtifactChecker calls it: size cap, default chunking.
        fetch_artifact(args["uri"], args["digest"], dest, max_size=2 << 30, access=access)
    elif kind == "boto3_stream":
        client = boto3_client()
        body = client.get_object(Bucket=args["bucket"], Key=args["key"])["Body"]
        hasher = hashlib.sha256()
        with dest.open("wb") as f:
            while chunk := body.read(4 << 20):
                hasher.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        assert "sha256:" + hasher.hexdigest() == args["digest"], "digest differs"
    else:
        boto3_client().download_file(args["bucket"], args["key"], str(dest))
        hasher = hashlib.sha256()
        with dest.open("rb") as f:
            while chunk := f.read(4 << 20):
                hasher.update(chunk)
            os.fsync(f.fileno())
        assert "sha256:" + hasher.hexdigest() == args["digest"], "digest differs"
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_kib": peak_kib()}))
    """
)


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mib: float


def run_child(kind: str, s3: S3Server, uri: str, key: str, digest: str, work: Path) -> Run:
    dest = work / "fetched" / f"{kind}.bin"
    dest.parent.mkdir(exist_ok=True)
    request = {
        "kind": kind,
        "uri": uri,
        "bucket": BUCKET,
        "key": key,
        "digest": digest,
        "dest": str(dest),
        "endpoint": s3.url,
        "host": f"{s3.host}:{s3.port}",
        "access_key": s3.access_key,
        "secret_key": s3.secret_key,  # on stdin, not argv: /proc/PID/cmdline is public
    }
    try:
        result = subprocess.run(
            [sys.executable, "-c", _CHILD],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{kind} child failed: {result.stderr.strip()[-2000:]}")
        answer = json.loads(result.stdout)
        return Run(answer["seconds"], answer["peak_kib"] / 1024)
    finally:
        if dest.exists():
            dest.chmod(0o644)
            dest.unlink()


NAMES = {
    "ours": "ours: `fetch_artifact` s3:// (HEAD + streaming GET + SHA-256 + write + fsync)",
    "boto3_stream": "boto3 `get_object` streamed, 4 MiB reads + SHA-256 + write + fsync",
    "boto3_download_file": "boto3 `download_file` (parallel ranged GETs), then SHA-256",
    "http": "`fetch_artifact` over loopback HTTP, same file (reference)",
}


def tables(work: Path, sizes: list[int], rounds: int) -> list[str]:
    small, big = min(sizes), max(sizes)
    runs: dict[str, list[float]] = {kind: [] for kind in NAMES}
    peaks: dict[int, float] = {}
    with s3_server(work / "s3") as s3:
        s3.create_bucket(BUCKET)
        digests: dict[int, str] = {}
        for size in sizes:
            source = work / f"source-{size // MIB}.bin"
            digests[size] = make_file(source, size)
            s3.put_object(BUCKET, f"{size // MIB}.bin", source)
            source.unlink()
        # versitygw's posix backend keeps each object as a file: serve the same bytes by HTTP.
        with serve_files(s3.root / "data" / BUCKET) as http_base:
            uris = {
                "ours": f"s3://{BUCKET}/{big // MIB}.bin",
                "http": f"{http_base}/{big // MIB}.bin",
            }
            key = f"{big // MIB}.bin"
            for _ in range(rounds):  # alternate, so all see the same machine state
                for kind in NAMES:
                    uri = uris.get(kind, "")
                    runs[kind].append(run_child(kind, s3, uri, key, digests[big], work).seconds)
            for size in sizes:
                uri = f"s3://{BUCKET}/{size // MIB}.bin"
                peaks[size] = run_child(
                    "ours", s3, uri, f"{size // MIB}.bin", digests[size], work
                ).peak_mib

    big_mib = big / MIB
    label = f"{big_mib / 1024:g} GiB" if big >= 1 << 30 else f"{big_mib:g} MiB"
    reference = min(runs["boto3_stream"])
    lines = [
        f"### s3:// fetch, {label} object (versitygw on 127.0.0.1; best of {rounds})",
        "",
        "| what | seconds | MiB/s | vs boto3 streamed | target | result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for kind, name in NAMES.items():
        best = min(runs[kind])
        ratio = reference / best  # throughput ratio: this / boto3 streamed
        target, result = "-", "-"
        if kind == "ours":
            target = f">= {TARGET_RATIO:g}x"
            result = "pass" if ratio >= TARGET_RATIO else "**miss**"
        lines.append(
            f"| {name} | {best:.2f} | {big_mib / best:,.0f} | {ratio:.2f}x | {target} | {result} |"
        )
    growth = peaks[big] - peaks[small]
    lines += [
        "",
        "### Peak RSS of our s3:// fetch by object size (VmHWM)",
        "",
        f"| what | {small // MIB} MiB | {big // MIB} MiB | growth | target | result |",
        "|---|---:|---:|---:|---:|---|",
        f"| `fetch_artifact` s3:// (4 MiB buffer) | {peaks[small]:.0f} MiB "
        f"| {peaks[big]:.0f} MiB | {growth:+.1f} MiB | <= {TARGET_FLAT_MIB:g} MiB "
        f"| {'pass' if growth <= TARGET_FLAT_MIB else '**miss**'} |",
    ]
    return lines


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup in main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="256 MiB object, fewer rounds")
    parser.add_argument("--rounds", type=int, help="timed rounds per measurement (default 3)")
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    sizes = [16 * MIB, 256 * MIB] if args.quick else [64 * MIB, 1 << 30]
    rounds = args.rounds or (2 if args.quick else 3)
    import boto3

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## s3:// fetch ({when}; {os.cpu_count()} cores, {platform.machine()}; "
        f"Python {platform.python_version()}; boto3 {boto3.__version__})",
        "",
    ]
    work = Path(tempfile.mkdtemp(prefix="mt-s3-bench-"))
    try:
        lines += tables(work, sizes, rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.quick:
        lines += ["", "(--quick: smaller objects; run without --quick for the figures in docs.)"]
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
