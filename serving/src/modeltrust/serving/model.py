"""Load an ONNX model only if its bytes are the pinned ones, and describe its tensors.

The file is read once into memory, those exact bytes are hashed, and onnxruntime is
given the same bytes: nothing can swap the file between the check and the load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modeltrust.chain.digest import format_digest, parse_digest
from modeltrust.serving.errors import DigestMismatchError, ModelLoadError
from modeltrust.serving.tensors import BY_ONNX_TYPE, Datatype


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """An input or output as OIP metadata shows it; -1 marks a dynamic dimension."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    # The symbol of each dynamic dimension ("batch"), None where fixed or unnamed.
    # Inputs sharing a symbol must agree on its size.
    symbols: tuple[str | None, ...] = ()

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype.name, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """onnxruntime threading; 0 lets onnxruntime choose (one thread per core)."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0


def _spec(node: Any, role: str) -> TensorSpec:
    datatype = BY_ONNX_TYPE.get(node.type)
    if datatype is None:
        raise ModelLoadError(
            f"model {role} {node.name!r} has type {node.type}, which the Open Inference "
            "Protocol cannot carry (supported: tensors of bool, integers, float16/32/64, string)"
        )
    # onnxruntime reports a dynamic dimension as a symbol name (str) or None.
    dims = node.shape or ()
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)
    symbols = tuple(d if isinstance(d, str) and d else None for d in dims)
    return TensorSpec(node.name, datatype, shape, symbols)


class ServedModel:
    """One verified model and its onnxruntime session."""

    def __init__(
        self,
        name: str,
        version: str,
        digest: str,
        session: ort.InferenceSession,
    ) -> None:
        self.name = name
        self.version = version
        self.digest = digest
        self.session = session
        self.inputs: tuple[TensorSpec, ...] = tuple(
            _spec(node, "input") for node in session.get_inputs()
        )
        self.outputs: tuple[TensorSpec, ...] = tuple(
            _spec(node, "output") for node in session.get_outputs()
        )
        self.input_by_name: dict[str, TensorSpec] = {spec.name: spec for spec in self.inputs}
        self.output_by_name: dict[str, TensorSpec] = {spec.name: spec for spec in self.outputs}
        self.output_names: list[str] = [spec.name for spec in self.outputs]
        symbols = [s for spec in self.inputs for s in set(spec.symbols) if s is not None]
        self.has_shared_symbols = len(symbols) != len(set(symbols))

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        name: str,
        expected_digest: str,
        version: str = "1",
        settings: SessionSettings | None = None,
    ) -> ServedModel:
        """Verify `path` against `expected_digest`, then load exactly those bytes.

        Raises DigestMismatchError (naming both digests) before onnxruntime ever sees
        the bytes, and ModelLoadError if onnxruntime cannot load them.
        """
        expected = parse_digest(expected_digest)
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise ModelLoadError(f"cannot read model file {path}: {error.strerror}") from None
        actual = hashlib.sha256(data).digest()
        if actual != expected:
            raise DigestMismatchError(str(path), format_digest(expected), format_digest(actual))
        settings = settings or SessionSettings()
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own unexported exception types
            raise ModelLoadError(f"onnxruntime cannot load {path}: {error}") from None
        return cls(name, version, format_digest(actual), session)

    def run(self, output_names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        outputs: list[np.ndarray] = self.session.run(output_names, feeds)
        return outputs

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }
