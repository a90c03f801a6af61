"""Small, real ONNX models built with onnx.helper, for tests and benchmarks.

Every builder writes a model to `path` and returns `path`, so a test reads as
`session = ort.InferenceSession(mnist_mlp(tmp_path / "m.onnx"))`. The models are
deterministic (fixed seeds), so the same call always writes the same bytes and a
test can pin their digest. Datatype names are the Open Inference Protocol ones
(FP32, INT64, BYTES, ...), the names users see on the wire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Opset and IR version every current onnxruntime loads (1.16 and newer).
OPSET = 17
IR_VERSION = 8

MNIST_INPUT = "input"
MNIST_OUTPUT = "logits"
MNIST_FEATURES = 784
MNIST_HIDDEN = 128
MNIST_CLASSES = 10

# OIP datatype -> ONNX element type. Every OIP v2 datatype an ONNX model can take.
ONNX_ELEMENT_TYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
ALL_DATATYPES: tuple[str, ...] = tuple(ONNX_ELEMENT_TYPES)

# Datatypes for which elementwise_model computes x + x (ONNX Add-14 covers them all).
_ADDABLE = frozenset(ALL_DATATYPES) - {"BOOL", "BYTES"}

Dim = int | str  # an int is a fixed size; a str names a dynamic (symbolic) dimension


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Check `model` fully (a test model onnxruntime would refuse is a harness bug) and
    write it to `path`, creating its directory; returns `path`."""
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def build_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """`graph` as a model at the opset and IR version every supported onnxruntime loads."""
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="modeltrust-tests",
    )
    model.ir_version = IR_VERSION
    return model


def mnist_mlp_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """The weights mnist_mlp embeds, so a test can compute the expected logits itself."""
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((MNIST_FEATURES, MNIST_HIDDEN)) * 0.05).astype(np.float32),
        "b1": (rng.standard_normal(MNIST_HIDDEN) * 0.01).astype(np.float32),
        "w2": (rng.standard_normal((MNIST_HIDDEN, MNIST_CLASSES)) * 0.05).astype(np.float32),
        "b2": (rng.standard_normal(MNIST_CLASSES) * 0.01).astype(np.float32),
    }


