"""Fetching and load-checking real artifacts: local files, a real HTTP server on 127.0.0.1,
real onnxruntime sessions in a real child process."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.onnx_models import mnist_mlp
from modeltrust.operator.artifact import ArtifactChecker, parse_window
from modeltrust.operator.errors import ModelCheckFailed
from modeltrust.operator.onnx_check import external_data_problem, structural_check

pytestmark = pytest.mark.integration

MAX = 64 << 20


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return mnist_mlp(tmp_path / "served" / "mnist.onnx")


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir(exist_ok=True)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def external_data_model(path: Path, location: str) -> Path:
    weights = numpy_helper.from_array(np.ones((4,), dtype=np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[weights],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path.write_bytes(m.SerializeToString())
    return path


async def test_local_model_is_hashed_and_loaded(model: Path) -> None:
    ev = await ArtifactChecker(local_root=model.parent).check(
        str(model), digest_of(model), max_size=MAX
    )
    assert ev.artifact.digest == digest_of(model)
    assert ev.artifact.size == len(model.read_bytes())  # noqa: ASYNC240
    assert ev.load is not None
    assert ev.load.ok, ev.load.error
    assert [(t.name, t.datatype, t.shape) for t in ev.load.inputs] == [("input", "FP32", (-1, 784))]
    assert [t.name for t in ev.load.outputs] == ["logits"]


async def test_http_model_is_fetched(model: Path, http_root: tuple[str, Path]) -> None:
    base, _ = http_root
    ev = await ArtifactChecker().check(f"{base}/mnist.onnx", digest_of(model), max_size=MAX)
    assert ev.load is not None
    assert ev.load.ok


async def test_wrong_bytes_report_their_actual_digest_and_are_not_loaded(model: Path) -> None:
    pinned = "sha256:" + "00" * 32
    ev = await ArtifactChecker(local_root=model.parent).check(
        f"file://{model}", pinned, max_size=MAX
    )
    assert ev.artifact.digest == digest_of(model)
    assert ev.load is None


async def test_http_errors_are_named(http_root: tuple[str, Path]) -> None:
    base, _ = http_root
    ev = await ArtifactChecker().check(f"{base}/missing.onnx", "sha256:" + "00" * 32, max_size=MAX)
    assert ev.artifact.error is not None
    assert "404" in ev.artifact.error


async def test_size_cap_stops_the_download(model: Path, http_root: tuple[str, Path]) -> None:
    base, _ = http_root
    ev = await ArtifactChecker().check(f"{base}/mnist.onnx", digest_of(model), max_size=1000)
    assert ev.artifact.error is not None
    assert "limit of 1000 bytes" in ev.artifact.error


async def test_non_onnx_bytes_are_refused_by_the_load_check(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07this is not a model" * 100)
    ev = await ArtifactChecker(local_root=tmp_path).check(str(junk), digest_of(junk), max_size=MAX)
    assert ev.artifact.digest == digest_of(junk)
    assert ev.load is not None
    assert not ev.load.ok
    assert "not an ONNX model" in (ev.load.error or "")


@pytest.mark.parametrize(
    ("location", "words"),
    [("../../etc/passwd", "escapes the model directory"), ("/etc/passwd", "escapes"),
     ("weights.bin", "not covered by the pinned digest")],
)  # fmt: skip
async def test_external_data_is_refused(tmp_path: Path, location: str, words: str) -> None:
    path = external_data_model(tmp_path / "ext.onnx", location)
    onnx.load(str(path), load_external_data=False)  # it is a well-formed ModelProto
    ev = await ArtifactChecker(local_root=tmp_path).check(str(path), digest_of(path), max_size=MAX)
    assert ev.load is not None
    assert not ev.load.ok
    assert words in (ev.load.error or "")


def test_external_data_messages() -> None:
    assert "escapes" in external_data_problem("..\\..\\x")
    assert "escapes" not in external_data_problem("sub/w.bin")


async def test_by_default_every_check_reads_the_bytes_again(model: Path, tmp_path: Path) -> None:
    # No claim without a check: the window is 0 unless configured.
    checker = ArtifactChecker(local_root=tmp_path)
    digest = digest_of(model)
    first = await checker.check(str(model), digest, max_size=MAX, owner="uid-a")
    second = await checker.check(str(model), digest, max_size=MAX, owner="uid-a")
    assert checker.fetches == 2
    assert first.read_at is not None
    assert second.read_at is not None
    assert second.read_at >= first.read_at


async def test_successes_are_reused_within_the_window_by_the_same_owner_only(
    model: Path, tmp_path: Path
) -> None:
    now = [1000.0]
    checker = ArtifactChecker(local_root=tmp_path, recheck_window=60, clock=lambda: now[0])
    digest = digest_of(model)
    missing = str(tmp_path / "not-yet.onnx")
    assert (await checker.check(missing, digest, max_size=MAX, owner="a")).artifact.error
    assert (await checker.check(missing, digest, max_size=MAX, owner="a")).artifact.error
    assert checker.fetches == 2  # a failure is retried, never served from cache
    first = await checker.check(str(model), digest, max_size=MAX, owner="a")
    second = await checker.check(str(model), digest, max_size=MAX, owner="a")
    assert checker.fetches == 3
    assert second == first  # the same read, with the same read_at: the audit says when
    # Another ModelDeployment never shares that success: it reads the bytes itself.
    await checker.check(str(model), digest, max_size=MAX, owner="b")
    assert checker.fetches == 4
    # Without an owner, nothing is reused.
    await checker.check(str(model), digest, max_size=MAX)
    await checker.check(str(model), digest, max_size=MAX)
    assert checker.fetches == 6
    # A stricter policy cap is still enforced on a cached success.
    capped = await checker.check(str(model), digest, max_size=10, owner="a")
    assert capped.artifact.error is not None
    assert checker.fetches == 7
    # After the window the bytes are read again.
    now[0] += 61
    await checker.check(str(model), digest, max_size=MAX, owner="a")
    assert checker.fetches == 8


async def test_bytes_changed_at_the_url_are_found_by_the_next_check(
    model: Path, tmp_path: Path
) -> None:
    # The attack: a second ModelDeployment of the same URL and digest was told "matches the
    # pin" from a cache after the bytes had changed.
    checker = ArtifactChecker(local_root=tmp_path, recheck_window=3600)
    digest = digest_of(model)
    assert (await checker.check(str(model), digest, max_size=MAX, owner="a")).load
    await asyncio.to_thread(model.write_bytes, digest_bytes_changed(model))
    changed = await checker.check(str(model), digest, max_size=MAX, owner="b")
    assert changed.artifact.digest not in (None, digest)
    assert changed.read_at is not None


def digest_bytes_changed(path: Path) -> bytes:
    return path.read_bytes() + b"\0"


def test_recheck_window_setting() -> None:
    assert parse_window("") == 0
    assert parse_window("0") == 0
    assert parse_window("90") == 90
    assert parse_window("5m") == 300
    for bad in ("-1", "soon", "25h"):
        with pytest.raises(ValueError, match="RECHECK_WINDOW"):
            parse_window(bad)


# --- external data anywhere in the model (not covered by the digest; paths escape) -----------


def external_tensor(name: str, location: str) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def add_model(nodes: list[onnx.NodeProto], **extra: object) -> onnx.ModelProto:
    graph = helper.make_graph(
        [*nodes, helper.make_node("Add", ["x", "y0"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **extra)
    m.ir_version = 8
    return m


def sparse_constant_model(path: Path, location: str) -> Path:
    """A Constant whose sparse_value keeps its values in a file beside the model: onnxruntime
    reads that file relative to its working directory."""
    sparse = onnx.SparseTensorProto(dims=[4])
    sparse.values.CopyFrom(external_tensor("c", location))
    sparse.indices.CopyFrom(helper.make_tensor("i", TensorProto.INT64, [4], [0, 1, 2, 3]))
    const = helper.make_node("Constant", [], ["y0"], sparse_value=sparse)
    path.write_bytes(add_model([const]).SerializeToString())
    return path


def function_model(path: Path, location: str) -> Path:
    """A model-local function whose Constant holds external data."""
    body = helper.make_node("Constant", [], ["out"], value=external_tensor("c", location))
    fn = helper.make_function("local", "Const4", [], ["out"], [body], [helper.make_opsetid("", 17)])
    call = helper.make_node("Const4", [], ["y0"], domain="local")
    m = add_model(
        [call],
        functions=[fn],
    )
    m.opset_import.append(helper.make_opsetid("local", 1))
    path.write_bytes(m.SerializeToString())
    return path


def training_info_model(path: Path, location: str) -> Path:
    """training_info's initialization graph with an externally stored initializer."""
    const = helper.make_node(
        "Constant", [], ["y0"], value=helper.make_tensor("k", TensorProto.FLOAT, [4], [1] * 4)
    )
    m = add_model([const])
    init = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["w2"])],
        "init",
        [],
        [helper.make_tensor_value_info("w2", TensorProto.FLOAT, [4])],
        initializer=[external_tensor("w", location)],
    )
    info = m.training_info.add()
    info.initialization.CopyFrom(init)
    path.write_bytes(m.SerializeToString())
    return path


