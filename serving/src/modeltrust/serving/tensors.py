"""Open Inference Protocol v2 tensors <-> numpy arrays onnxruntime takes.

Hot path: every conversion is one numpy call over the whole tensor, never a Python
loop per element (BYTES excepted: strings are Python objects either way). Input is
checked strictly, because a silently truncated 1.5 -> 1 or a wrapped 300 -> 44 would
be a wrong answer the client never sees: integers must be integers in range, floats
must fit the target width, booleans must be true/false, BYTES must be strings.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from modeltrust.serving.errors import RequestError


@dataclass(frozen=True, slots=True)
class Datatype:
    """One OIP datatype, the numpy dtype that holds it and onnxruntime's type string."""

    name: str
    dtype: np.dtype[Any]
    onnx_type: str

    @property
    def is_bytes(self) -> bool:
        return self.name == "BYTES"


def _dt(name: str, dtype: type | str, onnx_type: str) -> Datatype:
    return Datatype(name, np.dtype(dtype), onnx_type)


DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _dt("BOOL", np.bool_, "tensor(bool)"),
        _dt("UINT8", np.uint8, "tensor(uint8)"),
        _dt("UINT16", np.uint16, "tensor(uint16)"),
        _dt("UINT32", np.uint32, "tensor(uint32)"),
        _dt("UINT64", np.uint64, "tensor(uint64)"),
        _dt("INT8", np.int8, "tensor(int8)"),
        _dt("INT16", np.int16, "tensor(int16)"),
        _dt("INT32", np.int32, "tensor(int32)"),
        _dt("INT64", np.int64, "tensor(int64)"),
        _dt("FP16", np.float16, "tensor(float16)"),
        _dt("FP32", np.float32, "tensor(float)"),
        _dt("FP64", np.float64, "tensor(double)"),
        _dt("BYTES", object, "tensor(string)"),
    )
}
BY_ONNX_TYPE: dict[str, Datatype] = {d.onnx_type: d for d in DATATYPES.values()}
DATATYPE_NAMES = ", ".join(DATATYPES)

_LENGTH_PREFIX = struct.Struct("<I")


