"""Who may sequence a SQLite ledger: a Kubernetes Lease (coordination.k8s.io/v1).

Several `modeltrust ledger serve` processes may share one SQLite file (one volume); the
one holding the Lease sequences, the others wait as standbys. The Lease is the
authority; the store's writer epoch (bumped in a write transaction when a writer opens
the store, checked in every append transaction) fences the storage itself.

Plain HTTP through aiohttp, as the TokenReview client (auth.py): the chain package does
not depend on the Kubernetes client library.

Timing, for a lease of ``D`` seconds (``leaseDurationSeconds``):

- The holder renews every ``D/3``. Its lease is *valid* until ``t_send + D - margin``
  by its own clock, where ``t_send`` is when it sent the last renewal the API server
  accepted and ``margin = D/5``. The sequencer checks this (:meth:`LeaseElector.fence`)
  before it signs a checkpoint and again before it acknowledges an append.
- A standby never trusts another process's clock: it notes when it first saw the
  Lease's current ``resourceVersion`` and takes the Lease over only once that version
  has stayed unchanged for ``D`` seconds by its own clock (as client-go's leader
  election does), with an update conditional on that ``resourceVersion``. The old
  holder sent that version's renewal before the standby first saw it, so its lease
  ended by its own clock at least ``margin`` seconds before the takeover.
- Clocks: ``CLOCK_BOOTTIME`` where the system has it (it keeps counting while the
  machine is suspended), else the monotonic clock. A process stopped with SIGSTOP sees
  the time it was stopped for, and finds its lease expired when it resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from modeltrust.chain.errors import ChainError, ConfigError

log = logging.getLogger("modeltrust.ledger.lease")

# Failover after a writer dies is at most this, plus two looks of the standby (0.5 s
# each), plus its start (store open, audit): p99 <= 15 s (docs/ledger.md, section 10).
DEFAULT_LEASE_SECONDS = 8
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class LeaseError(ChainError):
    """The writer Lease could not be read, taken or kept (the API answered an error, or
    could not be reached: ``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LeaseLostError(LeaseError):
    """This process no longer holds the writer Lease: it must not sign or acknowledge."""


def lease_clock() -> float:
    """Seconds on a clock that never goes back and counts time the process was stopped."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        return time.clock_gettime(boottime)
    return time.monotonic()


def default_identity() -> str:
    """``<pod or host name>/<pid>``: unique per process, readable in `kubectl get lease`."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}/{os.getpid()}"


@dataclass(frozen=True)
class KubeAPIConfig:
    """How to reach the Kubernetes API: in-cluster, or what a kubeconfig names."""

    server: str  # https://host:port
    ca_file: Path | None = None
    token_file: Path | None = None  # re-read on every request: projected tokens rotate
    token: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout_seconds: float = 5.0

    @classmethod
    def in_cluster(cls) -> KubeAPIConfig:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError(
                "not in a cluster (KUBERNETES_SERVICE_HOST unset): set KUBECONFIG to reach "
                "the API server that holds the writer Lease"
            )
        if ":" in host:
            host = f"[{host}]"
        return cls(
            server=f"https://{host}:{port}",
            ca_file=SERVICE_ACCOUNT / "ca.crt",
            token_file=SERVICE_ACCOUNT / "token",
        )

    def in_cluster_namespace(self) -> str | None:
        path = SERVICE_ACCOUNT / "namespace"
        return path.read_text().strip() if path.is_file() else None


@dataclass(frozen=True)
class LeaseConfig:
    """A writer Lease: ``namespace/name`` on ``api``, held as ``identity``."""

    api: KubeAPIConfig
    namespace: str
    name: str
    identity: str = field(default_factory=default_identity)
    duration: int = DEFAULT_LEASE_SECONDS  # leaseDurationSeconds

    def __post_init__(self) -> None:
        if self.duration < 3:
            raise ConfigError(f"the writer Lease must last at least 3 s, not {self.duration}")
        if not self.name or not self.namespace:
            raise ConfigError("the writer Lease needs a name and a namespace")

    @property
    def renew_every(self) -> float:
        return self.duration / 3

    @property
    def margin(self) -> float:
        """How long before a standby could take over this holder stops trusting its lease."""
        return self.duration / 5

    @property
    def retry_every(self) -> float:
        """How often a standby looks at the Lease."""
        return max(0.2, min(0.5, self.duration / 10))

    @property
    def where(self) -> str:
        return f"Lease {self.namespace}/{self.name}"


def _micro_time() -> str:
    """A MicroTime: RFC 3339 UTC with microseconds (what the API stores in renewTime)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    """Take the writer Lease (``await acquire()``: a standby waits here), then keep it
    (a renewal task) until :meth:`release`. :meth:`fence` says whether this process may
    sign and acknowledge right now; once it has said no, it never says yes again."""

    def __init__(self, config: LeaseConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._valid_until = 0.0  # lease_clock(); 0: not held
        self._lost: str | None = None
        self._resource_version: str | None = None
        self._lease: dict[str, Any] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.acquired_at: float | None = None  # lease_clock() when this process took it

    # -- what the sequencer asks ------------------------------------------------------------

    def fence(self) -> str | None:
        """Why this process may not sign or acknowledge now (None: it holds the Lease).

        No I/O, safe from any thread: compares the lease's end by this process's own
        clock. Once it answers with a reason it keeps answering so (no second term)."""
        if self._lost is not None:
            return self._lost
        if self._valid_until == 0.0:
            return f"this process does not hold the writer {self.config.where}"
        now = lease_clock()
        if now >= self._valid_until:
            self._lost = (
                f"the writer {self.config.where} of {self.config.identity} expired "
                f"{now - self._valid_until:.1f} s ago by its own clock (not renewed in time: "
                "paused, or the API server unreachable); another writer may hold it now, so "
                "this process never signs or acknowledges again"
            )
            return self._lost
        return None

    @property
    def holding(self) -> bool:
        return self.fence() is None

    # -- taking the Lease ------------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait until this process holds the Lease (a standby waits here)."""
        cfg = self.config
        observed: tuple[str, float] | None = None  # (resourceVersion, first seen at)
        last_report = 0.0
        while True:
            sent = lease_clock()
            try:
                lease = await self._get()
                seen_at = lease_clock()  # after the answer: the later, the safer
                if lease is None:
                    if await self._create(sent):
                        break
                    continue
                spec = lease.get("spec") or {}
                holder = spec.get("holderIdentity") or ""
                version = str(lease["metadata"]["resourceVersion"])
                if observed is None or observed[0] != version:
                    observed = (version, seen_at)
                duration = int(spec.get("leaseDurationSeconds") or cfg.duration)
                if holder == cfg.identity:
                    # Ours from an earlier term of this very process: take it as new.
                    expired = True
                else:
                    expired = not holder or lease_clock() - observed[1] >= duration
                if expired and await self._take_over(lease, sent):
                    break
                if lease_clock() - last_report >= 30:
                    last_report = lease_clock()
                    log.info(
                        "standby: waiting for the writer %s, held by %s (lease %d s)",
                        cfg.where,
                        holder or "nobody",
                        duration,
                    )
            except LeaseError as exc:
                if exc.status in (401, 403):
                    raise  # not allowed: waiting will not help (docs/rbac.md)
                if lease_clock() - last_report >= 30:
                    last_report = lease_clock()
                    log.warning("standby: cannot read the writer %s: %s", cfg.where, exc)
            await asyncio.sleep(cfg.retry_every)
        self.acquired_at = lease_clock()
        log.info(
            "holding the writer %s as %s (lease %d s, renewed every %.1f s)",
            cfg.where,
            cfg.identity,
            cfg.duration,
            cfg.renew_every,
        )
        self._renewer = asyncio.create_task(self._renew_loop(), name="writer-lease-renewal")

    async def _create(self, sent: float) -> bool:
        cfg = self.config
        now = _micro_time()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": cfg.name, "namespace": cfg.namespace},
            "spec": {
                "holderIdentity": cfg.identity,
                "leaseDurationSeconds": cfg.duration,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        status, answer = await self._request("POST", self._collection_url(), body)
        if status == 409:
            return False  # another process created it first
        if status not in (200, 201):
            raise LeaseError(self._api_error("create", status, answer), status)
        self._held(answer, sent)
        return True

    async def _take_over(self, lease: dict[str, Any], sent: float) -> bool:
        cfg = self.config
        spec = dict(lease.get("spec") or {})
        now = _micro_time()
        previous = spec.get("holderIdentity") or ""
        if previous != cfg.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            holderIdentity=cfg.identity,
            leaseDurationSeconds=cfg.duration,
            acquireTime=now,
            renewTime=now,
        )
        body = {**lease, "spec": spec}
        status, answer = await self._request("PUT", self._url(), body)
        if status == 409:
            return False  # changed since we read it: someone renewed or took it
        if status != 200:
            raise LeaseError(self._api_error("take over", status, answer), status)
        log.info("took over the writer %s from %s", cfg.where, previous or "nobody")
        self._held(answer, sent)
        return True

    def _held(self, lease: dict[str, Any], sent: float) -> None:
        self._lease = lease
        self._resource_version = str(lease["metadata"]["resourceVersion"])
        if self._lost is None:
            self._valid_until = sent + self.config.duration - self.config.margin

    # -- keeping it ----------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        cfg = self.config
        while self.fence() is None:
            await asyncio.sleep(cfg.renew_every)
            if self.fence() is not None:
                break
            sent = lease_clock()
            try:
                await self._renew(sent)
            except LeaseLostError as exc:
                self._lost = str(exc)
            except LeaseError as exc:
                left = self._valid_until - lease_clock()
                log.warning(
                    "could not renew the writer %s (%s); %.1f s of lease left", cfg.where, exc, left
                )
        log.error("%s", self.fence())

    async def _renew(self, sent: float) -> None:
        cfg = self.config
        assert self._lease is not None
        spec = dict(self._lease.get("spec") or {})
        spec["renewTime"] = _micro_time()
        body = {**self._lease, "spec": spec}
        body["metadata"] = {**self._lease["metadata"], "resourceVersion": self._resource_version}
        status, answer = await self._request("PUT", self._url(), body)
        if status == 200:
            self._held(answer, sent)
            return
        if status == 409:
            current = await self._get()
            holder = ((current or {}).get("spec") or {}).get("holderIdentity")
            if current is not None and holder == cfg.identity:
                self._lease = current  # our own update raced a retry; renew it next time
                self._resource_version = str(current["metadata"]["resourceVersion"])
                return
            raise LeaseLostError(
                f"the writer {cfg.where} is held by {holder or 'nobody'} now, not "
                f"{cfg.identity}: this process never signs or acknowledges again"
            )
        if status == 404:
            raise LeaseLostError(f"the writer {cfg.where} was deleted; stepping down")
        raise LeaseError(self._api_error("renew", status, answer), status)

    async def release(self) -> None:
        """Stop renewing; if still held, hand the Lease back so a standby takes it at once."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        held = self.fence() is None
        self._lost = self._lost or f"released the writer {self.config.where}"
        if held and self._lease is not None:
            spec = dict(self._lease.get("spec") or {})
            spec.update(holderIdentity=None, leaseDurationSeconds=1, renewTime=_micro_time())
            body = {**self._lease, "spec": spec}
            body["metadata"] = {
                **self._lease["metadata"],
                "resourceVersion": self._resource_version,
            }
            try:
                status, _ = await self._request("PUT", self._url(), body)
                if status == 200:
                    log.info("released the writer %s", self.config.where)
            except LeaseError as exc:
                log.warning("could not release the writer %s: %s", self.config.where, exc)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- HTTP ---------------------------------------------------------------------------

    def _collection_url(self) -> str:
        cfg = self.config
        base = cfg.api.server.rstrip("/")
        return f"{base}/apis/coordination.k8s.io/v1/namespaces/{cfg.namespace}/leases"

    def _url(self) -> str:
        return f"{self._collection_url()}/{self.config.name}"

    async def _get(self) -> dict[str, Any] | None:
        status, answer = await self._request("GET", self._url(), None)
        if status == 404:
            return None
        if status != 200:
            raise LeaseError(self._api_error("read", status, answer), status)
        return answer

    def _api_error(self, what: str, status: int, answer: dict[str, Any]) -> str:
        message = answer.get("message") or answer.get("reason") or ""
        hint = ""
        if status in (401, 403):
            hint = (
                " (the ledger's service account needs get, create and update on "
                f"leases in namespace {self.config.namespace}: docs/rbac.md)"
            )
        return f"cannot {what} the writer {self.config.where}: HTTP {status} {message}{hint}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            api = self.config.api
            ctx = ssl.create_default_context(cafile=str(api.ca_file) if api.ca_file else None)
            if api.client_cert is not None:
                ctx.load_cert_chain(
                    str(api.client_cert), str(api.client_key) if api.client_key else None
                )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx),
                timeout=aiohttp.ClientTimeout(total=api.timeout_seconds),
            )
        return self._session

    async def _request(
        self, method: str, url: str, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any]]:
        api = self.config.api
        headers = {"Accept": "application/json"}
        try:
            token = api.token
            if api.token_file is not None:
                token = api.token_file.read_text().strip()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            async with self._client().request(method, url, json=body, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                return resp.status, answer if isinstance(answer, dict) else {}
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise LeaseError(f"the API server at {api.server} did not answer: {exc!r}") from exc
