"""Artifact verification benchmarks (docs/architecture.md, performance goals), each
against a reference measured in the same run on the same file.

    python bench/hashing_bench.py            # 1 GiB throughput; memory at 64 MiB, 256 MiB, 1 GiB
    python bench/hashing_bench.py --quick    # smoke run: 256 MiB; memory at 16, 64, 256 MiB

1. Throughput: our streaming SHA-256 (`modeltrust.chain.digest.sha256_file`) and the
   operator's fetch path (`modeltrust.serving.fetch.fetch_artifact` over loopback HTTP:
   download, hash, write, fsync, rename, as ArtifactChecker calls it) against coreutils
   `sha256sum` on the same file. Each runs in its own process, alternating with
   `sha256sum`, best of three each, page cache warm for all of them.
2. Memory: peak RSS (VmHWM of the child process) of both at three file sizes; streaming
   means it does not grow with the file. A deliberately non-streaming
   `hashlib.sha256(path.read_bytes())` is measured the same way to show the method would
   see growth if there were any.
3. OMS bundles: verifying a model-signing bundle for one file, ours (hash the file with
   sha256_file, then `verify_registration` of the `oms-bundle` registration, which checks
   the DSSE signature and the in-toto statement against that digest) against the
   model-signing package's own `verifying.Config().verify` (which hashes the file too),
   same bundle, same file, same key.

Prints markdown tables with targets and a pass/miss column; a miss still exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.file_server import serve_files  # noqa: E402
from harness.sized_models import sized_mlp  # noqa: E402

MIB = 1 << 20
TARGET_RATIO = 0.9  # our throughput / sha256sum's
TARGET_FLAT_MIB = 8.0  # peak RSS growth from the smallest to the largest file
# Both sides hash the file with hashlib SHA-256 in 1 MiB reads and then check one ECDSA
# signature, so parity is the honest goal; within 10% allows for a shared machine's noise.
TARGET_OMS_RATIO = 0.9


def make_file(path: Path, size: int) -> str:
    """`size` bytes that do not compress or repeat per MiB; returns the sha256: digest."""
    block = bytearray(os.urandom(MIB))
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(size // MIB):
            block[:8] = i.to_bytes(8, "little")
            f.write(block)
            hasher.update(block)
    return "sha256:" + hasher.hexdigest()


# --- child processes: each measures itself (time and VmHWM) ------------------------------------

_PEAK = textwrap.dedent(
    """
    def peak_kib():
        # VmHWM: this process's own peak RSS (ru_maxrss of children would mix in others).
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    """
)

CHILDREN = {
    "sha256_file": _PEAK
    + textwrap.dedent(
        """
        import sys, time
        from modeltrust.chain.digest import sha256_file
        start = time.perf_counter()
        digest, size = sha256_file(sys.argv[1])
        seconds = time.perf_counter() - start
        assert "sha256:" + digest.hex() == sys.argv[2], "digest differs"
        print(seconds, peak_kib())
        """
    ),
    "fetch": _PEAK
    + textwrap.dedent(
        """
        import sys, time
        from modeltrust.serving.fetch import fetch_artifact
        start = time.perf_counter()
        # As ArtifactChecker calls it (operator/artifact.py): size cap, default chunking.
        fetch_artifact(sys.argv[1], sys.argv[2], sys.argv[3], max_size=2 << 30, timeout=60)
        seconds = time.perf_counter() - start
        print(seconds, peak_kib())
        """
    ),
    "read_bytes": _PEAK
    + textwrap.dedent(
        """
        import hashlib, pathlib, sys, time
        start = time.perf_counter()
        digest = hashlib.sha256(pathlib.Path(sys.argv[1]).read_bytes()).hexdigest()
        seconds = time.perf_counter() - start
        assert "sha256:" + digest == sys.argv[2], "digest differs"
        print(seconds, peak_kib())
        """
    ),
}


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mib: float


def run_child(kind: str, *args: str) -> Run:
    result = subprocess.run(
        [sys.executable, "-c", CHILDREN[kind], *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {result.stderr.strip()[-2000:]}")
    seconds, peak_kib = result.stdout.split()
    return Run(float(seconds), int(peak_kib) / 1024)


def sha256sum_seconds(path: Path, digest: str) -> float:
    start = time.perf_counter()
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    if "sha256:" + out.stdout.split()[0] != digest:
        raise RuntimeError("sha256sum disagrees with the digest written")
    return seconds


def fetch_once(base_url: str, name: str, digest: str, work: Path) -> Run:
    dest = work / "fetched" / name
    try:
        return run_child("fetch", f"{base_url}/{name}", digest, str(dest))
    finally:
        if dest.exists():
            dest.chmod(0o644)
            dest.unlink()


# --- 1 and 2: throughput and memory ------------------------------------------------------------


def hashing_tables(work: Path, sizes: list[int], rounds: int) -> list[str]:
    served = work / "served"
    served.mkdir()
    files = {size: served / f"artifact-{size // MIB}MiB.bin" for size in sizes}
    digests = {size: make_file(path, size) for size, path in files.items()}
    big = max(sizes)
    big_mib = big / MIB
    runs: dict[str, list[float]] = {"sha256sum": [], "sha256_file": [], "fetch": []}
    peaks: dict[str, dict[int, float]] = {"sha256_file": {}, "fetch": {}, "read_bytes": {}}
    with serve_files(served) as base_url:
        for size in sizes:  # warm the page cache for every file before timing anything
            sha256sum_seconds(files[size], digests[size])
        for _ in range(rounds):  # alternate, so all three see the same machine state
            runs["sha256sum"].append(sha256sum_seconds(files[big], digests[big]))
            ours = run_child("sha256_file", str(files[big]), digests[big])
            runs["sha256_file"].append(ours.seconds)
            fetched = fetch_once(base_url, files[big].name, digests[big], work)
            runs["fetch"].append(fetched.seconds)
        for size in sizes:
            peaks["sha256_file"][size] = run_child(
                "sha256_file", str(files[size]), digests[size]
            ).peak_mib
            peaks["fetch"][size] = fetch_once(
                base_url, files[size].name, digests[size], work
            ).peak_mib
            peaks["read_bytes"][size] = run_child(
                "read_bytes", str(files[size]), digests[size]
            ).peak_mib
    for path in files.values():
        path.unlink()

    reference = min(runs["sha256sum"])
    label = f"{big_mib / 1024:g} GiB" if big >= 1 << 30 else f"{big_mib:g} MiB"
    lines = [
        f"### SHA-256 throughput, {label} file (best of {rounds}, page cache warm)",
        "",
        "| what | seconds | MiB/s | vs `sha256sum` | target | result |",
        "|---|---:|---:|---:|---:|---|",
        f"| `sha256sum` (coreutils, reference) | {reference:.2f} | {big_mib / reference:,.0f} "
        "| 1.00x | - | - |",
    ]
    names = {
        "sha256_file": "`sha256_file` (chain.digest, streaming, 1 MiB buffer)",
        "fetch": "operator fetch path: `fetch_artifact` over loopback HTTP "
        "(download + hash + write + fsync)",
    }
    for kind, name in names.items():
        best = min(runs[kind])
        ratio = reference / best  # throughput ratio: ours / sha256sum
        lines.append(
            f"| {name} | {best:.2f} | {big_mib / best:,.0f} | {ratio:.2f}x "
            f"| >= {TARGET_RATIO:g}x | {'pass' if ratio >= TARGET_RATIO else '**miss**'} |"
        )
    size_cols = " | ".join(f"{s // MIB} MiB" for s in sizes)
    lines += [
        "",
        "### Peak RSS of the hashing process by file size (VmHWM)",
        "",
        f"| what | {size_cols} | growth | target | result |",
        "|---|" + "---:|" * len(sizes) + "---:|---:|---|",
    ]
    rows = {
        "sha256_file": names["sha256_file"],
        "fetch": "operator fetch path (`fetch_artifact`, 4 MiB buffer)",
        "read_bytes": "control: `hashlib.sha256(path.read_bytes())` (not streaming)",
    }
    for kind, name in rows.items():
        by_size = peaks[kind]
        growth = by_size[big] - by_size[min(sizes)]
        cells = " | ".join(f"{by_size[s]:.0f} MiB" for s in sizes)
        if kind == "read_bytes":
            target, result = "- (shows the method sees growth)", "-"
        else:
            target = f"<= {TARGET_FLAT_MIB:g} MiB"
            result = "pass" if growth <= TARGET_FLAT_MIB else "**miss**"
        lines.append(f"| {name} | {cells} | {growth:+.1f} MiB | {target} | {result} |")
    return lines


# --- 3: OMS bundle verification ------------------------------------------------------------------


@dataclass
class Signed:
    model: Path
    bundle: bytes
    bundle_path: Path
    public_pem_path: Path
    public_key: Any


def oms_sign(model: Path, work: Path) -> Signed:
    import model_signing

    from modeltrust.chain.signatures import generate_private_key, private_key_pem, public_key_pem

    key = generate_private_key("ecdsa-p256")
    key_path = work / f"{model.name}.key"
    key_path.write_bytes(private_key_pem(key))
    public_path = work / f"{model.name}.pub"
    public_path.write_bytes(public_key_pem(key.public_key()))
    bundle_path = work / f"{model.name}.sig"
    config = model_signing.signing.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_signer(private_key=key_path)
    hashing = model_signing.hashing.Config()  # type: ignore[no-untyped-call]
    config.set_hashing_config(hashing.use_file_serialization())
    config.sign(model, bundle_path)
    return Signed(model, bundle_path.read_bytes(), bundle_path, public_path, key.public_key())


def ours_verify(signed: Signed, registration: Any) -> Callable[[], None]:
    from modeltrust.chain.digest import sha256_file
    from modeltrust.chain.signatures import verify_registration

    def verify() -> None:
        digest, _ = sha256_file(signed.model)
        if "sha256:" + digest.hex() != registration.digest:
            raise RuntimeError("the file's digest is not the registration's")
        verify_registration(registration, signed.public_key)

    return verify


def ours_signature_only(signed: Signed, registration: Any) -> Callable[[], None]:
    from modeltrust.chain.signatures import verify_registration

    return lambda: verify_registration(registration, signed.public_key)


def theirs_verify(signed: Signed) -> Callable[[], None]:
    import model_signing

    def verify() -> None:
        config = model_signing.verifying.Config()  # type: ignore[no-untyped-call]
        config.use_elliptic_key_verifier(public_key=signed.public_pem_path)
        # An explicit hashing config: model-signing 1.1.1 crashes on sharded bundles without.
        hashing = model_signing.hashing.Config()  # type: ignore[no-untyped-call]
        config.set_hashing_config(hashing.use_file_serialization())
        config.verify(signed.model, signed.bundle_path)

    return verify


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def oms_table(work: Path, big_size: int, rounds: int) -> list[str]:
    from modeltrust.chain.signatures import oms_bundle_registration

    oms = work / "oms"
    oms.mkdir()
    cases = [
        ("10 MB ONNX model", sized_mlp(oms / "model.onnx", size_bytes=10 * 1000 * 1000, seed=7)),
    ]
    big = oms / "big.bin"
    make_file(big, big_size)
    cases.append((f"{big_size // MIB} MiB file", big))
    lines = [
        f"### OMS bundle verification (model-signing bundle, ECDSA P-256; best of {rounds})",
        "",
        "| file | ours: hash + verify | ours: signature + statement only "
        "| model-signing `verify` | ratio (theirs / ours) | target | result |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, model in cases:
        signed = oms_sign(model, oms)
        registration = oms_bundle_registration(
            signed.bundle,
            signed.public_key,
            name="bench",
            version="1",
            size=model.stat().st_size,
        )
        ours_fn, theirs_fn = ours_verify(signed, registration), theirs_verify(signed)
        sig_fn = ours_signature_only(signed, registration)
        ours_fn(), theirs_fn()  # warm: imports, page cache
        ours_times, theirs_times = [], []
        for _ in range(rounds):  # alternate, so both see the same machine state
            ours_times.append(timed(ours_fn))
            theirs_times.append(timed(theirs_fn))
        ours, theirs = min(ours_times), min(theirs_times)
        sig_only = min(timed(sig_fn) for _ in range(20))
        ratio = theirs / ours
        lines.append(
            f"| {label} | {ours * 1e3:,.1f} ms | {sig_only * 1e3:.2f} ms | {theirs * 1e3:,.1f} ms "
            f"| {ratio:.2f}x | >= {TARGET_OMS_RATIO:g}x "
            f"| {'pass' if ratio >= TARGET_OMS_RATIO else '**miss**'} |"
        )
    return lines


# --- main ----------------------------------------------------------------------------------


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup in main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="256 MiB largest file, fewer rounds")
    parser.add_argument("--rounds", type=int, help="timed rounds per measurement (default 3)")
    args = parser.parse_args()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    sizes = [16 * MIB, 64 * MIB, 256 * MIB] if args.quick else [64 * MIB, 256 * MIB, 1 << 30]
    rounds = args.rounds or (2 if args.quick else 3)
    oms_big = 64 * MIB if args.quick else 256 * MIB
    sha256sum = subprocess.run(
        ["sha256sum", "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    sha_ni = "sha_ni" in Path("/proc/cpuinfo").read_text()
    import model_signing

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"## Artifact hashing and verification ({when}; {os.cpu_count()} cores, "
        f"{platform.machine()}, CPU SHA extensions: {'yes' if sha_ni else 'no'}; "
        f"Python {platform.python_version()}, OpenSSL via hashlib; {sha256sum}; "
        f"model-signing {model_signing.__version__})",
        "",
    ]
    work = Path(tempfile.mkdtemp(prefix="mt-hashing-bench-"))
    try:
        lines = header + hashing_tables(work, sizes, rounds) + [""]
        lines += oms_table(work, oms_big, max(rounds, 5))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.quick:
        lines += ["", "(--quick: smaller files; run without --quick for the figures in docs.)"]
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
