"""A real OCI registry (CNCF distribution's `registry` binary) on 127.0.0.1, over TLS,
and pushes to it with the real `oras` CLI: for the oci:// source's tests and benchmarks.

    with oci_registry(tmp_path) as registry:                        # anonymous
        digest = registry.push(model, "models/mnist:v1")            # the manifest's digest
        fetch_artifact(f"oci://{registry.host}/models/mnist@{digest}", ...,
                       access=SourceAccess(ca_file=registry.ca))

    oci_registry(tmp_path, users={"alice": "secret"})               # htpasswd: Basic auth
    oci_registry(tmp_path, users={...}, token_auth=True)            # Bearer tokens from a
                                                                    # token service of its own

Both tools come from tests/cluster/build-tools.sh (cached). Storage is a directory
(`storage`), so a test can change a blob on the registry's disk. The token service is ours
(the registry only verifies tokens; issuing them is a separate service in the distribution
token protocol): it issues ES256 JWTs whose x5c certificate chains to the test CA, which
the registry is configured to trust, and it answers the same three ways real ones do:
GET with Basic auth, anonymous GET, and POST of an OAuth2 refresh token.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import os
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import bcrypt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509 import load_pem_x509_certificate

from harness import cluster
from harness.ledger import free_port
from harness.pki import Credential, Pki
from harness.processes import stop_process
from harness.waiting import wait_for

SERVICE = "modeltrust-test-registry"
ISSUER = "modeltrust-test-token-service"


@functools.cache
def tools_bin() -> Path:
    """The directory of the pinned registry and oras binaries (built on the first run)."""
    return cluster.tools_bin()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """The distribution token protocol's issuing side, over HTTPS on localhost."""

    def __init__(
        self,
        signer: Credential,
        tls: Credential,
        users: dict[str, str],
        refresh_tokens: dict[str, str],
        lifetime: int,
        without_access: tuple[str, ...] = (),
    ) -> None:
        self.users = users
        self.without_access = without_access  # users it knows but grants nothing
        self.refresh_tokens = refresh_tokens  # refresh token -> user
        self.lifetime = lifetime
        self.requests: list[str] = []  # "GET basic alice", "GET anonymous", "POST refresh"
        key = serialization.load_pem_private_key(signer.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        cert = load_pem_x509_certificate(signer.cert.read_bytes())
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                user = service._basic_user(self.headers.get("Authorization"))
                service.requests.append(f"GET {'anonymous' if user is None else 'basic ' + user}")
                if user == "":
                    self._answer(401, {"errors": [{"message": "wrong username or password"}]})
                    return
                self._answer(200, service._token(user, query.get("scope", [])))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                service.requests.append(f"POST {grant}")
                user: str | None = None
                if grant == "refresh_token":
                    user = service.refresh_tokens.get(form.get("refresh_token", [""])[0])
                elif grant == "password":
                    name = form.get("username", [""])[0]
                    if service.users.get(name) == form.get("password", [""])[0]:
                        user = name
                if user is None:
                    self._answer(401, {"error": "invalid_grant"})
                    return
                answer = service._token(user, form.get("scope", []))
                answer["refresh_token"] = next(
                    (t for t, u in service.refresh_tokens.items() if u == user), ""
                )
                self._answer(200, answer)

            def _answer(self, status: int, document: dict[str, object]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def realm(self) -> str:
        # Its own port, like a token service apart from its registry. The same host name:
        # oras refuses realms on loopback addresses unless the registry's host is the same.
        return f"https://127.0.0.1:{self.port}/token"

    def _basic_user(self, header: str | None) -> str | None:
        """None: anonymous; "": wrong credentials; else the user."""
        if header is None or not header.startswith("Basic "):
            return None
        name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return name if self.users.get(name) == password else ""

    def _token(self, user: str | None, scopes: list[str]) -> dict[str, object]:
        access = []
        # Anonymous callers, and users without access, get a token that grants nothing.
        if user is not None and user not in self.without_access:
            for scope in " ".join(scopes).split():
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        header = {"alg": "ES256", "typ": "JWT", "x5c": [self._x5c]}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        token = f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        return {"token": token, "access_token": token, "expires_in": self.lifetime}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class OciRegistry:
    directory: Path
    pki: Pki
    users: dict[str, str] = field(default_factory=dict)
    token_auth: bool = False
    token_lifetime: int = 300
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    without_access: tuple[str, ...] = ()
    port: int = 0
    token_service: TokenService | None = None
    bind: str = "127.0.0.1"  # a real node's pods reach the host at its host address
    _process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"{self.bind}:{self.port}"

    @property
    def ca(self) -> Path:
        return self.pki.ca

    @property
    def storage(self) -> Path:
        return self.directory / "storage"

    @property
    def oras_config(self) -> Path:
        return self.directory / "oras-config.json"

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes."""
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def start(self) -> None:
        bin_dir = tools_bin()
        self.directory.mkdir(parents=True, exist_ok=True)
        names = tuple(sorted({"127.0.0.1", "localhost", self.bind}))
        tls = self.pki.issue("registry", self.bind, server_names=names)
        self.port = self.port or free_port()
        auth = ""
        if self.token_auth:
            signer = self.pki.issue("token-signer", "modeltrust test token signer")
            self.token_service = TokenService(
                signer,
                tls,
                self.users,
                self.refresh_tokens,
                self.token_lifetime,
                self.without_access,
            )
            auth = (
                "auth:\n  token:\n"
                f"    realm: {self.token_service.realm}\n"
                f"    service: {SERVICE}\n    issuer: {ISSUER}\n"
                f"    rootcertbundle: {self.pki.ca}\n"
            )
        elif self.users:
            htpasswd = self.directory / "htpasswd"
            htpasswd.write_text(
                "".join(
                    f"{name}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()}\n"
                    for name, password in self.users.items()
                )
            )
            auth = f"auth:\n  htpasswd:\n    realm: {SERVICE}\n    path: {htpasswd}\n"
        config = self.directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.bind}:{self.port}\n  secret: {secrets.token_hex(16)}\n"
            f"  tls:\n    certificate: {tls.cert}\n    key: {tls.key}\n" + auth
        )
        log = (self.directory / "registry.log").open("ab")
        self._process = subprocess.Popen(
            [str(bin_dir / "registry"), "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        context = ssl.create_default_context(cafile=str(self.pki.ca))

        def ready() -> bool:
            assert self._process is not None
            if self._process.poll() is not None:
                raise AssertionError(
                    f"registry exited {self._process.returncode}: "
                    + (self.directory / "registry.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(f"https://{self.host}/v2/", context=context, timeout=2):
                    return True
            except urllib.error.HTTPError as error:
                return error.code == 401  # up, and asking for credentials
            except OSError:
                return False

        wait_for(f"the registry on {self.host}", ready, timeout=30, every=0.1)
        if self.users:
            name, password = next(iter(self.users.items()))
            self._oras("login", self.host, "--username", name, "--password-stdin", stdin=password)

    def _oras(self, *args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
        command = [
            str(tools_bin() / "oras"),
            *args,
            "--ca-file",
            str(self.pki.ca),
            "--registry-config",
            str(self.oras_config),
        ]
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, cwd=cwd, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"oras {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def push(
        self,
        files: Path | list[Path] | list[tuple[Path, str]],
        reference: str,
        *,
        media_type: str | None = "application/vnd.onnx",
    ) -> str:
        """`oras push` the files (each with its media type, or `media_type`) as one
        artifact at REPOSITORY:TAG; returns the manifest's digest. Each layer is titled
        with its file's name (oras does that), so the files must sit in one directory."""
        items = files if isinstance(files, list) else [files]
        pairs = [item if isinstance(item, tuple) else (item, media_type) for item in items]
        directory = pairs[0][0].parent
        assert all(path.parent == directory for path, _ in pairs), "one directory"
        names = [f"{path.name}:{kind}" if kind else path.name for path, kind in pairs]
        out = self._oras(
            "push", "--format", "json", f"{self.host}/{reference}", *names, cwd=directory
        )
        digest: str = json.loads(out)["digest"]
        return digest

    def push_blob(self, repository: str, path: Path) -> str:
        """`oras blob push` one file as a blob; its digest."""
        out = self._oras("blob", "push", "--descriptor", f"{self.host}/{repository}", str(path))
        digest: str = json.loads(out)["digest"]
        return digest

    def push_manifest(self, reference: str, manifest: dict[str, object]) -> str:
        """`oras manifest push` a manifest written by the test (its blobs pushed before);
        the digest of the bytes pushed."""
        body = json.dumps(manifest).encode()
        path = self.directory / "manifest.json"
        path.write_bytes(body)
        media_type = str(manifest.get("mediaType", ""))
        args = ["--media-type", media_type] if media_type else []
        self._oras("manifest", "push", *args, f"{self.host}/{reference}", str(path))
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def push_index(self, reference: str, manifests: list[str]) -> str:
        """`oras manifest index create`: an index of manifests (tags or digests) of the same
        repository; its digest."""
        self._oras("manifest", "index", "create", f"{self.host}/{reference}", *manifests)
        return self.manifest_digest(reference)

    def manifest_digest(self, reference: str) -> str:
        """The digest of the manifest REPOSITORY:TAG names now, as oras reads it."""
        out = subprocess.run(
            [
                str(tools_bin() / "oras"),
                "manifest",
                "fetch",
                f"{self.host}/{reference}",
                "--ca-file",
                str(self.pki.ca),
                "--registry-config",
                str(self.oras_config),
            ],
            capture_output=True,
            check=True,
        )
        return "sha256:" + hashlib.sha256(out.stdout).hexdigest()

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process, timeout=10)
        if self.token_service is not None:
            self.token_service.stop()
            self.token_service = None

    def kill(self) -> None:
        """Gone at once, mid-answer: SIGKILL (what a crash or a lost node looks like)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


@contextlib.contextmanager
def oci_registry(
    directory: Path,
    *,
    users: dict[str, str] | None = None,
    token_auth: bool = False,
    refresh_tokens: dict[str, str] | None = None,
    without_access: tuple[str, ...] = (),
    token_lifetime: int = 300,
    pki: Pki | None = None,
    bind: str = "127.0.0.1",
) -> Iterator[OciRegistry]:
    """A running registry for the `with` block; its storage is removed afterwards."""
    registry = OciRegistry(
        directory=directory,
        pki=pki or Pki(directory / "pki"),
        users=dict(users or {}),
        token_auth=token_auth,
        token_lifetime=token_lifetime,
        refresh_tokens=dict(refresh_tokens or {}),
        without_access=without_access,
        bind=bind,
    )
    try:
        registry.start()
        yield registry
    finally:
        registry.stop()
        shutil.rmtree(registry.storage, ignore_errors=True)


def make_model_file(path: Path, size: int) -> str:
    """`size` random-looking bytes (not compressible), written in 1 MiB pieces; its
    sha256: digest. A stand-in for a large model where the contents do not matter."""
    hasher = hashlib.sha256()
    block = bytearray(os.urandom(1 << 20))
    with path.open("wb") as out:
        written = 0
        index = 0
        while written < size:
            block[:8] = index.to_bytes(8, "little")
            piece = memoryview(block)[: min(len(block), size - written)]
            out.write(piece)
            hasher.update(piece)
            written += len(piece)
            index += 1
    return "sha256:" + hasher.hexdigest()
