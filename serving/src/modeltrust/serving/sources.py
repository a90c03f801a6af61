"""Where model bytes come from: one small interface over every kind of source.

A `Source` is resolved once from a URI (for OCI, that reads and checks the manifest) and
then opened, possibly several times: `open(offset)` streams the artifact's bytes from
`offset` when the source can resume (an HTTP Range request, an S3 ranged GET, a local
seek), or from 0 when it cannot, and says which (`Opened.start`). `fetch.fetch_artifact`
owns everything else, the same for all sources: one pass that hashes and writes, the size
cap, retries with backoff on `TransientFetchError`, and leaving nothing behind on failure.

Schemes: https://, http://, file:// and plain paths here; oci:// (modeltrust.serving.oci)
and s3:// (modeltrust.serving.s3) in modules of their own.

Errors name the source by `description`, which never holds a credential.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import http.client
import os
import ssl
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

from modeltrust.serving.credentials import SourceCredentials
from modeltrust.serving.errors import FetchError

USER_AGENT = "modeltrust-fetch/1"
MAX_REDIRECTS = 5
SCHEMES = ("https", "http", "file", "oci", "s3")


class TransientFetchError(FetchError):
    """A failure that trying again may cure: a dropped connection, a timeout, a 5xx/429."""


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible store (not secret; spec.model.s3)."""

    endpoint: str | None = None  # e.g. https://minio.example.com:9000; None: AWS S3
    region: str | None = None
    addressing: str = "auto"  # "path", "virtual" or "auto" (the client library decides)


@dataclass(frozen=True)
class SourceAccess:
    """Everything a source needs besides its URI."""

    credentials: SourceCredentials | None = None
    ca_file: Path | None = None
    timeout: float = 60.0  # connect and each read, seconds
    local_root: Path | None = None  # local paths must lie below it (None: any)
    s3: S3Options = field(default_factory=S3Options)

    def ssl_context(self) -> ssl.SSLContext:
        """System CAs, plus the CA file and the credentials' ca.crt; hostnames checked.

        Made once per SourceAccess and shared by its requests: loading the system CAs
        costs tens of milliseconds, and an oci:// fetch makes three or four requests."""
        return self._ssl_context

    @functools.cached_property
    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as error:
                raise FetchError(f"cannot load CA file {self.ca_file}: {error}") from None
        if self.credentials is not None and self.credentials.ca_pem is not None:
            try:
                context.load_verify_locations(cadata=self.credentials.ca_pem.decode("ascii"))
            except (ValueError, ssl.SSLError) as error:
                raise FetchError(
                    f"the ca.crt of {self.credentials.source_name} is not a usable PEM "
                    f"certificate: {error}"
                ) from None
        return context


class Stream(Protocol):
    def readinto(self, buffer: memoryview) -> int | None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class Opened:
    stream: Stream
    start: int  # the offset the stream begins at: the one asked for, or 0
    total: int | None  # the artifact's whole size, when the source says it


class Source(Protocol):
    description: str  # for messages; never holds a credential
    pinned_uri: str  # the URI that names exactly these bytes' source (OCI: by digest)

    def open(self, offset: int) -> Opened: ...

    def verify(self, digest: bytes, size: int) -> None:
        """The source's own integrity checks on the whole artifact (OCI: layer digest)."""

    def close(self) -> None: ...


# --- http(s) -----------------------------------------------------------------------------


class _NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to http, and not forever."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ) -> urllib.request.Request | None:
        if urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https":
            raise FetchError(f"refusing redirect from {req.full_url} to non-https {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_error(what: str, status: int, reason: str, *, authenticated: bool) -> FetchError:
    """A FetchError for an HTTP status, transient where a retry may help."""
    text = f"{what} answered {status} {reason}"
    if status in (401, 403):
        hint = (
            "the credentials were refused; check the Secret's values"
            if authenticated
            else "it needs credentials; reference a Secret in spec.model.credentials"
        )
        return FetchError(f"{text}: {hint}")
    if status in (408, 425, 429) or status >= 500:
        return TransientFetchError(text)
    return FetchError(text)


def open_url(
    url: str,
    access: SourceAccess,
    *,
    headers: dict[str, str],
    auth_header: str | None,
    what: str,
) -> http.client.HTTPResponse:
    """GET `url`; `auth_header` goes to the URL's own host only, never to a redirect."""
    opener = urllib.request.build_opener(
        _NoDowngradeRedirects(), urllib.request.HTTPSHandler(context=access.ssl_context())
    )
    request = urllib.request.Request(  # noqa: S310 - callers pass http(s) URLs only
        url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    )
    if auth_header is not None:
        # Unredirected: urllib copies ordinary headers onto a redirect's request.
        request.add_unredirected_header("Authorization", auth_header)
    try:
        response: http.client.HTTPResponse = opener.open(request, timeout=access.timeout)
    except urllib.error.HTTPError as error:
        error.close()
        raise http_error(
            what, error.code, str(error.reason), authenticated=auth_header is not None
        ) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLError):
            raise FetchError(f"cannot reach {what}: {error.reason}") from None
        raise TransientFetchError(f"cannot reach {what}: {error.reason}") from None
    except ssl.SSLError as error:
        raise FetchError(f"cannot reach {what}: {error}") from None
    except (OSError, http.client.HTTPException) as error:
        raise TransientFetchError(f"cannot reach {what}: {error}") from None
    return response


