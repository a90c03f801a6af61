"""Prometheus metrics of the model server, in the text exposition format 0.0.4.

Written by hand rather than with prometheus_client because observe() sits on the
request hot path: one dict lookup and one bisect, called only from the event-loop
thread, so no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Seconds; fine-grained below 10 ms where a small model's latency lives.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class _Series:
    count: int = 0
    total: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Request counts and latencies by (model, endpoint, status), plus model info."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, int], _Series] = {}
        self._models: list[tuple[str, str, str]] = []
        self.in_flight = 0

    def add_model(self, name: str, version: str, digest: str) -> None:
        self._models.append((name, version, digest))

    def observe(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        key = (model, endpoint, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        series.count += 1
        series.total += seconds
        series.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def count(self, model: str, endpoint: str, status: int) -> int:
        series = self._series.get((model, endpoint, status))
        return 0 if series is None else series.count

    def render(self) -> bytes:
        lines = [
            "# HELP modeltrust_serving_model_info The model served and its verified digest.",
            "# TYPE modeltrust_serving_model_info gauge",
        ]
        for name, version, digest in self._models:
            lines.append(
                f'modeltrust_serving_model_info{{model="{_escape(name)}",'
                f'version="{_escape(version)}",digest="{_escape(digest)}"}} 1'
            )
        lines += [
            "# HELP modeltrust_serving_requests_in_flight Requests received and not yet answered.",
            "# TYPE modeltrust_serving_requests_in_flight gauge",
            f"modeltrust_serving_requests_in_flight {self.in_flight}",
            "# HELP modeltrust_serving_requests_total HTTP requests answered, by model, "
            "endpoint and status code.",
            "# TYPE modeltrust_serving_requests_total counter",
        ]
        ordered = sorted(self._series.items())
        for (model, endpoint, status), series in ordered:
            lines.append(
                f"modeltrust_serving_requests_total{{{_labels(model, endpoint, status)}}} "
                f"{series.count}"
            )
        lines += [
            "# HELP modeltrust_serving_request_duration_seconds Time from a complete request "
            "to its response being handed to the socket.",
            "# TYPE modeltrust_serving_request_duration_seconds histogram",
        ]
        for (model, endpoint, status), series in ordered:
            labels = _labels(model, endpoint, status)
            cumulative = 0
            for bound, in_bucket in zip((*LATENCY_BUCKETS, None), series.buckets, strict=True):
                cumulative += in_bucket
                le = "+Inf" if bound is None else repr(bound)
                lines.append(
                    f'modeltrust_serving_request_duration_seconds_bucket{{{labels},le="{le}"}} '
                    f"{cumulative}"
                )
            lines.append(
                f"modeltrust_serving_request_duration_seconds_sum{{{labels}}} {series.total!r}"
            )
            lines.append(
                f"modeltrust_serving_request_duration_seconds_count{{{labels}}} {series.count}"
            )
        return ("\n".join(lines) + "\n").encode("utf-8")


def _labels(model: str, endpoint: str, status: int) -> str:
    return f'model="{_escape(model)}",endpoint="{endpoint}",status="{status}"'
