"""OIP tensor decoding and encoding, and the metrics text format (pure functions)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from modeltrust.serving.errors import RequestError
from modeltrust.serving.metrics import Metrics
from modeltrust.serving.tensors import (
    DATATYPES,
    binary_data,
    decode_binary_data,
    decode_json_data,
)

pytestmark = pytest.mark.unit


def _json(name: str, shape: tuple[int, ...], data: object) -> np.ndarray:
    return decode_json_data(DATATYPES[name], shape, data, "x")


def _refused(name: str, shape: tuple[int, ...], data: object) -> str:
    with pytest.raises(RequestError) as caught:
        _json(name, shape, data)
    assert caught.value.status == 400
    return caught.value.message


def test_full_64_bit_integer_range_is_exact() -> None:
    big = 2**64 - 1
    array = _json("UINT64", (3,), [big, 0, 1])  # numpy alone would infer float64 here
    assert array.dtype == np.uint64
    assert array.tolist() == [big, 0, 1]
    low = -(2**63)
    assert _json("INT64", (2,), [low, 2**63 - 1]).tolist() == [low, 2**63 - 1]
    assert "value -1 is out of range for UINT64" in _refused("UINT64", (2,), [big, -1])
    assert "value 18446744073709551616 is out of range" in _refused("UINT64", (1,), [2**64])
    assert "got strings" in _refused("UINT64", (2,), [big, "1"])
    assert "got float values" in _refused("UINT64", (2,), [big, 0.5])


def test_shapes_and_empty_tensors() -> None:
    assert _json("FP32", (0, 784), []).shape == (0, 784)
    assert _json("INT32", (), [7]).shape == ()
    assert _json("FP64", (2, 1), [[1.0], [2.0]]).tolist() == [[1.0], [2.0]]
    assert "nested data has shape [1,2] but the declared shape is [2,1]" in _refused(
        "FP64", (2, 1), [[1.0, 2.0]]
    )


@pytest.mark.parametrize("name", [n for n in DATATYPES if n != "BYTES"])
def test_binary_round_trip(name: str) -> None:
    datatype = DATATYPES[name]
    values = np.arange(6).reshape(2, 3) % 2 if name == "BOOL" else np.arange(6).reshape(2, 3)
    array = values.astype(datatype.dtype)
    raw = binary_data(array, datatype)
    assert len(raw) == 6 * datatype.dtype.itemsize
    decoded = decode_binary_data(datatype, (2, 3), memoryview(raw), "x")
    np.testing.assert_array_equal(decoded, array)


def test_binary_bytes_round_trip_and_malformed_data() -> None:
    datatype = DATATYPES["BYTES"]
    array = np.array(["", "ab", "ü"], dtype=object)
    raw = binary_data(array, datatype)
    assert (
        raw
        == struct.pack("<I", 0) + struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2) + "ü".encode()
    )
    assert decode_binary_data(datatype, (3,), memoryview(raw), "x").tolist() == ["", "ab", "ü"]
    for broken, message in [
        (raw[:-1], "runs past the data"),
        (raw + b"x", "left after 3 elements"),
        (raw[:2], "needs at least 12 bytes"),
        (raw[:13], "ends inside element 2"),
        (struct.pack("<I", 1) + b"\xff" + raw[4:], "not UTF-8"),
    ]:
        with pytest.raises(RequestError, match=message):
            decode_binary_data(datatype, (3,), memoryview(broken), "x")


def test_huge_bytes_shape_is_refused_before_allocating() -> None:
    with pytest.raises(RequestError, match="needs at least 4000000000000 bytes"):
        decode_binary_data(DATATYPES["BYTES"], (10**6, 10**6), memoryview(bytes(8)), "x")


def test_binary_size_and_bool_values_are_checked() -> None:
    with pytest.raises(
        RequestError, match="needs 24 bytes of binary data but binary_data_size is 20"
    ):
        decode_binary_data(DATATYPES["FP32"], (2, 3), memoryview(bytes(20)), "x")
    with pytest.raises(RequestError, match="BOOL binary data must be bytes 0 or 1"):
        decode_binary_data(DATATYPES["BOOL"], (2,), memoryview(b"\x01\x02"), "x")


def test_metrics_histogram_is_cumulative_and_labelled() -> None:
    metrics = Metrics()
    metrics.add_model("m", "1", "sha256:" + "a" * 64)
    metrics.observe("m", "infer", 200, 0.0003)
    metrics.observe("m", "infer", 200, 0.002)
    metrics.observe("m", "infer", 200, 99.0)
    text = metrics.render().decode()
    labels = 'model="m",endpoint="infer",status="200"'
    assert f'modeltrust_serving_request_duration_seconds_bucket{{{labels},le="0.00025"}} 0' in text
    assert f'modeltrust_serving_request_duration_seconds_bucket{{{labels},le="0.0005"}} 1' in text
    assert f'modeltrust_serving_request_duration_seconds_bucket{{{labels},le="0.0025"}} 2' in text
    assert f'modeltrust_serving_request_duration_seconds_bucket{{{labels},le="10.0"}} 2' in text
    assert f'modeltrust_serving_request_duration_seconds_bucket{{{labels},le="+Inf"}} 3' in text
    assert f"modeltrust_serving_requests_total{{{labels}}} 3" in text
    assert metrics.count("m", "infer", 200) == 3
