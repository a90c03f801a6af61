"""The benchmark scripts still run: each with --quick, as a user would start it. They must
exit 0 and print their markdown tables with a target and a result for every goal.
Speed is not checked here (goals live in the scripts' output, not in tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
RESULT = re.compile(r"\| (pass|\*\*miss\*\*|quick run \(\d+\); target is for \d+) \|$")


def run_quick(script: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script} --quick exited {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
    )
    return result.stdout


def result_rows(table: str) -> list[str]:
    return [line for line in table.splitlines() if RESULT.search(line)]


@pytest.mark.integration
def test_hashing_bench_quick_prints_its_tables() -> None:
    out = run_quick("hashing_bench.py", timeout=300)

    assert "### SHA-256 throughput, 256 MiB file" in out
    assert "| `sha256sum` (coreutils, reference) |" in out
    assert "### Peak RSS of the hashing process by file size (VmHWM)" in out
    assert "### OMS bundle verification" in out
    rows = result_rows(out)
    # Throughput: sha256_file and the fetch path; memory: both again; OMS: two files.
    assert len(rows) == 6, out
    assert any(r.startswith("| `sha256_file`") for r in rows)
    assert any("fetch_artifact" in r for r in rows)
    assert any(r.startswith("| 10 MB ONNX model") for r in rows)


@pytest.mark.e2e
def test_operator_bench_quick_prints_its_table() -> None:
    # Starts its own private control plane, ledger and operator, and stops them again.
    out = run_quick("operator_bench.py", timeout=600)

    assert "## Operator benchmarks" in out
    rows = result_rows(out)
    assert any(r.startswith("| `kubectl apply` -> Ready, 10 MB model, p50 of 3 |") for r in rows)
    assert any(r.startswith("| 30 ModelDeployments -> all Ready") for r in rows)
    assert any(r.startswith("| operator peak RSS (VmHWM) at 30 |") for r in rows)
    assert "| Ready=True (Deployment available on the kwok node) |" in out
    assert "| modeltrust ledger serve |" in out


@pytest.mark.e2e
def test_revocation_bench_quick_prints_its_table() -> None:
    # Its own control plane, ledger and operator; 20 serving, 5 + 5 revoked, no timer-only
    # reference (that one takes minutes).
    out = run_quick("revocation_bench.py", timeout=600)

    assert "## Revocation latency" in out
    rows = result_rows(out)
    assert any(r.startswith("| append -> Deployment at 0 replicas and Revoked=True, p99 of 5 ")
               for r in rows)  # fmt: skip
    assert "| ledger: append answered (entry in a signed checkpoint) |" in out
    assert "| follower, batch of 5: 0 replicas and Revoked=True |" in out


@pytest.mark.integration
def test_s3_fetch_bench_quick_prints_its_tables() -> None:
    # Its own versitygw on 127.0.0.1; 256 MiB object, two rounds.
    out = run_quick("s3_fetch_bench.py", timeout=600)

    assert "### s3:// fetch, 256 MiB object" in out
    assert "| boto3 `get_object` streamed, 4 MiB reads + SHA-256 + write + fsync |" in out
    assert "### Peak RSS of our s3:// fetch by object size (VmHWM)" in out
    rows = result_rows(out)
    assert len(rows) == 2, out  # throughput against boto3, and memory
    assert any(r.startswith("| ours: `fetch_artifact` s3://") for r in rows)
    assert any(r.startswith("| `fetch_artifact` s3:// (4 MiB buffer)") for r in rows)


@pytest.mark.integration
def test_sources_bench_quick_prints_its_table() -> None:
    # Its own registry and HTTPS server on 127.0.0.1; 256 MiB, three rounds: about 30 s.
    out = run_quick("sources_bench.py", timeout=300)

    assert "### Fetch and verify from private sources (quick run, 256 MiB, best of 3)" in out
    rows = result_rows(out)
    assert len(rows) == 2, out  # oci:// against oras, https:// against curl
    assert any(r.startswith("| oci:// (registry, TLS, basic auth) |") for r in rows)
    assert any(r.startswith("| https:// (bearer token, own CA) |") for r in rows)
    assert "| https://, the reference hashing too |" in out
    assert "`curl \\| tee FILE \\| sha256sum`" in out


@pytest.mark.e2e
def test_ledger_failover_bench_quick_prints_its_table() -> None:
    # Its own private control plane (the Lease) and PostgreSQL server; 2 kills per mode.
    out = run_quick("ledger_failover_bench.py", timeout=600)

    assert "## Ledger failover (quick;" in out
    rows = result_rows(out)
    assert [r.split(" | ")[0] for r in rows] == ["| SQLite + Lease", "| PostgreSQL"], out
    assert all("| SIGKILL | 2 |" in r for r in rows), out
    assert out.count("| SIGTERM (reference) | 1 |") == 2, out
