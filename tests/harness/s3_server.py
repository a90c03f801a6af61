"""A real S3 server on 127.0.0.1 for tests and benchmarks: versitygw serving a directory
(its posix backend: buckets are directories, objects files), with real SigV4 checks.

    with s3_server(tmp_path) as s3:              # s3.url: http://127.0.0.1:PORT
        s3.create_bucket("models")
        s3.put_object("models", "team/mnist.onnx", data_or_path)
        ... SourceAccess(credentials=s3.credentials(), s3=S3Options(endpoint=s3.url)) ...

    with s3_server(tmp_path, tls=True) as s3:    # https, a certificate from its own CA
        s3.ca_pem                                  # that CA, PEM

Buckets are private: only the root keys (`access_key`, `secret_key`) may read. versitygw
is built once by tests/cluster/build-tools.sh (pinned there) and cached. Objects are put
with boto3, the standard client, so what modeltrust reads is what any S3 client wrote.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from harness.cluster import tools_bin
from harness.ledger import free_port
from harness.pki import Pki
from harness.processes import stop_process
from modeltrust.serving.credentials import SourceCredentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = "us-east-1"
_STARTUP_SECONDS = 30.0


@functools.cache
def versitygw_binary() -> Path:
    binary = tools_bin() / "versitygw"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing: run tests/cluster/build-tools.sh")
    return binary


@dataclass
class S3Server:
    """A running versitygw; `stop()` and `start()` take it away and bring it back on
    the same port with the same data (a store that restarts mid-download)."""

    root: Path  # the directory it serves: ROOT/BUCKET/KEY
    port: int
    access_key: str
    secret_key: str
    tls: bool = False
    virtual_domain: str | None = None
    bind: str = "127.0.0.1"  # a real node's pods reach the host at its host address
    ca_pem: bytes | None = None
    ca_file: Path | None = None  # ca_pem's file
    _cert: Path | None = None
    _key: Path | None = None
    _log: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.bind

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def credentials(
        self,
        *,
        hosts: tuple[str, ...] | None = None,
        secret_key: str | None = None,
        access_key: str | None = None,
    ) -> SourceCredentials:
        """The root keys as a Secret would give them, bound to this server's host."""
        return SourceCredentials(
            source_name="Secret models/s3-reader",
            hosts=hosts if hosts is not None else (f"{self.host}:{self.port}",),
            s3_access_key=access_key if access_key is not None else self.access_key,
            s3_secret_key=secret_key if secret_key is not None else self.secret_key,
            ca_pem=self.ca_pem,
        )

    def client(self) -> S3Client:
        """A plain boto3 client with the root keys (what a publisher uploads with)."""
        verify: str | bool = str(self.ca_file) if self.ca_file is not None else True
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            verify=verify,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 3}),
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def put_object(self, bucket: str, key: str, data: bytes | Path) -> None:
        """Upload `data`; a Path streams from disk (multipart when large, so a 1 GiB
        object never sits in memory)."""
        client = self.client()
        if isinstance(data, Path):
            client.upload_file(str(data), bucket, key)
        else:
            client.put_object(Bucket=bucket, Key=key, Body=data)

    def start(self) -> None:
        assert self._process is None or self._process.poll() is not None, "already running"
        argv = [
            str(versitygw_binary()),
            "--port",
            f"{self.host}:{self.port}",
            "--access",
            self.access_key,
            "--secret",
            self.secret_key,
            "--region",
            REGION,
            "--keep-alive",  # as real stores do: the HEAD's connection serves the GET
            "--quiet",
        ]
        if self._cert is not None and self._key is not None:
            argv += ["--cert", str(self._cert), "--key", str(self._key)]
        if self.virtual_domain is not None:
            argv += ["--virtual-domain", self.virtual_domain]
        argv += ["posix", str(self.root / "data")]
        assert self._log is not None
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_ready()

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout=10)

    def kill(self) -> None:
        """Gone at once (SIGKILL), connections and all: a crashed store."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"versitygw exited {self._process.returncode}:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"versitygw did not listen on {self.url} in time:\n{self.log()}")

    def log(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(errors="replace")[-4000:]


@contextlib.contextmanager
def s3_server(
    directory: Path,
    *,
    tls: bool = False,
    virtual_domain: str | None = None,
    bind: str = "127.0.0.1",
) -> Iterator[S3Server]:
    """Start versitygw serving `directory`/data; stop it on exit.

    `tls`: https with a certificate for 127.0.0.1 (and `virtual_domain` with its
    subdomains) from a CA made here (`ca_pem`). `virtual_domain`: buckets are also
    addressed as BUCKET.virtual_domain (virtual-host style)."""
    (directory / "data").mkdir(parents=True, exist_ok=True)
    server = S3Server(
        root=directory,
        port=free_port(),
        # Random per server, like real keys: a test that finds one in a message found a leak.
        access_key="AKMT" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
        tls=tls,
        virtual_domain=virtual_domain,
        bind=bind,
        _log=directory / "versitygw.log",
    )
    if tls:
        pki = Pki(directory / "pki")
        names = sorted({"127.0.0.1", "localhost", bind})
        if virtual_domain is not None:
            names += [virtual_domain, f"*.{virtual_domain}"]
        issued = pki.issue("s3", "versitygw", server_names=tuple(names), client=False)
        server._cert, server._key = issued.cert, issued.key
        server.ca_file = pki.ca
        server.ca_pem = pki.ca.read_bytes()
    server.start()
    try:
        yield server
    finally:
        server.stop()
