"""fetch_artifact against real files and a real HTTP(S) server on 127.0.0.1."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import os
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modeltrust.serving.errors import DigestMismatchError, FetchError, SizeLimitError
from modeltrust.serving.fetch import _HashAndWrite, fetch_artifact
from modeltrust.serving.sources import TransientFetchError

pytestmark = pytest.mark.integration

ARTIFACT = os.urandom(3 * 1024 * 1024 + 17)  # several chunks and a ragged tail
DIGEST = "sha256:" + hashlib.sha256(ARTIFACT).hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"something else").hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """/files/x: Content-Length; /chunked/x: chunked, no length; /lying/x: claims more
    bytes than it sends; /redirect/x: 302 to /files/x; /downgrade/x: 302 to http://.../files/x;
    /gzip/x: Content-Encoding gzip."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        kind, _, name = self.path.strip("/").partition("/")
        kinds = {"files", "chunked", "lying", "redirect", "downgrade", "gzip"}
        if name != "artifact" or kind not in kinds:
            self.send_error(404)
            return
        if kind in ("redirect", "downgrade"):
            self.send_response(302)
            host = f"http://127.0.0.1:{self.server.server_address[1]}"  # type: ignore[index]
            self.send_header("Location", f"{host if kind == 'downgrade' else ''}/files/artifact")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        if kind == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(ARTIFACT), 100_000):
                piece = ARTIFACT[start : start + 100_000]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if kind == "gzip":
            self.send_header("Content-Encoding", "gzip")
        claimed = len(ARTIFACT) + (1000 if kind == "lying" else 0)
        self.send_header("Content-Length", str(claimed))
        if kind == "lying":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(ARTIFACT)


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that stop reading (size cap, mismatch) are expected here


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_http_download_is_verified_read_only_and_complete(http_base: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    seen: list[int] = []
    result = fetch_artifact(
        f"{http_base}/files/artifact",
        DIGEST,
        dest,
        chunk_size=1 << 20,
        progress=lambda done, total: seen.append(done),
    )
    assert dest.read_bytes() == ARTIFACT
    assert stat.S_IMODE(dest.stat().st_mode) == 0o444
    assert (result.path, result.digest, result.size) == (dest, DIGEST, len(ARTIFACT))
    assert seen[-1] == len(ARTIFACT)
    assert len(seen) >= 4  # streamed in chunks, not read whole
    assert _leftovers(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize("kind", ["chunked", "redirect"])
def test_chunked_and_redirected_downloads(http_base: str, tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "m.onnx"
    fetch_artifact(f"{http_base}/{kind}/artifact", DIGEST, dest)
    assert dest.read_bytes() == ARTIFACT


def test_local_path_and_file_uri(tmp_path: Path) -> None:
    source = tmp_path / "source dir" / "artifact.bin"
    source.parent.mkdir()
    source.write_bytes(ARTIFACT)
    out = tmp_path / "out"
    fetch_artifact(str(source), DIGEST, out / "a.onnx")
    fetch_artifact(source.as_uri(), DIGEST, out / "b.onnx")  # percent-encoded space
    assert (out / "a.onnx").read_bytes() == (out / "b.onnx").read_bytes() == ARTIFACT


def test_digest_mismatch_names_both_digests_and_leaves_nothing(
    http_base: str, tmp_path: Path
) -> None:
    dest = tmp_path / "model.onnx"
    with pytest.raises(DigestMismatchError) as caught:
        fetch_artifact(f"{http_base}/files/artifact", OTHER_DIGEST, dest)
    message = str(caught.value)
    assert f"expected {OTHER_DIGEST}" in message
    assert f"got {DIGEST}" in message
    assert _leftovers(tmp_path) == []


def test_mismatch_keeps_an_existing_destination_untouched(tmp_path: Path) -> None:
    source = tmp_path / "new.bin"
    source.write_bytes(ARTIFACT)
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"the verified old model")
    with pytest.raises(DigestMismatchError):
        fetch_artifact(str(source), OTHER_DIGEST, dest)
    assert dest.read_bytes() == b"the verified old model"
    assert _leftovers(tmp_path) == ["model.onnx", "new.bin"]


def test_size_cap_from_content_length_refuses_before_reading(
    http_base: str, tmp_path: Path
) -> None:
    with pytest.raises(
        SizeLimitError, match=f"is {len(ARTIFACT)} bytes, over the limit of 1000000"
    ):
        fetch_artifact(f"{http_base}/files/artifact", DIGEST, tmp_path / "m", max_size=1_000_000)
    assert _leftovers(tmp_path) == []


def test_size_cap_while_streaming_without_length(http_base: str, tmp_path: Path) -> None:
    with pytest.raises(SizeLimitError, match="larger than the limit of 1000000 bytes"):
        fetch_artifact(
            f"{http_base}/chunked/artifact",
            DIGEST,
            tmp_path / "m",
            max_size=1_000_000,
            chunk_size=65536,
        )
    assert _leftovers(tmp_path) == []


def test_exact_size_from_a_registration(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(ARTIFACT)
    with pytest.raises(SizeLimitError):
        fetch_artifact(str(source), DIGEST, tmp_path / "out" / "m", expected_size=len(ARTIFACT) - 1)
    result = fetch_artifact(
        str(source), DIGEST, tmp_path / "out" / "m", expected_size=len(ARTIFACT)
    )
    assert result.size == len(ARTIFACT)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/files/missing", "answered 404"),
        ("/lying/artifact", "bytes"),  # the body ends before the announced length
        ("/gzip/artifact", "Content-Encoding gzip"),
    ],
)
def test_http_failures(http_base: str, tmp_path: Path, path: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        fetch_artifact(f"{http_base}{path}", DIGEST, tmp_path / "m")
    assert _leftovers(tmp_path) == []


def test_unreachable_and_unsupported_sources(tmp_path: Path) -> None:
    slept: list[float] = []
    with pytest.raises(FetchError, match=r"cannot reach .*gave up after 5 attempts"):
        fetch_artifact(
            "http://127.0.0.1:9/x", DIGEST, tmp_path / "m", timeout=5, sleep=slept.append
        )
    assert slept == [0.5, 1.0, 2.0, 4.0]  # exponential backoff between the five tries
    with pytest.raises(FetchError, match="unsupported URI scheme 'gopher'"):
        fetch_artifact("gopher://host/model.onnx", DIGEST, tmp_path / "m")
    with pytest.raises(FetchError, match="cannot open"):
        fetch_artifact(str(tmp_path / "absent.onnx"), DIGEST, tmp_path / "m")
    with pytest.raises(FetchError, match="is a directory"):
        fetch_artifact(str(tmp_path / "absent.onnx"), DIGEST, tmp_path)
    assert _leftovers(tmp_path) == []


def test_local_sources_must_be_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)  # no writer: a blocking open would hang the fetch forever
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_artifact(str(fifo), DIGEST, tmp_path / "out" / "m")
    with pytest.raises(FetchError, match="not a regular file"):
        fetch_artifact("/dev/zero", DIGEST, tmp_path / "out" / "m", max_size=10)


def test_a_local_root_confines_paths_and_refuses_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.onnx").write_bytes(ARTIFACT)
    (root / "link.onnx").symlink_to(root / "sub" / "a.onnx")
    (tmp_path / "outside.onnx").write_bytes(ARTIFACT)
    out = tmp_path / "out"
    fetch_artifact(str(root / "sub" / "a.onnx"), DIGEST, out / "ok", local_root=root)
    with pytest.raises(FetchError, match="symlink"):
        fetch_artifact(str(root / "link.onnx"), DIGEST, out / "l", local_root=root)
    with pytest.raises(FetchError, match="not under the local model root"):
        fetch_artifact(str(tmp_path / "outside.onnx"), DIGEST, out / "o", local_root=root)
    # Without a root (the pod's init step reading its mounted volume) a symlink is followed.
    assert fetch_artifact(str(root / "link.onnx"), DIGEST, out / "p").digest == DIGEST


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modeltrust test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_with_an_extra_ca_file(tmp_path_factory: pytest.TempPathFactory) -> None:
    certs = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(certs)
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"https://127.0.0.1:{server.server_address[1]}/files/artifact"
        out = tmp_path_factory.mktemp("out")
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            fetch_artifact(uri, DIGEST, out / "m")  # not trusted by the system CAs
        assert _leftovers(out) == []
        fetch_artifact(uri, DIGEST, out / "m", ca_file=cert)
        assert (out / "m").read_bytes() == ARTIFACT
        with pytest.raises(FetchError, match=r"refusing redirect from https://.* to non-https"):
            fetch_artifact(uri.replace("/files/", "/downgrade/"), DIGEST, out / "n", ca_file=cert)
        assert _leftovers(out) == ["m"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_full_disk_fails_the_fetch_with_its_error_and_leaves_nothing(
    http_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hashing and writing run on a thread of their own; its failure must reach the caller
    # (and not hang the reader waiting for a buffer), and the partial file must go.
    import errno

    real_write = os.write
    written = 0

    def write(fd: int, data: bytes | memoryview) -> int:
        nonlocal written
        if written >= 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        count = real_write(fd, data)
        written += count
        return count

    monkeypatch.setattr(os, "write", write)  # the module's os is this one
    dest = tmp_path / "model.onnx"
    with pytest.raises(OSError, match="No space left"):
        fetch_artifact(f"{http_base}/files/artifact", DIGEST, dest, chunk_size=65536)
    assert _leftovers(tmp_path) == []


def test_the_bytes_written_match_with_any_chunk_size_and_start_writeback(
    tmp_path: Path,
) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(ARTIFACT)
    for chunk_size in (4095, 65536, 1 << 20, 8 << 20):
        dest = tmp_path / f"out-{chunk_size}.bin"
        result = fetch_artifact(str(source), DIGEST, dest, chunk_size=chunk_size)
        assert dest.read_bytes() == ARTIFACT
        assert result.size == len(ARTIFACT)


def test_a_failed_write_wins_over_a_read_error_so_no_retry_resumes_over_it() -> None:
    """A chunk was hashed but its write failed while the reader hit a transient error: the
    retry would resume after bytes the file does not hold, so the write's error must win."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails: EPIPE

    def read_fails_after_one_chunk() -> None:
        with _HashAndWrite(hashlib.sha256(), write_end, 16) as sink:
            view = sink.free_buffer()
            view[:4] = b"abcd"
            sink.submit(view, 4)
            raise TransientFetchError("the connection dropped")

    try:
        with pytest.raises(BrokenPipeError):
            read_fails_after_one_chunk()
    finally:
        os.close(write_end)
