"""Prometheus metrics of the ledger, in the text exposition format (no client library needed).

Counters and histograms are updated from the sequencer thread and the event loop;
each update is a few integer additions under the GIL, which keeps them consistent
enough for monitoring without locks on the hot path.
"""

from __future__ import annotations

import bisect
from collections import Counter as _Tally
from collections.abc import Iterable, Sequence
from typing import Protocol


class _Labelled(Protocol):
    @property
    def lookup_keys(self) -> tuple[tuple[str, str], ...]: ...


class Counter:
    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name, self.help, self.label = name, help_text, label
        self._values: _Tally[str] = _Tally()

    def inc(self, amount: int = 1, label_value: str = "") -> None:
        self._values[label_value] += amount

    def value(self, label_value: str = "") -> int:
        return self._values[label_value]

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if self.label is None:
            lines.append(f"{self.name} {self._values['']}")
        else:
            for value, count in sorted(self._values.items()):
                lines.append(f'{self.name}{{{self.label}="{_escape(value)}"}} {count}')
        return lines


class Gauge:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._value = 0

    def set(self, value: int) -> None:
        self._value = value

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {self._value}",
        ]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help_text
        self._bounds = list(buckets)
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip(self._bounds, self._counts, strict=False):
            running += count
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self._count}')
        lines.append(f"{self.name}_sum {self._sum:.6f}")
        lines.append(f"{self.name}_count {self._count}")
        return lines


_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LedgerMetrics:
    """Everything /metrics shows."""

    def __init__(self) -> None:
        self.appends = Counter(
            "modeltrust_ledger_appends_total", "Entries appended, by kind.", "kind"
        )
        self.rejections = Counter(
            "modeltrust_ledger_append_rejections_total",
            "Submissions refused by the sequencer (replays, idempotency conflicts).",
            "reason",
        )
        self.http_requests = Counter(
            "modeltrust_ledger_http_requests_total", "HTTP requests by response status.", "status"
        )
        self.batch_size = Histogram(
            "modeltrust_ledger_batch_entries",
            "New entries per block (group commit size).",
            (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
        )
        self.commit_seconds = Histogram(
            "modeltrust_ledger_commit_seconds",
            "Time to validate, sign and durably write one block.",
            _LATENCY_BUCKETS,
        )
        self.append_latency_seconds = Histogram(
            "modeltrust_ledger_append_latency_seconds",
            "Time from queueing a request's entries to their signed checkpoint.",
            _LATENCY_BUCKETS,
        )
        self.tree_size = Gauge("modeltrust_ledger_tree_size", "Entries in the log.")

    def appended(self, entries: Iterable[_Labelled]) -> None:
        kinds = _Tally(e.lookup_keys[0][0].split(".", 1)[0] for e in entries if e.lookup_keys)
        for kind, count in kinds.items():
            self.appends.inc(count, kind)

    def rejected(self, reason: str) -> None:
        self.rejections.inc(1, reason)

    def render(self) -> str:
        parts = (
            self.appends,
            self.rejections,
            self.http_requests,
            self.batch_size,
            self.commit_seconds,
            self.append_latency_seconds,
            self.tree_size,
        )
        return "\n".join(line for p in parts for line in p.render()) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
