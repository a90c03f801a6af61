"""The operator's log lines: a timestamp, the level and the object on every line.

`--log-format plain` prints

    2026-12-02T18:40:01.123Z WARNING [team-a/resnet] modeltrust.operator.reverify: ...

and `--log-format json` one JSON object per line with `timestamp`, `severity` and
`object` ({"namespace", "name"}). The object is the one the handler that logged is working
on: kopf's own per-object records carry it (`k8s_ref`), and the operator's handlers set
it for everything logged while they run (`about`), including the modules that log through
their own `logging.getLogger(__name__)`. A line about no object says `[-]`.

Work handed to a thread pool does not inherit the object (run_in_executor copies no
context); those lines name their object in the message, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from typing import Any

_OBJECT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "modeltrust_log_object", default=None
)

PLAIN_FORMAT = "%(asctime)s %(levelname)s [%(object)s] %(name)s: %(message)s"


@contextlib.contextmanager
def about(namespace: str | None, name: str | None) -> Iterator[None]:
    """Everything logged in this block (and in tasks it starts) names this object."""
    token = _OBJECT.set({"namespace": namespace or "", "name": name or ""})
    try:
        yield
    finally:
        _OBJECT.reset(token)


def object_of(record: logging.LogRecord) -> str:
    ref: Any = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict) or not ref.get("name"):
        return "-"
    namespace, name = ref.get("namespace") or "", ref["name"]
    return f"{namespace}/{name}" if namespace else str(name)


class ObjectFilter(logging.Filter):
    """Give a record the current object unless kopf already did, as `k8s_ref`: what kopf's
    JSON formatter turns into `object`, and what PlainFormatter prints."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "k8s_ref", None) is None:
            current = _OBJECT.get()
            if current is not None:
                record.k8s_ref = current
        return True


class PlainFormatter(logging.Formatter):
    """UTC ISO-8601 timestamps to the millisecond; a traceback's lines carry the same
    timestamp, level and object as the line they belong to, so `grep ns/name` finds them."""

    def __init__(self) -> None:
        super().__init__(PLAIN_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        where = object_of(record)
        record.object = where  # read by PLAIN_FORMAT
        text = super().format(record)
        if "\n" not in text:
            return text
        head = f"{self.formatTime(record)} {record.levelname} [{where}] "
        first, *rest = text.split("\n")
        return "\n".join([first, *(head + "| " + line for line in rest)])


def configure(log_format: str, *, verbose: bool) -> None:
    """kopf's logging set-up, then the operator's format and object filter on its handler."""
    import kopf

    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
    )
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ != "_KopfStreamHandler":
            continue
        handler.addFilter(ObjectFilter())
        if log_format != "json":
            handler.setFormatter(PlainFormatter())
    logging.getLogger("modeltrust").setLevel(logging.DEBUG if verbose else logging.INFO)