def content_range_start(response: http.client.HTTPResponse) -> tuple[int, int | None] | None:
    """(first byte, total) of a 206 answer's Content-Range, or None if unreadable."""
    value = response.headers.get("Content-Range", "")
    unit, _, rest = value.partition(" ")
    span, _, total = rest.partition("/")
    first, _, _ = span.partition("-")
    if unit.lower() != "bytes" or not first.isdigit():
        return None
    return int(first), int(total) if total.isdigit() else None


def response_opened(response: http.client.HTTPResponse, offset: int, what: str) -> Opened:
    """An Opened for a GET that asked for bytes from `offset` (Range when > 0)."""
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        response.close()
        raise FetchError(
            f"{what} was sent with Content-Encoding {response.headers['Content-Encoding']}; "
            "the digest pins the stored bytes, so the server must send them unencoded"
        )
    length_header = response.headers.get("Content-Length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    if offset > 0 and response.status == 206:
        span = content_range_start(response)
        if span is None or span[0] != offset:
            response.close()
            raise FetchError(f"{what} answered a range request with the wrong range")
        total = (
            span[1] if span[1] is not None else (offset + length if length is not None else None)
        )
        return Opened(response, offset, total)
    return Opened(response, 0, length)  # a whole answer (no Range, or Range ignored)


class HttpSource:
    def __init__(self, uri: str, access: SourceAccess) -> None:
        self.description = uri
        self.pinned_uri = uri
        self._access = access
        parts = urlsplit(uri)
        self._auth_header: str | None = None
        credentials = access.credentials
        if credentials is not None:
            credentials.check_host(parts.hostname or "", parts.port)
            if credentials.token is not None:
                self._auth_header = f"Bearer {credentials.token}"
            elif credentials.username is not None and credentials.password is not None:
                pair = f"{credentials.username}:{credentials.password}".encode()
                self._auth_header = f"Basic {base64.b64encode(pair).decode()}"

    def open(self, offset: int) -> Opened:
        headers = {"Range": f"bytes={offset}-"} if offset > 0 else {}
        response = open_url(
            self.pinned_uri,
            self._access,
            headers=headers,
            auth_header=self._auth_header,
            what=f"GET {self.description}",
        )
        return response_opened(response, offset, self.description)

    def verify(self, digest: bytes, size: int) -> None:
        return None

    def close(self) -> None:
        return None


# --- local files -------------------------------------------------------------------------


def _open_under(root: Path, path: Path, flags: int) -> int:
    """Open `path` below `root` one component at a time, never following a symlink."""
    base = os.path.abspath(root)
    relative = os.path.relpath(os.path.abspath(path), base)
    parts = Path(relative).parts
    if not parts or parts[0] == ".." or relative == ".":
        raise FetchError(f"{path} is not under the local model root {root}")
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
            )
            os.close(dir_fd)
            dir_fd = inner
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


class FileSource:
    """A regular file (a FIFO or device would block or never end); with a local root,
    only below it and without following any symlink below it."""

    def __init__(self, path: Path, local_root: Path | None) -> None:
        self.description = str(path)
        self.pinned_uri = str(path)
        self._path = path
        self._root = local_root

    def open(self, offset: int) -> Opened:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = (
                os.open(self._path, flags)
                if self._root is None
                else _open_under(self._root, self._path, flags)
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise FetchError(f"cannot open {self.description}: it is a symlink") from None
            raise FetchError(f"cannot open {self.description}: {error.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FetchError(f"cannot open {self.description}: not a regular file")
            os.set_blocking(fd, True)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return Opened(os.fdopen(fd, "rb", buffering=0), offset, info.st_size)

    def verify(self, digest: bytes, size: int) -> None:
        return None

    def close(self) -> None:
        return None


def _local_path(uri: str) -> Path | None:
    """The local file a URI names, or None for a network URI."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file URI {uri} names host {parts.netloc!r}; only local files work")
        return Path(unquote(parts.path))
    if parts.scheme in SCHEMES:
        return None
    if parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive, a path
        raise FetchError(
            f"unsupported URI scheme {parts.scheme!r} in {uri}; use https, http, oci, s3, "
            "file or a path"
        )
    return Path(uri)


def resolve_source(uri: str, access: SourceAccess) -> Source:
    """The Source for `uri` (OCI: reads and checks the manifest first)."""
    local = _local_path(uri)
    if local is not None:
        if access.credentials is not None:
            raise FetchError(f"credentials were given for the local file {local}; drop them")
        return FileSource(local, access.local_root)
    scheme = urlsplit(uri).scheme
    if scheme == "oci":
        from modeltrust.serving.oci import resolve_oci

        return resolve_oci(uri, access)
    if scheme == "s3":
        from modeltrust.serving.s3 import resolve_s3

        return resolve_s3(uri, access)
    return HttpSource(uri, access)


def close_quietly(stream: Stream | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            stream.close()