def mnist_mlp_reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What mnist_mlp(seed=seed) computes, in numpy: relu(x @ w1 + b1) @ w2 + b2."""
    w = mnist_mlp_weights(seed)
    hidden = np.maximum(x.astype(np.float32) @ w["w1"] + w["b1"], 0)
    result: np.ndarray = hidden @ w["w2"] + w["b2"]
    return result


def mlp_graph(weights: dict[str, np.ndarray], name: str) -> onnx.GraphProto:
    """relu(input @ w1 + b1) @ w2 + b2 over `weights` (w1, b1, w2, b2): "input" FP32
    [batch, 784] -> "logits" FP32 [batch, 10], whatever the hidden width."""
    nodes = [
        helper.make_node("MatMul", [MNIST_INPUT, "w1"], ["h_mm"]),
        helper.make_node("Add", ["h_mm", "b1"], ["h_add"]),
        helper.make_node("Relu", ["h_add"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w2"], ["o_mm"]),
        helper.make_node("Add", ["o_mm", "b2"], [MNIST_OUTPUT]),
    ]
    return helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(MNIST_INPUT, TensorProto.FLOAT, ["batch", MNIST_FEATURES])],
        [helper.make_tensor_value_info(MNIST_OUTPUT, TensorProto.FLOAT, ["batch", MNIST_CLASSES])],
        initializer=[numpy_helper.from_array(array, key) for key, array in weights.items()],
    )


def mnist_mlp(path: Path, *, seed: int = 0) -> Path:
    """An MNIST-size MLP: input "input" FP32 [batch, 784] -> "logits" FP32 [batch, 10].

    The batch dimension is dynamic (symbolic "batch", shown as -1 in OIP metadata).
    """
    graph = mlp_graph(mnist_mlp_weights(seed), "mnist_mlp")
    return save_model(build_model(graph), path)


def _element_type(datatype: str) -> int:
    try:
        return ONNX_ELEMENT_TYPES[datatype]
    except KeyError:
        raise ValueError(
            f"unknown datatype {datatype!r}; expected one of {', '.join(ALL_DATATYPES)}"
        ) from None


def identity_model(
    path: Path,
    datatype: str,
    *,
    shape: Sequence[Dim] = ("batch", 4),
    input_name: str = "x",
    output_name: str = "y",
) -> Path:
    """y = x for one OIP datatype (every datatype, BYTES and BOOL included)."""
    element = _element_type(datatype)
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], [output_name])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info(input_name, element, list(shape))],
        [helper.make_tensor_value_info(output_name, element, list(shape))],
    )
    return save_model(build_model(graph), path)


def elementwise_model(
    path: Path,
    datatype: str,
    *,
    shape: Sequence[Dim] = ("batch", 4),
    input_name: str = "x",
    output_name: str = "y",
) -> Path:
    """A model that computes something per element, so a test sees real work done.

    Numeric datatypes: y = x + x. BOOL: y = not x. BYTES: y = x (ONNX has no
    elementwise string op every runtime implements).
    """
    element = _element_type(datatype)
    if datatype in _ADDABLE:
        node = helper.make_node("Add", [input_name, input_name], [output_name])
    elif datatype == "BOOL":
        node = helper.make_node("Not", [input_name], [output_name])
    else:
        node = helper.make_node("Identity", [input_name], [output_name])
    graph = helper.make_graph(
        [node],
        f"elementwise_{datatype.lower()}",
        [helper.make_tensor_value_info(input_name, element, list(shape))],
        [helper.make_tensor_value_info(output_name, element, list(shape))],
    )
    return save_model(build_model(graph), path)


def elementwise_reference(datatype: str, x: np.ndarray) -> np.ndarray:
    """What elementwise_model computes, in numpy (integer addition wraps, as in ONNX)."""
    if datatype == "BOOL":
        negated: np.ndarray = np.logical_not(x)
        return negated
    if datatype == "BYTES":
        return x
    result: np.ndarray = (x + x).astype(x.dtype)
    return result


def multi_io_model(path: Path) -> Path:
    """Two inputs, three outputs of different datatypes and shapes.

    Inputs:  "a" FP32 [batch, 3], "b" INT64 [batch, 3], "scale" FP32 [1] (fixed shape)
    Outputs: "sum"   FP32  [batch, 3] = (a + float(b)) * scale
             "b_sum" INT64 [batch, 1] = sum of b over axis 1
             "a_pos" BOOL  [batch, 3] = a > 0
    """
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    zero = numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")
    nodes = [
        helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "b_float"], ["a_plus_b"]),
        helper.make_node("Mul", ["a_plus_b", "scale"], ["sum"]),
        helper.make_node("ReduceSum", ["b", "axes"], ["b_sum"], keepdims=1),
        helper.make_node("Greater", ["a", "zero"], ["a_pos"]),
    ]
    graph = helper.make_graph(
        nodes,
        "multi_io",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 3]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b_sum", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("a_pos", TensorProto.BOOL, ["batch", 3]),
        ],
        initializer=[axes, zero],
    )
    return save_model(build_model(graph), path)


def multi_io_reference(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """What multi_io_model computes, in numpy."""
    return {
        "sum": ((a + b.astype(np.float32)) * scale).astype(np.float32),
        "b_sum": b.sum(axis=1, keepdims=True).astype(np.int64),
        "a_pos": a > 0,
    }


_NUMPY_DTYPES: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def numpy_dtype(datatype: str) -> type:
    """The numpy scalar type onnxruntime uses for an OIP datatype (BYTES: object, of str)."""
    _element_type(datatype)
    return _NUMPY_DTYPES[datatype]


@dataclass
class MnistModels:
    """A directory of distinct mnist_mlp files: make(name, seed) writes root/name.onnx
    and returns its path and "sha256:<hex>" digest (each seed its own weights)."""

    root: Path

    def make(self, name: str, seed: int) -> tuple[Path, str]:
        path = mnist_mlp(self.root / f"{name}.onnx", seed=seed)
        return path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
