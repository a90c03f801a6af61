"""Fetch the pinned artifact and load it once, producing evidence for `decide`.

Fetching reuses the serving runtime's streaming fetch (one pass, flat memory, size cap,
SHA-256 while downloading, nothing kept on mismatch), so the operator and the pod's init
step accept exactly the same bytes. Loading runs in a child process (onnx_check) with an
address-space limit and a timeout.

Local paths (file:// or absolute) are read only under a configured root
(MODELTRUST_LOCAL_MODEL_ROOT, `local_root` here), regular files only, no symlink below
the root: otherwise anyone who may create a ModelDeployment could make the operator hash
(and report the digest of) any file it can read, or block a worker on a FIFO. Without a
root, local paths are refused; "/" allows them all, deliberately.

No claim without a check: a decision may say "the artifact matches the pin" only about
bytes read for it. What the URL serves can change at any time, so by default
(`recheck_window` 0, MODELTRUST_ARTIFACT_RECHECK_WINDOW) every check reads the bytes again.
With a window, a success is reused for at most that many seconds, and only by the same
ModelDeployment (the cache key is (owner uid, uri, digest)): two ModelDeployments never
share a success, and every result says when its bytes were read (`read_at`), which the
audit entry records. Failures (network, 404, mismatch, crash) are never cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from modeltrust.operator.decisions import ArtifactResult, LoadResult, TensorInfo
from modeltrust.operator.errors import SpecError
from modeltrust.operator.types import parse_duration
from modeltrust.serving.credentials import SourceCredentials, redact
from modeltrust.serving.errors import DigestMismatchError, FetchError, ServingError
from modeltrust.serving.fetch import fetch_artifact
from modeltrust.serving.sources import S3Options, SourceAccess

MODEL_FILE = "model.onnx"
# onnxruntime maps far more address space than it touches (thread arenas, allocator
# reservations); the cap stops runaway models, not honest ones.
BASE_MEMORY = 3 << 30
MEMORY_PER_MODEL_BYTE = 4


@dataclass(frozen=True)
class ArtifactEvidence:
    artifact: ArtifactResult
    load: LoadResult | None
    read_at: datetime | None = None  # when the bytes were read (None: nothing was read)
    # The source by digest (an oci:// tag resolved): what the pod fetches. None: not read.
    source_uri: str | None = None


def parse_window(text: str) -> float:
    """MODELTRUST_ARTIFACT_RECHECK_WINDOW: seconds ("300") or a duration ("5m", "1h");
    empty means 0 (always re-read)."""
    text = text.strip()
    if not text:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text, "MODELTRUST_ARTIFACT_RECHECK_WINDOW")
        except SpecError as exc:
            raise ValueError(str(exc)) from None
    if not 0 <= seconds <= 24 * 3600:
        raise ValueError("MODELTRUST_ARTIFACT_RECHECK_WINDOW must be between 0 and 24h")
    return seconds


def _load_result(payload: dict[str, object]) -> LoadResult:
    if not payload.get("ok"):
        return LoadResult(ok=False, error=str(payload.get("error") or "unknown load failure"))

    def tensors(key: str) -> tuple[TensorInfo, ...]:
        items = payload.get(key)
        if not isinstance(items, list):
            return ()
        return tuple(
            TensorInfo(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"]))
            for t in items
        )

    return LoadResult(ok=True, inputs=tensors("inputs"), outputs=tensors("outputs"))


async def load_in_subprocess(
    path: Path, digest: str, *, size: int, limit_seconds: float = 120.0
) -> LoadResult:
    """Run onnx_check on `path` in a child process; a crash or timeout is a failed load."""
    max_memory = BASE_MEMORY + MEMORY_PER_MODEL_BYTE * size
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modeltrust.operator.onnx_check", str(path),
        "--digest", digest, "--max-memory", str(max_memory),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), limit_seconds)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return LoadResult(
            ok=False, error=f"loading the model took longer than {limit_seconds:.0f}s"
        )
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        return LoadResult(
            ok=False,
            error=f"the load check process died (exit {proc.returncode}): {' '.join(tail)}",
        )
    try:
        payload = json.loads(stdout)
    except ValueError:
        return LoadResult(ok=False, error="the load check process printed no result")
    return _load_result(payload)


_Key = tuple[str, str, str]  # (owner uid, uri, digest)


class ArtifactChecker:
    """Fetches and load-checks artifacts; a success is reused only by the same owner and
    within `recheck_window` seconds (0: never)."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        cache_size: int = 256,
        fetch_timeout: float = 60.0,
        load_timeout: float = 120.0,
        ca_file: Path | None = None,
        local_root: Path | None = None,
        recheck_window: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        max_concurrent: int = 4,
    ) -> None:
        self.workdir = workdir
        self.local_root = local_root
        self.fetch_timeout = fetch_timeout
        self.load_timeout = load_timeout
        self.ca_file = ca_file
        self.recheck_window = recheck_window
        self._clock = clock
        self._ok: OrderedDict[_Key, tuple[float, ArtifactEvidence]] = OrderedDict()
        self._cache_size = cache_size
        # One download+load per (owner, uri, digest) at a time: a retry of one decision
        # must not fetch while the previous try still does.
        self._locks: dict[_Key, asyncio.Lock] = {}
        # Every decision reads its bytes: 100 ModelDeployments of one model are 100 downloads
        # and onnxruntime loads, run a few at a time rather than all at once.
        self._slots = asyncio.Semaphore(max_concurrent)
        self.fetches = 0  # number of real downloads, for metrics and tests

    def _remember(self, key: _Key, evidence: ArtifactEvidence) -> None:
        if self.recheck_window <= 0 or not key[0]:
            return
        self._ok[key] = (self._clock(), evidence)
        self._ok.move_to_end(key)
        while len(self._ok) > self._cache_size:
            self._ok.popitem(last=False)

    def _cached(self, key: _Key, max_size: int) -> ArtifactEvidence | None:
        found = self._ok.get(key)
        if found is None:
            return None
        read, cached = found
        if self._clock() - read > self.recheck_window:
            del self._ok[key]
            return None
        # A cached success still obeys the current policy's size cap.
        if cached.artifact.size is None or cached.artifact.size > max_size:
            return None
        self._ok.move_to_end(key)
        return cached

    async def check(
        self,
        uri: str,
        digest: str,
        *,
        max_size: int,
        owner: str = "",
        credentials: SourceCredentials | None = None,
        s3: S3Options | None = None,
    ) -> ArtifactEvidence:
        """Fetch, hash and load the artifact for the ModelDeployment with uid `owner` (no
        owner: never reused), with the source credentials and S3 options it names."""
        key = (owner, uri, digest)
        cached = self._cached(key, max_size)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._cached(key, max_size)
            if cached is not None:
                return cached
            async with self._slots:
                access = SourceAccess(
                    credentials=credentials,
                    ca_file=self.ca_file,
                    timeout=self.fetch_timeout,
                    local_root=self.local_root,
                    s3=s3 or S3Options(),
                )
                evidence = await self._check_uncached(uri, digest, max_size=max_size, access=access)
            if evidence.load is not None and evidence.load.ok:
                self._remember(key, evidence)
        if len(self._locks) > 4 * self._cache_size:
            for stale in [k for k, v in self._locks.items() if not v.locked()]:
                del self._locks[stale]
        return evidence

    def _local_refusal(self, uri: str) -> str | None:
        network = ("http", "https", "oci", "s3")
        if urlsplit(uri).scheme in network or self.local_root is not None:
            return None
        return (
            f"local model path {uri} refused: the operator reads local files only under "
            "MODELTRUST_LOCAL_MODEL_ROOT, which is not set; serve the model over https, or "
            "set that variable to the directory holding the models"
        )

    async def _check_uncached(
        self, uri: str, digest: str, *, max_size: int, access: SourceAccess
    ) -> ArtifactEvidence:
        refusal = self._local_refusal(uri)
        if refusal is not None:
            return ArtifactEvidence(ArtifactResult(error=refusal), None)
        tmp = Path(tempfile.mkdtemp(prefix="modeltrust-artifact-", dir=self.workdir))
        try:
            dest = tmp / MODEL_FILE
            self.fetches += 1
            try:
                fetched = await asyncio.to_thread(
                    fetch_artifact, uri, digest, dest, max_size=max_size, access=access
                )
            except DigestMismatchError as exc:
                return ArtifactEvidence(ArtifactResult(digest=exc.actual), None, datetime.now(UTC))
            except FetchError as exc:
                # Text a server or library wrote may quote what was sent: never a secret.
                message = redact(str(exc), access.credentials)
                return ArtifactEvidence(ArtifactResult(error=message), None)
            except (ServingError, ValueError, OSError) as exc:
                message = redact(f"fetching {uri} failed: {exc}", access.credentials)
                return ArtifactEvidence(ArtifactResult(error=message), None)
            read_at = datetime.now(UTC)
            artifact = ArtifactResult(digest=fetched.digest, size=fetched.size)
            load = await load_in_subprocess(
                dest, digest, size=fetched.size, limit_seconds=self.load_timeout
            )
            return ArtifactEvidence(artifact, load, read_at, fetched.pinned_uri)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
