"""Start the model server: verify and load the model, then serve it until a signal."""

from __future__ import annotations

import asyncio
import logging
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
    model = ServedModel.load(
        model_path, name=name, expected_digest=digest, version=model_version, settings=session
    )
    app = build_app(model)
    install_fast_event_loop()
    asyncio.run(serve(app, settings or ServerSettings(), on_started=on_started))
