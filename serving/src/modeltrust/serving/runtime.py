"""Start the model server: verify and load the model, then serve it until a signal."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from modeltrust.serving.metrics import Metrics
from modeltrust.serving.model import ServedModel, SessionSettings
from modeltrust.serving.oip import InferenceApp
from modeltrust.serving.server import HttpServer, ServerSettings, install_fast_event_loop, serve

log = logging.getLogger(__name__)


def server_version() -> str:
    try:
        return version("modeltrust-serving")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def forbid_memory_access() -> bool:
    """Make this process non-dumpable (Linux prctl PR_SET_DUMPABLE 0): another process of
    the same uid (a shell someone got with `kubectl exec` into the model server's
    container, which drops every capability) can then neither ptrace it nor read or write
    /proc/PID/mem, so it cannot change the verified model or the code serving it in
    memory. Returns whether it took effect (False off Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
        return False
    return True


def build_app(model: ServedModel) -> InferenceApp:
    metrics = Metrics()
    metrics.add_model(model.name, model.version, model.digest)
    return InferenceApp(model, metrics, server_version())


def run(
    model_path: Path,
    *,
    name: str,
    digest: str,
    model_version: str = "1",
    session: SessionSettings | None = None,
    settings: ServerSettings | None = None,
    on_started: Callable[[HttpServer], None] | None = None,
) -> None:
    """Verify `model_path` against `digest`, load it, and serve until SIGTERM/SIGINT.

    Raises DigestMismatchError or ModelLoadError before binding any port.
    """
    forbid_memory_access()  # before the model's bytes are in memory
    model = ServedModel.load(
        model_path, name=name, expected_digest=digest, version=model_version, settings=session
    )
    app = build_app(model)
    install_fast_event_loop()
    asyncio.run(serve(app, settings or ServerSettings(), on_started=on_started))
