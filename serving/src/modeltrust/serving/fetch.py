"""Download an artifact and keep it only if its SHA-256 is the pinned digest.

One pass, flat memory: chunks are read into two reused buffers, and each is hashed
and written to a temporary file in the destination directory on a second thread
while the next one is read. Only when the digest
(and size cap) check passes is the file fsynced, made read-only and renamed into
place, so a reader of the destination path sees either nothing or verified bytes.
On any failure the temporary file is removed.

The same for every source (modeltrust.serving.sources: https, http, oci, s3, file and
local paths): a transient failure (dropped connection, timeout, 5xx, 429) is retried with
exponential backoff, resuming at the byte reached when the source can (Range requests),
else starting over with a fresh hash; the retry budget refills whenever bytes arrive.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import http.client
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from modeltrust.chain.digest import format_digest, parse_digest
from modeltrust.serving.errors import DigestMismatchError, FetchError, SizeLimitError
from modeltrust.serving.sources import (
    Opened,
    Source,
    SourceAccess,
    TransientFetchError,
    close_quietly,
    resolve_source,
)

# 4 MiB: large enough that per-chunk Python overhead is noise next to hashing, small
# enough to stay in L2/L3 between the read, the hash and the write.
CHUNK_SIZE = 4 * 1024 * 1024
RETRIES = 4  # after the first try, without progress in between
BACKOFF = 0.5  # seconds before the first retry, doubled each time (0.5, 1, 2, 4)


@dataclass(frozen=True, slots=True)
class FetchResult:
    path: Path
    digest: str
    size: int
    seconds: float
    pinned_uri: str  # the source by digest (an OCI tag resolved), for the pod to fetch
    attempts: int = 1


def fetch_artifact(
    uri: str,
    expected_digest: str,
    dest: Path,
    *,
    max_size: int | None = None,
    expected_size: int | None = None,
    access: SourceAccess | None = None,
    ca_file: Path | None = None,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
    local_root: Path | None = None,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Download `uri` to `dest` if and only if its SHA-256 is `expected_digest`.

    `access` says how to reach the source (credentials, CA, timeout, local root, S3
    endpoint); without it, one is made from `ca_file`, `timeout` and `local_root`.
    `max_size` caps the bytes read (checked against the announced size before reading
    and while streaming); `expected_size`, when known (e.g. from a registration),
    must match exactly. `progress(done, total)` is called after every chunk.
    Raises DigestMismatchError, SizeLimitError or FetchError; on any of them nothing
    is left at `dest` or beside it.
    """
    expected = parse_digest(expected_digest)
    if access is None:
        access = SourceAccess(ca_file=ca_file, timeout=timeout, local_root=local_root)
    started = time.perf_counter()
    dest = Path(dest)
    if dest.is_dir():
        raise FetchError(f"destination {dest} is a directory; give the file path to write")
    dest.parent.mkdir(parents=True, exist_ok=True)
    limit = max_size
    if expected_size is not None:
        limit = expected_size if limit is None else min(limit, expected_size)

    source = _resolve_with_retries(uri, access, retries, backoff, sleep)
    try:
        fd, temp_name = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial"
        )
        try:
            download = _Download(source, fd, limit, chunk_size, progress)
            attempts = download.run(retries, backoff, sleep)
            digest, size = download.hasher.digest(), download.done
            source.verify(digest, size)
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
        source.close()
    _fsync_directory(dest.parent)
    return FetchResult(
        dest, actual, size, time.perf_counter() - started, source.pinned_uri, attempts
    )


@dataclass(frozen=True, slots=True)
class SourceDigest:
    digest: str
    size: int
    pinned_uri: str