async def test_sparse_constant_with_external_data_is_refused(tmp_path: Path) -> None:
    # The review's proof of concept: with w.bin beside the model (and in the checker's
    # working directory), onnxruntime would load it; the check must refuse first.
    (tmp_path / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = sparse_constant_model(tmp_path / "sparse.onnx", "w.bin")
    ev = await ArtifactChecker(local_root=tmp_path).check(str(path), digest_of(path), max_size=MAX)
    assert ev.load is not None
    assert not ev.load.ok
    assert "not covered by the pinned digest" in (ev.load.error or "")


@pytest.mark.parametrize("build", [sparse_constant_model, function_model, training_info_model])
@pytest.mark.parametrize(
    ("location", "words"),
    [("w.bin", "not covered by the pinned digest"), ("../../etc/passwd", "escapes")],
)
def test_external_data_is_found_everywhere_in_the_model(
    tmp_path: Path, build: Callable[[Path, str], Path], location: str, words: str
) -> None:
    path = build(tmp_path / "m.onnx", location)
    with pytest.raises(ModelCheckFailed, match=words):
        structural_check(str(path))


def test_a_model_with_functions_and_sparse_constants_inline_passes(tmp_path: Path) -> None:
    sparse = onnx.SparseTensorProto(dims=[4])
    sparse.values.CopyFrom(helper.make_tensor("c", TensorProto.FLOAT, [4], [1, 2, 3, 4]))
    sparse.indices.CopyFrom(helper.make_tensor("i", TensorProto.INT64, [4], [0, 1, 2, 3]))
    path = tmp_path / "inline.onnx"
    path.write_bytes(
        add_model(
            [helper.make_node("Constant", [], ["y0"], sparse_value=sparse)]
        ).SerializeToString()
    )
    structural_check(str(path))  # inline data is covered by the digest: no objection


# --- local files only under the configured root (a spec must not read the operator's files) ---


async def test_local_paths_are_refused_without_a_root(model: Path) -> None:
    checker = ArtifactChecker()
    for uri in (str(model), f"file://{model}", "/etc/hostname"):
        ev = await checker.check(uri, digest_of(model), max_size=MAX)
        assert ev.artifact.digest is None  # not even hashed: no digest leaks into status
        assert "MODELTRUST_LOCAL_MODEL_ROOT" in (ev.artifact.error or "")
    assert checker.fetches == 0


async def test_local_paths_outside_the_root_are_refused(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    checker = ArtifactChecker(local_root=root)
    ev = await checker.check(str(model), digest_of(model), max_size=MAX)
    assert "not under the local model root" in (ev.artifact.error or "")
    ev = await checker.check(f"{root}/../served/mnist.onnx", digest_of(model), max_size=MAX)
    assert "not under the local model root" in (ev.artifact.error or "")


async def test_symlinks_below_the_root_are_refused(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "link.onnx").symlink_to(model)
    (root / "dir").symlink_to(model.parent, target_is_directory=True)
    checker = ArtifactChecker(local_root=root)
    ev = await checker.check(str(root / "link.onnx"), digest_of(model), max_size=MAX)
    assert "symlink" in (ev.artifact.error or "")
    ev = await checker.check(str(root / "dir" / "mnist.onnx"), digest_of(model), max_size=MAX)
    assert ev.artifact.error is not None
    assert ev.artifact.digest is None


async def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)  # nobody writes: opening it for reading would block forever
    ev = await ArtifactChecker(local_root=tmp_path).check(
        str(fifo), "sha256:" + "00" * 32, max_size=MAX
    )
    assert "not a regular file" in (ev.artifact.error or "")


async def test_a_root_of_slash_allows_every_local_path(model: Path) -> None:
    ev = await ArtifactChecker(local_root=Path("/")).check(
        str(model), digest_of(model), max_size=MAX
    )
    assert ev.load is not None
    assert ev.load.ok
