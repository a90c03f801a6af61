"""Download an artifact and keep it only if its SHA-256 is the pinned digest.

One pass, flat memory: each chunk is read into one reused buffer, hashed, and
written to a temporary file in the destination directory. Only when the digest
(and size cap) check passes is the file fsynced, made read-only and renamed into
place, so a reader of the destination path sees either nothing or verified bytes.
On any failure the temporary file is removed.

Sources: https:// (system CAs plus an optional extra CA file), http://, file:// and
plain local paths (for volumes mounted into the pod). A local source must be a regular
file (a FIFO or device would block or never end). With `local_root`, a local path must
lie under that directory and is opened without following any symlink below it (the
operator uses this so a ModelDeployment cannot make it read its own filesystem).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import ssl
import stat
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from modeltrust.chain.digest import format_digest, parse_digest
from modeltrust.serving.errors import DigestMismatchError, FetchError, SizeLimitError

# 4 MiB: large enough that per-chunk Python overhead is noise next to hashing, small
# enough to stay in L2/L3 between the read, the hash and the write.
CHUNK_SIZE = 4 * 1024 * 1024
USER_AGENT = "modeltrust-fetch/1"
MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class FetchResult:
    path: Path
    digest: str
    size: int
    seconds: float


class _Source(Protocol):
    def readinto(self, buffer: memoryview) -> int | None: ...


@dataclass(slots=True)
class _Opened:
    stream: _Source
    length: int | None  # announced size (Content-Length or file size), if known
    description: str
    closer: BinaryIO | urllib.request.OpenerDirector | object


class _NoDowngradeRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to http, and not forever."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(  # type: ignore[no-untyped-def]
        self, req, fp, code, msg, headers, newurl
    ) -> urllib.request.Request | None:
        if urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https":
            raise FetchError(f"refusing redirect from {req.full_url} to non-https {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context()  # system CAs, hostname checking on
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as error:
            raise FetchError(f"cannot load CA file {ca_file}: {error}") from None
    return context


def _open_http(uri: str, ca_file: Path | None, timeout: float) -> _Opened:
    opener = urllib.request.build_opener(
        _NoDowngradeRedirects(), urllib.request.HTTPSHandler(context=_ssl_context(ca_file))
    )
    # Only http(s) reaches here (_local_path routes file: and paths elsewhere).
    request = urllib.request.Request(  # noqa: S310
        uri, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    )
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(f"GET {uri} answered {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise FetchError(f"cannot reach {uri}: {error.reason}") from None
    except (OSError, ssl.SSLError) as error:
        raise FetchError(f"cannot reach {uri}: {error}") from None
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        response.close()
        raise FetchError(
            f"{uri} was sent with Content-Encoding {response.headers['Content-Encoding']}; "
            "the digest pins the stored bytes, so the server must send them unencoded"
        )
    length_header = response.headers.get("Content-Length")
    length = int(length_header) if length_header and length_header.isdigit() else None
    return _Opened(response, length, uri, response)


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


def _open_file(path: Path, description: str, local_root: Path | None = None) -> _Opened:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags) if local_root is None else _open_under(local_root, path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise FetchError(f"cannot open {description}: it is a symlink") from None
        raise FetchError(f"cannot open {description}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FetchError(f"cannot open {description}: not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    handle = os.fdopen(fd, "rb", buffering=0)
    return _Opened(handle, info.st_size, description, handle)


def _local_path(uri: str) -> Path | None:
    """The local file a URI names, or None for a network URI."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file URI {uri} names host {parts.netloc!r}; only local files work")
        return Path(unquote(parts.path))
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive, a path
        raise FetchError(
            f"unsupported URI scheme {parts.scheme!r} in {uri}; use https, http, file or a path"
        )
    return Path(uri)


def open_source(
    uri: str,
    *,
    ca_file: Path | None = None,
    timeout: float = 60.0,
    local_root: Path | None = None,
) -> _Opened:
    local = _local_path(uri)
    if local is None:
        return _open_http(uri, ca_file, timeout)
    return _open_file(local, str(local), local_root)


def fetch_artifact(
    uri: str,
    expected_digest: str,
    dest: Path,
    *,
    max_size: int | None = None,
    expected_size: int | None = None,
    ca_file: Path | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
    local_root: Path | None = None,
) -> FetchResult:
    """Download `uri` to `dest` if and only if its SHA-256 is `expected_digest`.

    `max_size` caps the bytes read (checked against Content-Length before reading
    and while streaming); `expected_size`, when known (e.g. from a registration),
    must match exactly. `progress(done, total)` is called after every chunk. `local_root`
    confines local paths to that directory, symlinks below it refused.
    Raises DigestMismatchError, SizeLimitError or FetchError; on any of them nothing
    is left at `dest` or beside it.
    """
    expected = parse_digest(expected_digest)
    started = time.perf_counter()
    dest = Path(dest)
    if dest.is_dir():
        raise FetchError(f"destination {dest} is a directory; give the file path to write")
    dest.parent.mkdir(parents=True, exist_ok=True)
    limit = max_size
    if expected_size is not None:
        limit = expected_size if limit is None else min(limit, expected_size)

    source = open_source(uri, ca_file=ca_file, timeout=timeout, local_root=local_root)
    try:
        if limit is not None and source.length is not None and source.length > limit:
            raise SizeLimitError(
                f"{source.description} is {source.length} bytes, over the limit of {limit} bytes"
            )
        fd, temp_name = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"
        )
        try:
            digest, size = _stream(source, fd, limit, chunk_size, progress)
            actual = format_digest(digest)
            if digest != expected:
                raise DigestMismatchError(source.description, format_digest(expected), actual)
            if expected_size is not None and size != expected_size:
                raise FetchError(
                    f"{source.description} is {size} bytes "
                    f"but the registration says {expected_size}"
                )
            os.fchmod(fd, 0o444)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(temp_name, dest)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
    finally:
        close = getattr(source.closer, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()
    _fsync_directory(dest.parent)
    return FetchResult(dest, actual, size, time.perf_counter() - started)


def _stream(
    source: _Opened,
    fd: int,
    limit: int | None,
    chunk_size: int,
    progress: Callable[[int, int | None], None] | None,
) -> tuple[bytes, int]:
    hasher = hashlib.sha256()
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    total = 0
    read = source.stream.readinto
    while True:
        try:
            count = read(view)
        except (OSError, http.client.HTTPException) as error:  # e.g. IncompleteRead
            raise FetchError(
                f"reading {source.description} failed after {total} bytes: {error}"
            ) from None
        if not count:
            break
        total += count
        if limit is not None and total > limit:
            raise SizeLimitError(
                f"{source.description} is larger than the limit of {limit} bytes; stopped reading"
            )
        chunk = view[:count]
        hasher.update(chunk)  # releases the GIL for large buffers
        _write_all(fd, chunk)
        if progress is not None:
            progress(total, source.length)
    if source.length is not None and total != source.length:
        raise FetchError(
            f"{source.description} ended after {total} of {source.length} announced bytes"
        )
    return hasher.digest(), total


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable: a crash must not leave the old name pointing nowhere."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
