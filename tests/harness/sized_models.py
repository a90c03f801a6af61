"""Real ONNX models of a chosen file size, for benchmarks and size-sensitive tests.

`sized_mlp` writes an MNIST-shaped MLP (input "input" FP32 [batch, 784] -> "logits" FP32
[batch, 10]) whose hidden layer is wide enough that the file is about `size_bytes`.
Different seeds give different weights, so each seed is a distinct artifact with its own
digest (no cache can answer for another seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.onnx_models import MNIST_CLASSES, MNIST_FEATURES, build_model, mlp_graph, save_model

_FLOAT_BYTES = 4
# Per hidden unit: a column of w1, its bias, and a row of w2.
_BYTES_PER_HIDDEN = _FLOAT_BYTES * (MNIST_FEATURES + 1 + MNIST_CLASSES)


def hidden_units_for(size_bytes: int) -> int:
    """Hidden width whose weights take about `size_bytes` (the graph itself is ~1 KB)."""
    if size_bytes < _BYTES_PER_HIDDEN:
        raise ValueError(f"a sized MLP needs at least {_BYTES_PER_HIDDEN} bytes, got {size_bytes}")
    return size_bytes // _BYTES_PER_HIDDEN


def sized_mlp(path: Path, *, size_bytes: int = 10 << 20, seed: int = 0) -> Path:
    """relu(input @ w1 + b1) @ w2 + b2 with float32 weights, about `size_bytes` on disk."""
    hidden = hidden_units_for(size_bytes)
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((MNIST_FEATURES, hidden), dtype=np.float32) * 0.05,
        "b1": rng.standard_normal(hidden, dtype=np.float32) * 0.01,
        "w2": rng.standard_normal((hidden, MNIST_CLASSES), dtype=np.float32) * 0.05,
        "b2": rng.standard_normal(MNIST_CLASSES, dtype=np.float32) * 0.01,
    }
    return save_model(build_model(mlp_graph(weights, f"sized_mlp_{hidden}")), path)
