"""An off-the-shelf OIP v2 client (NVIDIA's tritonclient[http]) against our server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from harness import onnx_models
from serving.helpers import RunningServer, running_server

pytestmark = pytest.mark.integration


def _client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")


def test_health_and_metadata(mnist_server: RunningServer) -> None:
    client = _client(mnist_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mnist")
    assert not client.is_model_ready("other")
    metadata = client.get_model_metadata("mnist")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_mnist(mnist_server: RunningServer, binary: bool) -> None:
    client = _client(mnist_server)
    x = np.random.default_rng(1).random((4, 784), dtype=np.float32)
    given = triton.InferInput("input", list(x.shape), "FP32")
    given.set_data_from_numpy(x, binary_data=binary)
    wanted = triton.InferRequestedOutput("logits", binary_data=binary)
    result = client.infer("mnist", [given], outputs=[wanted], request_id="abc")
    assert result.get_response()["id"] == "abc"
    logits = result.as_numpy("logits")
    assert logits.shape == (4, 10)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, onnx_models.mnist_mlp_reference(x), rtol=1e-4, atol=1e-5)


def test_infer_with_default_outputs_uses_binary(mnist_server: RunningServer) -> None:
    # With no outputs named, tritonclient asks for every output as binary data.
    client = _client(mnist_server)
    x = np.zeros((1, 784), dtype=np.float32)
    given = triton.InferInput("input", [1, 784], "FP32")
    given.set_data_from_numpy(x)
    logits = client.infer("mnist", [given], model_version="1").as_numpy("logits")
    np.testing.assert_allclose(logits, onnx_models.mnist_mlp_reference(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("datatype", ["BYTES", "BOOL", "FP16", "UINT64", "INT8"])
def test_infer_datatypes(tmp_path: Path, datatype: str) -> None:
    model = onnx_models.elementwise_model(tmp_path / "m.onnx", datatype)
    if datatype == "BYTES":
        x = np.array([[b"a", b"bc", b"", b"\xc3\xa4"]], dtype=np.object_)
    elif datatype == "BOOL":
        x = np.array([[True, False, False, True]])
    else:
        x = np.arange(4, dtype=onnx_models.numpy_dtype(datatype)).reshape(1, 4)
    with running_server(model, "ew") as server:
        client = _client(server)
        given = triton.InferInput("x", [1, 4], datatype)
        given.set_data_from_numpy(x)
        got = client.infer("ew", [given]).as_numpy("y")
    if datatype == "BYTES":
        assert got.tolist() == x.tolist()
    else:
        np.testing.assert_array_equal(got, onnx_models.elementwise_reference(datatype, x))


def test_errors_surface_as_client_exceptions(mnist_server: RunningServer) -> None:
    client = _client(mnist_server)
    given = triton.InferInput("input", [1, 784], "FP64")
    given.set_data_from_numpy(np.zeros((1, 784), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="datatype FP64 but the model expects FP32"):
        client.infer("mnist", [given])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
