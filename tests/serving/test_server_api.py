"""The OIP v2 REST API of a real server on 127.0.0.1 with real onnxruntime sessions."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import orjson
import pytest

from harness import onnx_models
from serving.helpers import RunningServer, running_server

pytestmark = pytest.mark.integration


def test_health_and_server_metadata(mnist_server: RunningServer) -> None:
    assert mnist_server.request("GET", "/v2/health/live")[0] == 200
    assert mnist_server.request("GET", "/v2/health/ready")[0] == 200
    status, headers, body = mnist_server.request("GET", "/v2")
    assert status == 200
    assert headers["content-type"] == "application/json"
    metadata = orjson.loads(body)
    assert metadata["name"] == "modeltrust"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_shows_dynamic_batch_as_minus_one(mnist_server: RunningServer) -> None:
    status, _, body = mnist_server.request("GET", "/v2/models/mnist")
    assert status == 200
    assert orjson.loads(body) == {
        "name": "mnist",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    assert mnist_server.request("GET", "/v2/models/mnist/ready")[0] == 200
    assert mnist_server.request("GET", "/v2/models/mnist/versions/1")[0] == 200
    assert mnist_server.request("GET", "/v2/models/mnist/versions/1/ready")[0] == 200


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_mnist_infer_matches_numpy_reference(mnist_server: RunningServer, batch: int) -> None:
    x = np.random.default_rng(batch).random((batch, 784), dtype=np.float32)
    status, result = mnist_server.infer(
        {
            "id": f"req-{batch}",
            "inputs": [
                {"name": "input", "shape": [batch, 784], "datatype": "FP32", "data": x.ravel()}
            ],
        }
    )
    assert status == 200, result
    assert result["id"] == f"req-{batch}"
    assert result["model_name"] == "mnist"
    assert result["model_version"] == "1"
    (output,) = result["outputs"]
    assert output["name"] == "logits"
    assert output["datatype"] == "FP32"
    assert output["shape"] == [batch, 10]
    got = np.array(output["data"], dtype=np.float32).reshape(batch, 10)
    np.testing.assert_allclose(got, onnx_models.mnist_mlp_reference(x), rtol=1e-4, atol=1e-5)


def test_nested_data_is_accepted(mnist_server: RunningServer) -> None:
    x = np.random.default_rng(7).random((2, 784), dtype=np.float32)
    flat = mnist_server.infer(
        {"inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": x.ravel()}]}
    )
    nested = mnist_server.infer(
        {"inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": x.tolist()}]}
    )
    assert flat[0] == nested[0] == 200
    assert flat[1]["outputs"] == nested[1]["outputs"]


def _error(server: RunningServer, document: object, model: str = "mnist") -> tuple[int, str]:
    status, _, body = server.request("POST", f"/v2/models/{model}/infer", orjson.dumps(document))
    parsed = orjson.loads(body)
    assert set(parsed) == {"error"}
    return status, parsed["error"]


def _mnist_input(**overrides: object) -> dict[str, object]:
    item: dict[str, object] = {
        "name": "input",
        "shape": [1, 784],
        "datatype": "FP32",
        "data": [0.5] * 784,
    }
    item.update(overrides)
    return {"inputs": [item]}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_mnist_input(shape=[1, 783], data=[0.5] * 783), "expects [-1,784]"),
        (_mnist_input(shape=[784]), "expects [-1,784]"),
        (_mnist_input(shape=[2, 784]), "needs 1568 elements but data has 784"),
        (_mnist_input(shape=[1, -784]), "non-negative integers"),
        (_mnist_input(datatype="FP64"), "datatype FP64 but the model expects FP32"),
        (_mnist_input(datatype="FLOAT"), "unknown datatype 'FLOAT'"),
        (_mnist_input(data=["a"] * 784), "FP32 data must be numbers"),
        (_mnist_input(data=[True] * 784), "FP32 data must be numbers"),
        (_mnist_input(data=[1e300] * 784), "out of range for FP32"),
        (_mnist_input(data=[[0.5] * 392, [0.5] * 393]), "not a rectangular"),
        (_mnist_input(name="pixels"), "has no input 'pixels'"),
        (_mnist_input(data=None), "data must be a JSON array"),
        ({"inputs": []}, 'non-empty "inputs"'),
        ({"input": []}, 'non-empty "inputs"'),
        ([1, 2], "must be a JSON object"),
        ({**_mnist_input(), "outputs": [{"name": "probs"}]}, "has no output 'probs'"),
        ({**_mnist_input(), "id": 5}, '"id" must be a string'),
    ],
)
def test_bad_requests_get_400_naming_the_problem(
    mnist_server: RunningServer, document: object, message: str
) -> None:
    status, error = _error(mnist_server, document)
    assert status == 400
    assert message in error


def test_malformed_json_is_400(mnist_server: RunningServer) -> None:
    status, _, body = mnist_server.request("POST", "/v2/models/mnist/infer", b'{"inputs": [')
    assert status == 400
    assert "not valid JSON" in orjson.loads(body)["error"]


def test_unknown_model_version_and_path_are_404(mnist_server: RunningServer) -> None:
    status, error = _error(mnist_server, _mnist_input(), model="resnet")
    assert status == 404
    assert "unknown model 'resnet'" in error
    assert "'mnist'" in error
    assert mnist_server.request("GET", "/v2/models/resnet")[0] == 404
    assert mnist_server.request("GET", "/v2/models/resnet/ready")[0] == 404
    assert mnist_server.request("GET", "/v2/models/mnist/versions/9")[0] == 404
    assert mnist_server.request("GET", "/v1/models")[0] == 404
    status, _, body = mnist_server.request("GET", "/v2/repository/index")
    assert status == 404
    assert "error" in orjson.loads(body)


def test_wrong_method_is_405_with_allow(mnist_server: RunningServer) -> None:
    status, headers, body = mnist_server.request("GET", "/v2/models/mnist/infer")
    assert status == 405
    assert headers["allow"] == "POST"
    assert "accepts POST" in orjson.loads(body)["error"]
    status, headers, _ = mnist_server.request("POST", "/v2/models/mnist", b"{}")
    assert (status, headers["allow"]) == (405, "GET")


def test_compressed_body_is_refused(mnist_server: RunningServer) -> None:
    status, _, body = mnist_server.request(
        "POST",
        "/v2/models/mnist/infer",
        orjson.dumps(_mnist_input()),
        {"Content-Encoding": "gzip"},
    )
    assert status == 415
    assert "Content-Encoding" in orjson.loads(body)["error"]


@pytest.mark.parametrize("datatype", onnx_models.ALL_DATATYPES)
def test_every_datatype_round_trips_as_json(tmp_path: Path, datatype: str) -> None:
    model = onnx_models.elementwise_model(tmp_path / f"{datatype}.onnx", datatype)
    x = _sample(datatype, (2, 4))
    with running_server(model, "ew") as server:
        metadata = orjson.loads(server.request("GET", "/v2/models/ew")[2])
        assert metadata["inputs"] == [{"name": "x", "datatype": datatype, "shape": [-1, 4]}]
        status, result = server.infer(
            {
                "inputs": [
                    {"name": "x", "shape": [2, 4], "datatype": datatype, "data": _json_list(x)}
                ]
            }
        )
        assert status == 200, result
        (output,) = result["outputs"]
        assert (output["datatype"], output["shape"]) == (datatype, [2, 4])
        expected = onnx_models.elementwise_reference(datatype, x)
        if expected.dtype.kind == "f":
            # JSON floats read back into the model's width must be bit-for-bit the result.
            got = np.array(output["data"], dtype=expected.dtype)
            np.testing.assert_array_equal(got, expected.ravel())
        else:
            assert output["data"] == _json_list(expected)

        # The same through the binary tensor data extension, both ways.
        raw = _binary(x, datatype)
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [2, 4],
                        "datatype": datatype,
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            }
        )
        status, headers, body = server.request(
            "POST",
            "/v2/models/ew/infer",
            header + raw,
            {"Inference-Header-Content-Length": str(len(header))},
        )
        assert status == 200, body
        json_size = int(headers["inference-header-content-length"])
        response = orjson.loads(body[:json_size])
        (output,) = response["outputs"]
        assert "data" not in output
        assert output["parameters"]["binary_data_size"] == len(body) - json_size
        assert body[json_size:] == _binary(expected, datatype)


def _sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if datatype == "BOOL":
        return rng.random(shape) > 0.5
    if datatype == "BYTES":
        words = np.array(["ä", "", "onnx", "model", "trust", "x y", "€uro", "z"], dtype=object)
        return words.reshape(shape)
    dtype = np.dtype(onnx_models.numpy_dtype(datatype))
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)  # type: ignore[type-var]  # integer dtypes only here
    # Extremes included: the server must carry the full range of every width exactly.
    values = [info.min, info.max, 0, 1, info.max // 3, info.min // 3 if info.min else 7, 2, 3]
    return np.array(values, dtype=dtype).reshape(shape)


def _json_list(array: np.ndarray) -> list[object]:
    if array.dtype == object:
        return list(array.ravel())
    flat: list[object] = array.ravel().tolist()
    return flat


def _binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        out = b""
        for value in array.ravel():
            encoded = str(value).encode()
            out += struct.pack("<I", len(encoded)) + encoded
        return out
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT8", [1, 2, 3, 128, 0, 0, 0, 0], "value 128 is out of range for INT8"),
        ("UINT8", [-1, 2, 3, 4, 0, 0, 0, 0], "value -1 is out of range for UINT8"),
        ("INT32", [1.5, 2, 3, 4, 0, 0, 0, 0], "INT32 data must be integers"),
        ("INT64", [True] * 8, "INT64 data must be integers"),
        ("BOOL", [0, 1, 0, 1, 0, 1, 0, 1], "BOOL data must be true or false"),
        ("BYTES", [1, 2, 3, 4, 5, 6, 7, 8], "BYTES data must be strings"),
        ("FP16", [70000.0] * 8, "out of range for FP16"),
    ],
)
def test_values_that_do_not_fit_the_datatype_are_refused(
    tmp_path: Path, datatype: str, data: list[object], message: str
) -> None:
    model = onnx_models.identity_model(tmp_path / "m.onnx", datatype)
    with running_server(model, "id") as server:
        status, error = _error(
            server,
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": datatype, "data": data}]},
            "id",
        )
    assert status == 400
    assert message in error


def test_multi_io_model_with_output_selection(multi_io_server: RunningServer) -> None:
    a = np.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]], dtype=np.float32)
    b = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    scale = np.array([2.0], dtype=np.float32)
    inputs = [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": a.ravel()},
        {"name": "b", "shape": [2, 3], "datatype": "INT64", "data": b.ravel()},
        {"name": "scale", "shape": [1], "datatype": "FP32", "data": [2.0]},
    ]
    expected = onnx_models.multi_io_reference(a, b, scale)

    status, result = multi_io_server.infer({"inputs": inputs})
    assert status == 200, result
    by_name = {o["name"]: o for o in result["outputs"]}
    assert [o["name"] for o in result["outputs"]] == ["sum", "b_sum", "a_pos"]
    assert by_name["sum"]["data"] == expected["sum"].ravel().tolist()
    assert (by_name["b_sum"]["datatype"], by_name["b_sum"]["shape"]) == ("INT64", [2, 1])
    assert by_name["b_sum"]["data"] == [6, 15]
    assert by_name["a_pos"]["data"] == [True, False, True, True, False, False]

    status, result = multi_io_server.infer({"inputs": inputs, "outputs": [{"name": "b_sum"}]})
    assert status == 200
    assert [o["name"] for o in result["outputs"]] == ["b_sum"]


def test_multi_io_errors(multi_io_server: RunningServer) -> None:
    a = {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [1.0] * 6}
    b = {"name": "b", "shape": [2, 3], "datatype": "INT64", "data": [1] * 6}
    scale = {"name": "scale", "shape": [1], "datatype": "FP32", "data": [1.0]}
    status, error = _error(multi_io_server, {"inputs": [a, b]}, "multi")
    assert (status, error) == (400, "missing inputs: 'scale'")
    status, error = _error(multi_io_server, {"inputs": [a, a, b, scale]}, "multi")
    assert status == 400
    assert "given twice" in error
    status, error = _error(
        multi_io_server, {"inputs": [a, b, {**scale, "shape": [2], "data": [1.0, 2.0]}]}, "multi"
    )
    assert status == 400
    assert "expects [1]" in error
    # Batch sizes that disagree on the shared dynamic dimension "batch".
    b3 = {"name": "b", "shape": [3, 3], "datatype": "INT64", "data": [1] * 9}
    status, error = _error(multi_io_server, {"inputs": [a, b3, scale]}, "multi")
    assert (status, error) == (400, "inputs 'a' and 'b' disagree on dimension 'batch': 2 vs 3")


def test_metrics_count_requests_by_model_and_status(mnist_path: Path) -> None:
    with running_server(mnist_path, "mnist") as server:
        for _ in range(3):
            assert server.infer(_mnist_input())[0] == 200
        assert _error(server, _mnist_input(datatype="FP64"))[0] == 400
        assert server.request("GET", "/v2/models/other")[0] == 404
        status, headers, body = server.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert (
        'modeltrust_serving_requests_total{model="mnist",endpoint="infer",status="200"} 3' in text
    )
    assert (
        'modeltrust_serving_requests_total{model="mnist",endpoint="infer",status="400"} 1' in text
    )
    # Unknown model names are not turned into label values.
    assert 'model="other"' not in text
    labels = 'model="mnist",endpoint="infer",status="200"'
    assert f"modeltrust_serving_request_duration_seconds_count{{{labels}}} 3" in text
    assert 'le="+Inf"} 3' in text
    assert f'digest="{server.app.model.digest}"' in text
