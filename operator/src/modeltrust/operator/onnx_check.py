"""Load a model once, in a child process with an address-space limit, and describe it.

    python -m modeltrust.operator.onnx_check MODEL --digest sha256:... --max-memory BYTES

Runs in its own process because a hostile or broken model can crash onnxruntime or
exhaust memory; the operator must survive both. Prints one JSON object on stdout:
{"ok": true, "inputs": [...], "outputs": [...]} or {"ok": false, "error": "..."}.

Checks, in order: the file parses as an ONNX ModelProto with a graph; no tensor keeps
its data outside the file (external data is not covered by the pinned digest, and paths
like "../../etc/passwd" would read outside the model directory); then the serving
runtime's own loader (digest re-check, onnxruntime session, OIP datatypes) accepts it,
so a model the operator passes is one the model server will load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from modeltrust.operator.errors import ModelCheckFailed


def _graphs(graph: Any) -> Iterator[Any]:
    """A graph and every subgraph nested in its nodes' attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _graphs(sub)


def _subgraphs(node: Any) -> Iterator[Any]:
    """The graphs held directly in a node's attributes."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _sparse(sparse: Any) -> Iterator[Any]:
    yield sparse.values
    yield sparse.indices


def _node_tensors(node: Any) -> Iterator[Any]:
    """Tensors held directly in a node's attributes, sparse ones included (a Constant's
    sparse_value can point at external data just like an initializer)."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
        if attr.HasField("sparse_tensor"):
            yield from _sparse(attr.sparse_tensor)
        for sparse in attr.sparse_tensors:
            yield from _sparse(sparse)


def _graph_tensors(graph: Any) -> Iterator[Any]:
    for g in _graphs(graph):
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield from _sparse(sparse)
        for node in g.node:
            yield from _node_tensors(node)


def _tensors(model: Any) -> Iterator[Any]:
    """Every tensor a model can carry: the main graph and its subgraphs, local functions
    (their nodes and nested graphs), and training_info's initialization and algorithm
    graphs. onnxruntime resolves external data in all of them, relative to its CWD."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)
            for sub in _subgraphs(node):
                yield from _graph_tensors(sub)
    for info in model.training_info:
        if info.HasField("initialization"):
            yield from _graph_tensors(info.initialization)
        if info.HasField("algorithm"):
            yield from _graph_tensors(info.algorithm)


def external_data_problem(location: str) -> str:
    path = PurePosixPath(location.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        return f"tensor data location {location!r} escapes the model directory"
    return (
        f"tensor data is stored outside the model file (at {location!r}); external data "
        "is not covered by the pinned digest, so such models are refused"
    )


def structural_check(path: str) -> None:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors alike
        raise ModelCheckFailed(f"not an ONNX model: {exc}") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.node:
        raise ModelCheckFailed("not an ONNX model: no IR version or empty graph")
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            entries = {e.key: e.value for e in tensor.external_data}
            raise ModelCheckFailed(external_data_problem(entries.get("location", "")))


def load_check(path: str, digest: str) -> dict[str, Any]:
    from modeltrust.serving.errors import ServingError
    from modeltrust.serving.model import ServedModel, SessionSettings

    try:
        model = ServedModel.load(
            Path(path),
            name="check",
            expected_digest=digest,
            settings=SessionSettings(intra_op_threads=1, inter_op_threads=1),
        )
    except ServingError as exc:
        raise ModelCheckFailed(str(exc)) from None
    meta = model.metadata()
    return {"ok": True, "inputs": meta["inputs"], "outputs": meta["outputs"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeltrust.operator.onnx_check")
    parser.add_argument("model")
    parser.add_argument("--digest", required=True)
    parser.add_argument("--max-memory", type=int, default=0, help="address-space cap, bytes")
    args = parser.parse_args(argv)
    if args.max_memory > 0:
        # Set by the child on itself: no preexec_fn in the (threaded) operator process.
        resource.setrlimit(resource.RLIMIT_AS, (args.max_memory, args.max_memory))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        structural_check(args.model)
        result = load_check(args.model, args.digest)
    except ModelCheckFailed as exc:
        result = {"ok": False, "error": str(exc)}
    except MemoryError:
        result = {"ok": False, "error": "loading the model exceeded the memory limit"}
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