def digest_source(
    uri: str,
    access: SourceAccess,
    *,
    max_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    retries: int = RETRIES,
    backoff: float = BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> SourceDigest:
    """The SHA-256 and size of what `uri` serves, read once and kept nowhere (what a
    publisher signs), with the same source checks, cap and retries as fetch_artifact."""
    source = _resolve_with_retries(uri, access, retries, backoff, sleep)
    try:
        download = _Download(source, None, max_size, CHUNK_SIZE, progress)
        download.run(retries, backoff, sleep)
        digest, size = download.hasher.digest(), download.done
        source.verify(digest, size)
    finally:
        source.close()
    return SourceDigest(format_digest(digest), size, source.pinned_uri)


def _resolve_with_retries(
    uri: str, access: SourceAccess, retries: int, backoff: float, sleep: Callable[[float], None]
) -> Source:
    """resolve_source, retrying transient failures (an OCI manifest read can fail too)."""
    for attempt in range(retries + 1):
        try:
            return resolve_source(uri, access)
        except TransientFetchError as error:
            if attempt == retries:
                raise FetchError(f"{error} (gave up after {attempt + 1} attempts)") from None
            sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")


@dataclass
class _Download:
    """The state of one download across attempts: bytes written, the running hash."""

    source: Source
    fd: int | None  # None: hash only, keep nothing (digest_source)
    limit: int | None
    chunk_size: int
    progress: Callable[[int, int | None], None] | None
    done: int = 0
    hasher: Any = field(default_factory=hashlib.sha256)  # hashlib's type is private

    def run(self, retries: int, backoff: float, sleep: Callable[[float], None]) -> int:
        """Read the whole artifact; returns the number of attempts it took."""
        attempts = 0
        failures = 0  # since the last byte arrived
        while True:
            attempts += 1
            before = self.done
            try:
                self._attempt()
                return attempts
            except TransientFetchError as error:
                if self.done > before:
                    failures = 0
                if failures >= retries:
                    raise FetchError(f"{error} (gave up after {attempts} attempts)") from None
                sleep(backoff * 2**failures)
                failures += 1

    def _attempt(self) -> None:
        opened = self.source.open(self.done)
        try:
            if opened.start != self.done:
                if opened.start != 0:
                    raise FetchError(
                        f"{self.source.description} resumed at byte {opened.start}, not {self.done}"
                    )
                self._restart()
            if self.limit is not None and opened.total is not None and opened.total > self.limit:
                raise SizeLimitError(
                    f"{self.source.description} is {opened.total} bytes, over the limit of "
                    f"{self.limit} bytes"
                )
            self._copy(opened)
        finally:
            close_quietly(opened.stream)

    def _restart(self) -> None:
        """The source cannot resume: throw away what was written and hash from byte 0."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
        self.hasher = hashlib.sha256()
        self.done = 0

    def _copy(self, opened: Opened) -> None:
        description = self.source.description
        read = opened.stream.readinto
        with _HashAndWrite(self.hasher, self.fd, self.chunk_size) as sink:
            while True:
                view = sink.free_buffer()
                try:
                    count = read(view)
                except (OSError, http.client.HTTPException) as error:  # e.g. IncompleteRead
                    raise TransientFetchError(
                        f"reading {description} failed after {self.done} bytes: {error}"
                    ) from None
                if not count:
                    break
                if self.limit is not None and self.done + count > self.limit:
                    raise SizeLimitError(
                        f"{description} is larger than the limit of {self.limit} bytes; "
                        "stopped reading"
                    )
                sink.submit(view, count)
                self.done += count
                if self.progress is not None:
                    self.progress(self.done, opened.total)
        if opened.total is not None and self.done != opened.total:
            raise TransientFetchError(
                f"{description} ended after {self.done} of {opened.total} announced bytes"
            )


class _HashAndWrite:
    """Hashes and writes chunks on a thread of its own while the caller reads the next one.

    Two buffers of `chunk_size` go back and forth: the caller fills one (a socket read,
    TLS decryption) while this thread hashes and writes the other; hashlib and os.write
    release the GIL, so the two overlap on two cores. Memory stays two buffers, whatever
    the size. Leaving the `with` block waits until every submitted chunk is hashed and
    written, so a retry resumes after exactly those bytes, and raises what the thread
    raised (a full disk, say).
    """

    BUFFERS = 2

    def __init__(self, hasher: Any, fd: int | None, chunk_size: int) -> None:
        self._hasher = hasher
        self._fd = fd
        self._free: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        for _ in range(self.BUFFERS):
            self._free.put(memoryview(bytearray(chunk_size)))
        self._todo: queue.SimpleQueue[tuple[memoryview, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fetch-hash-write", daemon=True)

    def __enter__(self) -> _HashAndWrite:
        self._thread.start()
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._todo.put(None)
        self._thread.join()
        if self._error is not None:
            # Even when the read failed too (a transient error the caller would retry by
            # resuming after every submitted byte): bytes hashed but not written must never
            # be resumed over, so the write's failure wins.
            raise self._error

    def free_buffer(self) -> memoryview:
        """A buffer to read into (waits while both are in use); raises the thread's error."""
        view = self._free.get()
        if self._error is not None:
            raise self._error
        return view

    def submit(self, view: memoryview, count: int) -> None:
        self._todo.put((view, count))

    def _work(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            view, count = item
            if self._error is None:
                try:
                    chunk = view[:count]
                    self._hasher.update(chunk)  # releases the GIL for large buffers
                    if self._fd is not None:
                        _write_all(self._fd, chunk)
                        _start_writeback(self._fd, count)
                except BaseException as error:  # raised in the reading thread
                    self._error = error
            self._free.put(view)  # after an error too: the reader must not wait forever


def _start_writeback(fd: int, count: int) -> None:
    """Start writing the `count` bytes just written to disk, without waiting (Linux
    sync_file_range(SYNC_FILE_RANGE_WRITE); elsewhere nothing). The fsync before the rename
    still makes the file durable; it only no longer has the whole file left to write: for
    1 GiB, a third of a second less at the end. Failures are ignored, as for a hint."""
    function = _sync_file_range()
    if function is not None:
        end = os.lseek(fd, 0, os.SEEK_CUR)
        function(fd, end - count, count, _SYNC_FILE_RANGE_WRITE)


_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


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
