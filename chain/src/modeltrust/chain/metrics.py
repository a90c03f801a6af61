"""Prometheus metrics of the ledger, on prometheus_client (docs/ledger.md, "Metrics").

Each ledger has its own registry (never the process-global one, so two ledgers in one
test process do not share counts) with the process and platform collectors, the HTTP
request counter and latency histogram, and the ledger's own counters, histograms and
gauges.

HTTP requests are labelled by route *template* (``/v1/entries/{index}``, never the raw
path: the label set stays bounded whatever clients send), method and status; a request
that matched no route (404, or 405 for a method the path does not take) is labelled
``route="unmatched"``, and a method other than the standard ones ``method="other"``. The
label children are looked up once per label combination and cached, so the hot path pays
one dictionary lookup and the client library's increments, not its label validation.

The sequencer thread updates the append metrics once per block; the event loop updates
the HTTP ones per request. prometheus_client's values are thread-safe.
"""

from __future__ import annotations

import time
from collections import Counter as _Tally
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector

from modeltrust.chain.version import __version__

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"


class _Labelled(Protocol):
    @property
    def lookup_keys(self) -> tuple[tuple[str, str], ...]: ...


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def add_process_metrics(registry: CollectorRegistry, component: str) -> None:
    """The process, platform and GC collectors and `modeltrust_<component>_build{version}`:
    what every modeltrust process exports beside its own metrics."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Info(f"modeltrust_{component}_build", f"The {component}'s version.", registry=registry).info(
        {"version": __version__}
    )


class HttpMetrics:
    """A component's registry with the process metrics and its HTTP request counter and
    latency histogram (``modeltrust_<component>_http_*``); what the HTTP API needs."""

    def __init__(self, component: str) -> None:
        r = self.registry = CollectorRegistry()
        add_process_metrics(r, component)
        self.http_requests = Counter(
            f"modeltrust_{component}_http_requests",
            "HTTP requests by route template, method and response status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            f"modeltrust_{component}_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "other"  # the method is the client's choice: keep the label set bounded
        key = (route, method, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self.http_requests.labels(route, method, str(status)),
                self.http_seconds.labels(route, method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class LedgerMetrics(HttpMetrics):
    """Everything the ledger's /metrics shows; ``render()`` is the exposition text."""

    def __init__(self) -> None:
        super().__init__("ledger")
        r = self.registry
        self.appends = Counter(
            "modeltrust_ledger_appends", "Entries appended, by kind.", ["kind"], registry=r
        )
        self.rejections = Counter(
            "modeltrust_ledger_append_rejections",
            "Submissions refused by the sequencer (replays, idempotency conflicts).",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "modeltrust_ledger_batch_entries",
            "New entries per block (group commit size).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "modeltrust_ledger_commit_seconds",
            "Time to validate, sign and durably write one block.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.append_latency_seconds = Histogram(
            "modeltrust_ledger_append_latency_seconds",
            "Time from queueing a request's entries to their signed checkpoint.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tree_size = Gauge(
            "modeltrust_ledger_tree_size", "Entries in the log (at the latest checkpoint).",
            registry=r,
        )  # fmt: skip
        self.block_height = Gauge(
            "modeltrust_ledger_block_height",
            "Height of the latest block (-1 before the first block).",
            registry=r,
        )
        self.block_height.set(-1)
        self.last_checkpoint = Gauge(
            "modeltrust_ledger_last_checkpoint_timestamp_seconds",
            "Unix time the latest checkpoint was signed (its block's time; 0 before the first).",
            registry=r,
        )
        self.sequencer_up = Gauge(
            "modeltrust_ledger_sequencer_up",
            "1 while the sequencer runs and can append; 0 before start or after a failure.",
            registry=r,
        )
        self.cosigned_tree_size = Gauge(
            "modeltrust_ledger_cosigned_tree_size",
            "Entries at the checkpoint served to readers: the newest one offered to the "
            "witnesses (the signed tree size when the ledger has no witnesses).",
            registry=r,
        )
        self.witness_cosigned_at = Gauge(
            "modeltrust_ledger_witness_cosignature_timestamp_seconds",
            "Time in the newest cosignature each witness returned (0 before the first).",
            ["witness"],
            registry=r,
        )
        self.witness_round_seconds = Histogram(
            "modeltrust_ledger_witness_round_seconds",
            "Time to have a checkpoint cosigned: every witness answered or timed out.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.witness_requests = Counter(
            "modeltrust_ledger_witness_requests",
            "add-checkpoint requests to witnesses by outcome (cosigned, conflict, refused, "
            "unreachable, invalid).",
            ["witness", "outcome"],
            registry=r,
        )

    # -- the sequencer -------------------------------------------------------------------------

    def appended(self, entries: Iterable[_Labelled]) -> None:
        kinds = _Tally(e.lookup_keys[0][0].split(".", 1)[0] for e in entries if e.lookup_keys)
        for kind, count in kinds.items():
            self.appends.labels(kind).inc(count)

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def checkpointed(self, size: int, height: int, signed_at: float | None = None) -> None:
        """A block is durable (or was loaded at start): the ledger's state gauges."""
        self.tree_size.set(size)
        self.block_height.set(height)
        self.last_checkpoint.set(time.time() if signed_at is None else signed_at)
