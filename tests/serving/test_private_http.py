"""Private HTTPS sources: a token or basic auth, the server's own CA, credentials bound to
hosts, and the retries that resume a cut download. Against a real HTTPS server on loopback."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from harness.pki import Pki
from harness.private_http import PrivateFileServer
from modeltrust.serving.credentials import CredentialsError, SourceCredentials
from modeltrust.serving.errors import FetchError
from modeltrust.serving.fetch import fetch_artifact
from modeltrust.serving.sources import SourceAccess

TOKEN = "tok-9f2c4e1d7a"
MODEL = os.urandom(3 << 20) + b"end"
DIGEST = "sha256:" + hashlib.sha256(MODEL).hexdigest()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "models"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(MODEL)
    return directory


def credentials(
    server: PrivateFileServer, *, token: str | None = TOKEN, hosts: tuple[str, ...] | None = None
) -> SourceCredentials:
    return SourceCredentials(
        source_name="Secret ml/model-store",
        hosts=hosts if hosts is not None else (f"127.0.0.1:{server.port}",),
        token=token,
        ca_pem=server.ca_pem,
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(
        p.name for p in directory.iterdir() if p.name != "models" and not p.name.startswith("pki-")
    )


def test_a_token_and_the_servers_own_ca_fetch_the_model(root: Path, tmp_path: Path) -> None:
    with PrivateFileServer(root, tmp_path, token=TOKEN) as server:
        access = SourceAccess(credentials=credentials(server))
        result = fetch_artifact(server.url("model.onnx"), DIGEST, tmp_path / "m", access=access)
    assert result.digest == DIGEST
    assert (tmp_path / "m").read_bytes() == MODEL
    assert server.requests[0][1]["Authorization"] == f"Bearer {TOKEN}"


def test_basic_auth(root: Path, tmp_path: Path) -> None:
    with PrivateFileServer(root, tmp_path, basic=("ml", "pw-51d3c2")) as server:
        creds = SourceCredentials(
            source_name="Secret ml/basic",
            hosts=("127.0.0.1",),  # any port of that host
            username="ml",
            password="pw-51d3c2",
            ca_pem=server.ca_pem,
        )
        fetch_artifact(
            server.url("model.onnx"), DIGEST, tmp_path / "m", access=SourceAccess(credentials=creds)
        )
    assert (tmp_path / "m").read_bytes() == MODEL


def test_missing_and_wrong_credentials_are_refused_with_the_reason(
    root: Path, tmp_path: Path
) -> None:
    with PrivateFileServer(root, tmp_path, token=TOKEN) as server:
        ca_only = SourceAccess(credentials=credentials(server, token=None))
        with pytest.raises(FetchError, match=r"401 .*needs credentials.*spec\.model\.credentials"):
            fetch_artifact(server.url("model.onnx"), DIGEST, tmp_path / "m", access=ca_only)
        wrong = SourceAccess(credentials=credentials(server, token="wrong-token-value"))
        with pytest.raises(FetchError, match=r"401 .*credentials were refused") as refused:
            fetch_artifact(server.url("model.onnx"), DIGEST, tmp_path / "m", access=wrong)
    assert "wrong-token-value" not in str(refused.value)
    assert leftovers(tmp_path) == []


def test_the_servers_own_ca_is_needed(root: Path, tmp_path: Path) -> None:
    with PrivateFileServer(root, tmp_path, token=TOKEN) as server:
        creds = credentials(server)
        no_ca = SourceCredentials(source_name=creds.source_name, hosts=creds.hosts, token=TOKEN)
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch_artifact(
                server.url("model.onnx"), DIGEST, tmp_path / "m",
                access=SourceAccess(credentials=no_ca), retries=0,
            )  # fmt: skip
        assert server.requests == []  # the TLS handshake failed: no request, no token sent


def test_credentials_are_never_sent_to_a_host_the_secret_does_not_list(
    root: Path, tmp_path: Path
) -> None:
    with PrivateFileServer(root, tmp_path, token=TOKEN) as server:
        elsewhere = SourceAccess(credentials=credentials(server, hosts=("models.example.com",)))
        with pytest.raises(CredentialsError, match=r"may not be sent to 127\.0\.0\.1:\d+"):
            fetch_artifact(server.url("model.onnx"), DIGEST, tmp_path / "m", access=elsewhere)
        other_port = SourceAccess(credentials=credentials(server, hosts=("127.0.0.1:1",)))
        with pytest.raises(CredentialsError, match=r"modeltrust\.dev/hosts annotation lists"):
            fetch_artifact(server.url("model.onnx"), DIGEST, tmp_path / "m", access=other_port)
        assert server.requests == []


def test_a_redirect_never_carries_the_credentials(root: Path, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki-shared")  # one CA for both servers
    with (
        PrivateFileServer(root, tmp_path, token=None, pki=pki) as target,
        PrivateFileServer(root, tmp_path, token=TOKEN, pki=pki) as origin,
    ):
        origin.redirect_to = target.base  # e.g. a presigned object-store URL elsewhere
        creds = SourceCredentials(
            source_name="Secret ml/model-store",
            hosts=(f"127.0.0.1:{origin.port}",),
            token=TOKEN,
            ca_pem=origin.ca_pem,
        )
        fetch_artifact(
            origin.url("model.onnx"), DIGEST, tmp_path / "m", access=SourceAccess(credentials=creds)
        )
    assert origin.requests[0][1]["Authorization"] == f"Bearer {TOKEN}"
    assert "Authorization" not in target.requests[0][1]
    assert (tmp_path / "m").read_bytes() == MODEL


def test_a_cut_download_resumes_where_it_stopped(root: Path, tmp_path: Path) -> None:
    slept: list[float] = []
    with PrivateFileServer(root, tmp_path, token=TOKEN) as server:
        server.cut_after = 1 << 20
        result = fetch_artifact(
            server.url("model.onnx"), DIGEST, tmp_path / "m",
            access=SourceAccess(credentials=credentials(server)), sleep=slept.append,
        )  # fmt: skip
    assert result.attempts == 2
    assert slept == [0.5]
    assert server.requests[1][1]["Range"] == f"bytes={1 << 20}-"
    assert (tmp_path / "m").read_bytes() == MODEL


def test_a_server_without_range_support_starts_over(root: Path, tmp_path: Path) -> None:
    with PrivateFileServer(root, tmp_path, token=TOKEN) as server:
        server.cut_after = 1 << 20
        server.ignore_range = True
        result = fetch_artifact(
            server.url("model.onnx"), DIGEST, tmp_path / "m",
            access=SourceAccess(credentials=credentials(server)), sleep=lambda _: None,
        )  # fmt: skip
    assert result.attempts == 2
    assert (tmp_path / "m").read_bytes() == MODEL  # not the first MiB twice


def test_a_server_that_goes_away_mid_download_fails_clearly_and_leaves_nothing(
    root: Path, tmp_path: Path
) -> None:
    server = PrivateFileServer(root, tmp_path, token=TOKEN)
    stopped: list[float] = []

    def stop_the_server_at_the_first_retry(seconds: float) -> None:
        if not stopped:
            server.__exit__(None, None, None)
        stopped.append(seconds)

    server.__enter__()
    server.cut_after = 1 << 20  # 1 MiB arrives, then the connection and the server go
    with pytest.raises(FetchError, match=r"cannot reach .*gave up after 5 attempts") as gone:
        fetch_artifact(
            server.url("model.onnx"), DIGEST, tmp_path / "m",
            access=SourceAccess(credentials=credentials(server), timeout=5),
            sleep=stop_the_server_at_the_first_retry,
        )  # fmt: skip
    assert len(server.requests) == 1
    assert stopped == [0.5, 1.0, 2.0, 4.0]
    assert TOKEN not in str(gone.value)
    assert leftovers(tmp_path) == []


_CHILD = """
import sys
from pathlib import Path
from modeltrust.serving.credentials import SourceCredentials
from modeltrust.serving.fetch import fetch_artifact
from modeltrust.serving.sources import SourceAccess
url, digest, dest, host, ca = sys.argv[1:6]
creds = SourceCredentials(
    source_name="test", hosts=(host,), token=sys.argv[6], ca_pem=Path(ca).read_bytes()
)
fetch_artifact(url, digest, Path(dest), access=SourceAccess(credentials=creds))
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]))  # peak RSS, KiB
"""


def _peak_rss_kib(server: PrivateFileServer, name: str, digest: str, tmp_path: Path) -> int:
    import subprocess
    import sys

    ca = tmp_path / "ca.pem"
    ca.write_bytes(server.ca_pem)
    result = subprocess.run(
        [
            sys.executable, "-c", _CHILD, server.url(name), digest, str(tmp_path / f"{name}.out"),
            f"127.0.0.1:{server.port}", str(ca), TOKEN,
        ],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    (tmp_path / f"{name}.out").unlink()
    return int(result.stdout.strip())


@pytest.mark.slow
def test_a_1_gib_model_streams_in_flat_memory(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    digests = {}
    for name, size in (("small.onnx", 16 << 20), ("large.onnx", 1 << 30)):
        block = hashlib.sha256(name.encode()).digest() * (1 << 15)  # 1 MiB of non-zero bytes
        hasher = hashlib.sha256()
        with (root / name).open("wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
                hasher.update(block)
        digests[name] = "sha256:" + hasher.hexdigest()
    with PrivateFileServer(root, tmp_path, token=TOKEN) as server:
        small = _peak_rss_kib(server, "small.onnx", digests["small.onnx"], tmp_path)
        large = _peak_rss_kib(server, "large.onnx", digests["large.onnx"], tmp_path)
    # 64x the bytes, the same memory: one reused buffer, nothing held per byte.
    assert large - small < 16 * 1024, (small, large)
