"""Fetch-and-verify from a private OCI registry and a private HTTPS server, each against
the standard client reading the same source alone, same file, same run.

    python bench/sources_bench.py            # 1 GiB model
    python bench/sources_bench.py --quick    # smoke run: 256 MiB

Contenders, each a fresh process timed from outside (start-up included on both sides),
alternating, best of three, after one untimed warm-up run of each (the page cache and, for
ours, compiled bytecode, as the image has it: pip install --compile):

1. oci://: `modeltrust fetch` (manifest, blob streamed through SHA-256 with the layer
   digest and the pin checked, fsync, rename) against `oras blob fetch --output FILE` of
   the same layer (ORAS checks the layer digest too), a CNCF distribution registry over
   TLS on 127.0.0.1 with basic auth;
2. https:// with a bearer token and the server's own CA: `modeltrust fetch` against
   `curl --cacert CA -H "Authorization: Bearer ..." -o FILE` (no check at all), and, for
   comparison, against curl doing what we do: `curl ... | tee FILE | sha256sum`.

Neither client fsyncs (ours does, once, before the rename): that is in our time only.

s3:// has its own benchmark (bench/s3_fetch_bench.py, boto3 as the reference). Prints a
markdown table with the target (our throughput / the client's >= 0.9) and a pass/miss
column; a miss still exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from harness.oci_registry import oci_registry, tools_bin  # noqa: E402
from harness.private_http import PrivateFileServer  # noqa: E402
from hashing_bench import make_file  # noqa: E402

MIB = 1 << 20
TARGET_RATIO = 0.9
TOKEN = "bench-token-0c5e"  # noqa: S105 - a throwaway token for a loopback server
MODELTRUST = str(Path(sys.executable).with_name("modeltrust"))


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def compiled_env(cache: Path) -> dict[str, str]:
    """Our command's environment: bytecode cached, as in the image. A checkout run with
    PYTHONDONTWRITEBYTECODE would compile every module on every start (a quarter second)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def best(runs: int, contenders: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Best of `runs` for each contender, alternating so load drifts hit both alike, after
    one untimed warm-up run of each."""
    for run in contenders.values():
        run()
    results: dict[str, float] = {name: float("inf") for name in contenders}
    for _ in range(runs):
        for name, run in contenders.items():
            results[name] = min(results[name], run())
    return results


def row(
    source: str, size: int, ours: float, reference: float, client: str, *, goal: bool = True
) -> str:
    ratio = reference / ours  # throughput ratio: ours / the client's
    verdict = "pass" if ratio >= TARGET_RATIO else "**miss**"
    if not goal:
        verdict = "comparison only"
    mib = size / MIB
    return (
        f"| {source} | {ours:.2f} s ({mib / ours:.0f} MiB/s) | {client}: {reference:.2f} s "
        f"({mib / reference:.0f} MiB/s) | {ratio:.2f}x | >= {TARGET_RATIO}x | {verdict} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256 MiB instead of 1 GiB")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = (256 if args.quick else 1024) * MIB
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="sources-bench-"))
    rows: list[str] = []
    try:
        models = work / "models"
        models.mkdir()
        model = models / "model.onnx"
        digest = make_file(model, size)
        out = work / "out"
        out.mkdir()
        env = compiled_env(work / "pycache")

        with oci_registry(work / "registry", users={"bench": "bench-pw"}) as registry:
            registry.push(model, "ml/model:1")
            manifest = registry.manifest_digest("ml/model:1")
            uri = f"oci://{registry.host}/ml/model@{manifest}"
            creds = work / "oci-credentials"
            creds.mkdir()
            (creds / "username").write_text("bench")
            (creds / "password").write_text("bench-pw")
            (creds / "ca.crt").write_bytes(registry.ca.read_bytes())
            ours_cmd = [
                MODELTRUST, "fetch", "--uri", uri, "--digest", digest,
                "--dest", str(out / "ours.onnx"), "--quiet", "--credentials-dir", str(creds),
            ]  # fmt: skip
            oras_cmd = [
                str(tools_bin() / "oras"), "blob", "fetch", "--output", str(out / "oras.onnx"),
                "--ca-file", str(registry.ca), "--registry-config", str(registry.oras_config),
                f"{registry.host}/ml/model@{digest}",
            ]  # fmt: skip

            def ours_oci() -> float:
                (out / "ours.onnx").unlink(missing_ok=True)
                return timed(ours_cmd, env)

            def oras() -> float:
                (out / "oras.onnx").unlink(missing_ok=True)
                return timed(oras_cmd)

            got = best(args.rounds, {"ours": ours_oci, "oras": oras})
            rows.append(row("oci:// (registry, TLS, basic auth)", size, got["ours"],
                            got["oras"], "`oras blob fetch`"))  # fmt: skip

        with PrivateFileServer(models, work, token=TOKEN) as server:
            ca = work / "https-ca.pem"
            ca.write_bytes(server.ca_pem)
            creds = work / "https-credentials"
            creds.mkdir()
            (creds / "token").write_text(TOKEN)
            (creds / "ca.crt").write_bytes(server.ca_pem)
            ours_cmd = [
                MODELTRUST, "fetch", "--uri", server.url("model.onnx"), "--digest", digest,
                "--dest", str(out / "ours.onnx"), "--quiet", "--credentials-dir", str(creds),
            ]  # fmt: skip
            curl_cmd = [
                "curl", "-sS", "--fail", "--cacert", str(ca),
                "-H", f"Authorization: Bearer {TOKEN}", "-o", str(out / "curl.onnx"),
                server.url("model.onnx"),
            ]  # fmt: skip

            # curl doing our work too: written and hashed (what we hash in-line).
            hashing_cmd = [
                "bash", "-o", "pipefail", "-c",
                'curl -sS --fail --cacert "$1" -H "Authorization: Bearer $2" "$3" '
                '| tee "$4" | sha256sum',
                "curl-sha256", str(ca), TOKEN, server.url("model.onnx"), str(out / "tee.onnx"),
            ]  # fmt: skip

            def ours_https() -> float:
                (out / "ours.onnx").unlink(missing_ok=True)
                return timed(ours_cmd, env)

            def curl() -> float:
                (out / "curl.onnx").unlink(missing_ok=True)
                return timed(curl_cmd)

            def curl_sha256() -> float:
                (out / "tee.onnx").unlink(missing_ok=True)
                return timed(hashing_cmd)

            got = best(args.rounds, {"ours": ours_https, "curl": curl, "tee": curl_sha256})
            rows.append(row("https:// (bearer token, own CA)", size, got["ours"],
                            got["curl"], "`curl -o`"))  # fmt: skip
            rows.append(row("https://, the reference hashing too", size, got["ours"],
                            got["tee"], "`curl \\| tee FILE \\| sha256sum`",
                            goal=False))  # fmt: skip
        fetched = hashlib.sha256((out / "ours.onnx").read_bytes()).hexdigest()
        assert f"sha256:{fetched}" == digest
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mode = "quick run, 256 MiB" if args.quick else "1 GiB"
    print(f"\n### Fetch and verify from private sources ({mode}, best of {args.rounds})\n")
    print(f"{os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}, load {os.getloadavg()[0]:.2f} at the end "
          f"({load_before:.2f} at the start)\n")  # fmt: skip
    print("| source | `modeltrust fetch` | the client alone | ratio | target | result |")
    print("|---|---|---|---|---|---|")
    for line in rows:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
