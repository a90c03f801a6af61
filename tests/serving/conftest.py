"""Shared fixtures: real ONNX models on disk and real model servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import onnx_models
from serving.helpers import RunningServer, running_server


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def mnist_path(models_dir: Path) -> Path:
    return onnx_models.mnist_mlp(models_dir / "mnist.onnx")


@pytest.fixture(scope="session")
def multi_io_path(models_dir: Path) -> Path:
    return onnx_models.multi_io_model(models_dir / "multi_io.onnx")


@pytest.fixture(scope="module")
def mnist_server(mnist_path: Path) -> Iterator[RunningServer]:
    with running_server(mnist_path, "mnist") as server:
        yield server


@pytest.fixture(scope="module")
def multi_io_server(multi_io_path: Path) -> Iterator[RunningServer]:
    with running_server(multi_io_path, "multi") as server:
        yield server