def datatype_named(name: object, what: str) -> Datatype:
    """The Datatype called `name`, or a 400 naming the accepted ones."""
    if not isinstance(name, str) or name not in DATATYPES:
        raise RequestError(
            400, f"{what} has unknown datatype {name!r}; use one of {DATATYPE_NAMES}"
        )
    return DATATYPES[name]


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _fmt(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def decode_json_data(
    datatype: Datatype,
    shape: tuple[int, ...],
    data: object,
    name: str,
    *,
    may_hold_booleans: bool = True,
) -> np.ndarray:
    """The JSON `data` of input `name` (flat row-major or nested lists) as an array.

    Raises RequestError(400) naming the input when the data does not fit the shape
    or the datatype. `may_hold_booleans=False` is the caller's promise that the JSON
    document has no `true`/`false` at all, which skips the per-element boolean check
    of numeric data.
    """
    if not isinstance(data, list):
        raise RequestError(400, f"input {name!r}: data must be a JSON array")
    try:
        # One C pass infers the element kind; checking it is what makes this strict
        # (np.array(data, dtype=int32) would silently truncate 1.5 and parse "7").
        array = np.array(data)
    except (ValueError, TypeError, OverflowError) as error:
        raise RequestError(
            400, f"input {name!r}: data is not a rectangular array of scalars ({error})"
        ) from None
    count = element_count(shape)
    if array.size != count:
        raise RequestError(
            400,
            f"input {name!r}: shape {_fmt(shape)} needs {count} elements but data has {array.size}",
        )
    if array.ndim > 1 and array.shape != shape:
        raise RequestError(
            400,
            f"input {name!r}: nested data has shape {_fmt(list(array.shape))} "
            f"but the declared shape is {_fmt(shape)}",
        )
    if count == 0:
        return np.empty(shape, dtype=datatype.dtype)
    if may_hold_booleans and array.dtype.kind in "iuf" and not datatype.is_bytes:
        _refuse_booleans(data, array.ndim, shape, datatype, name)
    return _coerce(datatype, array, data, name).reshape(shape)


def _refuse_booleans(
    data: list[Any], ndim: int, shape: tuple[int, ...], datatype: Datatype, name: str
) -> None:
    """numpy reads `[1, true, 3]` as the integers `[1, 1, 3]`: find such a boolean.

    One C-level pass (map/set over the flattened list), no Python loop per element.
    """
    items: Any = data
    for _ in range(ndim - 1):
        items = itertools.chain.from_iterable(items)
    if bool not in set(map(type, items)):
        return
    items = data
    for _ in range(ndim - 1):
        items = itertools.chain.from_iterable(items)
    position = next(i for i, v in enumerate(items) if type(v) is bool)
    where = (
        f"element {position}"
        if len(shape) <= 1
        else f"element {position} (index {list(map(int, np.unravel_index(position, shape)))})"
    )
    raise RequestError(
        400,
        f"input {name!r}: {where} is a boolean; {datatype.name} data must be "
        + ("integers" if datatype.dtype.kind in "iu" else "numbers")
        + ", and booleans are not numbers",
    )


def _coerce(datatype: Datatype, array: np.ndarray, data: list[Any], name: str) -> np.ndarray:
    kind = array.dtype.kind
    target = datatype.dtype
    if datatype.is_bytes:
        if kind != "U":
            raise RequestError(400, f"input {name!r}: BYTES data must be strings")
        return array.astype(object)
    if datatype.name == "BOOL":
        if kind != "b":
            raise RequestError(400, f"input {name!r}: BOOL data must be true or false")
        return array
    if target.kind in "iu":
        if kind in "fO" and kind != "b":
            return _exact_integers(data, datatype, name)
        if kind not in "iu":
            raise RequestError(
                400, f"input {name!r}: {datatype.name} data must be integers, got {_kind(kind)}"
            )
        info = np.iinfo(target)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise RequestError(
                400,
                f"input {name!r}: value {low if low < info.min else high} is out of range "
                f"for {datatype.name} [{info.min}, {info.max}]",
            )
        return array.astype(target, copy=False)
    # Floating point targets: JSON integers are valid numbers too.
    if kind not in "fiu":
        raise RequestError(
            400, f"input {name!r}: {datatype.name} data must be numbers, got {_kind(kind)}"
        )
    with np.errstate(over="ignore"):
        converted = array.astype(target, copy=False)
    # JSON has no NaN or Infinity, so a non-finite value here is an overflow of the
    # narrower type (e.g. 1e300 as FP32): refuse it rather than compute on inf.
    if not np.isfinite(converted).all():
        raise RequestError(400, f"input {name!r}: a value is out of range for {datatype.name}")
    return converted


def _exact_integers(data: list[Any], datatype: Datatype, name: str) -> np.ndarray:
    """Integers one int64/uint64 array cannot hold together (e.g. 2**64-1 next to -1).

    numpy infers float64 (losing precision) or object for such lists, so check the
    Python values themselves; only such extreme data takes this slower path.
    """
    values = np.array(data, dtype=object).ravel()
    for value in values:
        if type(value) is not int:
            kind = "booleans" if isinstance(value, bool) else type(value).__name__ + " values"
            raise RequestError(
                400, f"input {name!r}: {datatype.name} data must be integers, got {kind}"
            )
    info = np.iinfo(datatype.dtype)
    low, high = min(values), max(values)
    if low < info.min or high > info.max:
        raise RequestError(
            400,
            f"input {name!r}: value {low if low < info.min else high} is out of range "
            f"for {datatype.name} [{info.min}, {info.max}]",
        )
    return values.astype(datatype.dtype)


def _kind(kind: str) -> str:
    return {"b": "booleans", "U": "strings", "f": "non-integer numbers", "O": "mixed values"}.get(
        kind, f"numpy kind {kind!r}"
    )


def decode_binary_data(
    datatype: Datatype, shape: tuple[int, ...], raw: memoryview, name: str
) -> np.ndarray:
    """Binary tensor data (little-endian, row-major; BYTES length-prefixed) as an array."""
    count = element_count(shape)
    if datatype.is_bytes:
        return _decode_binary_bytes(shape, raw, count, name)
    itemsize = datatype.dtype.itemsize
    if len(raw) != count * itemsize:
        raise RequestError(
            400,
            f"input {name!r}: shape {_fmt(shape)} of {datatype.name} needs "
            f"{count * itemsize} bytes of binary data but binary_data_size is {len(raw)}",
        )
    if datatype.name == "BOOL":
        as_bytes = np.frombuffer(raw, dtype=np.uint8)
        if count and as_bytes.max() > 1:
            raise RequestError(400, f"input {name!r}: BOOL binary data must be bytes 0 or 1")
        return as_bytes.view(np.bool_).reshape(shape)
    return np.frombuffer(raw, dtype=datatype.dtype.newbyteorder("<")).reshape(shape)


def _decode_binary_bytes(
    shape: tuple[int, ...], raw: memoryview, count: int, name: str
) -> np.ndarray:
    # Every element has a 4-byte length: refuse impossible counts before allocating.
    if count * _LENGTH_PREFIX.size > len(raw):
        raise RequestError(
            400,
            f"input {name!r}: shape {_fmt(shape)} needs at least {count * _LENGTH_PREFIX.size} "
            f"bytes of BYTES binary data but binary_data_size is {len(raw)}",
        )
    out = np.empty(count, dtype=object)
    offset = 0
    end = len(raw)
    for i in range(count):
        if offset + 4 > end:
            raise RequestError(400, f"input {name!r}: BYTES binary data ends inside element {i}")
        (length,) = _LENGTH_PREFIX.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise RequestError(400, f"input {name!r}: BYTES element {i} runs past the data")
        try:
            out[i] = bytes(raw[offset : offset + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(
                400, f"input {name!r}: BYTES element {i} is not UTF-8 (ONNX strings are text)"
            ) from None
        offset += length
    if offset != end:
        raise RequestError(
            400, f"input {name!r}: {end - offset} bytes of binary data left after {count} elements"
        )
    return out.reshape(shape)


def json_data(array: np.ndarray, datatype: Datatype) -> object:
    """Output data for the JSON body: flat row-major, as orjson serializes it."""
    if datatype.is_bytes:
        return [_as_text(v) for v in array.ravel().tolist()]
    # orjson writes a C-contiguous numpy array natively (OPT_SERIALIZE_NUMPY).
    return np.ascontiguousarray(array.ravel())


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def binary_data(array: np.ndarray, datatype: Datatype) -> bytes:
    """Output data for the binary tensor data extension."""
    if datatype.is_bytes:
        parts: list[bytes] = []
        for value in array.ravel().tolist():
            encoded = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH_PREFIX.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=datatype.dtype.newbyteorder("<")).tobytes()
