"""The Open Inference Protocol v2 REST application, independent of the HTTP transport.

Why one long module: one handler per protocol route, with the request validation the
protocol defines (datatypes, shapes, limits) next to the handler that relies on it.

Routes (as KServe and Triton serve them):
  GET  /v2/health/live, /v2/health/ready        200 when true, 400 when not;
                                                {"live": true} / {"ready": ...}
  GET  /v2                                      server metadata
  GET  /v2/models/{name}[/versions/{v}]         model metadata
  GET  /v2/models/{name}[/versions/{v}]/ready   200 / 400, {"name": ..., "ready": ...}
  POST /v2/models/{name}[/versions/{v}]/infer   inference (JSON, or Triton's binary
                                                tensor data extension)
  GET  /metrics                                 Prometheus text format
Errors are {"error": "..."} with a 4xx status (5xx only for faults of the server).
The protocol allows empty health bodies; KServe's Python client reads the JSON
fields above, Triton's client only the status, so both work against these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
import orjson
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from modeltrust.serving import metrics as metrics_module
from modeltrust.serving.errors import RequestError
from modeltrust.serving.model import ServedModel, TensorSpec
from modeltrust.serving.tensors import (
    binary_data,
    datatype_named,
    decode_binary_data,
    decode_json_data,
    json_data,
)

log = logging.getLogger(__name__)

SERVER_NAME = "modeltrust"
EXTENSIONS = ["binary_tensor_data"]
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_LIVE = b'{"live":true}'
_READY = b'{"ready":true}'
_NOT_READY = b'{"ready":false}'


@dataclass(slots=True)
class Request:
    """One parsed HTTP request; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(slots=True)
class Response:
    """What the transport writes; `model` and `endpoint` label the request's metrics."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    model: str = ""
    endpoint: str = "other"


def error_response(
    status: int, message: str, *, model: str = "", endpoint: str = "other"
) -> Response:
    return Response(status, orjson.dumps({"error": message}), model=model, endpoint=endpoint)


def _json(value: object, *, model: str = "", endpoint: str = "other") -> Response:
    return Response(200, orjson.dumps(value, option=_DUMPS_OPTIONS), model=model, endpoint=endpoint)


class _MethodNotAllowed(RequestError):
    def __init__(self, allowed: str, message: str) -> None:
        super().__init__(405, message)
        self.allowed = allowed


class InferenceApp:
    """Answers OIP v2 requests for one served model."""

    def __init__(
        self, model: ServedModel, metrics: metrics_module.Metrics, server_version: str
    ) -> None:
        self.model = model
        self.metrics = metrics
        self.ready = True
        self._server_metadata = orjson.dumps(
            {"name": SERVER_NAME, "version": server_version, "extensions": EXTENSIONS}
        )
        self._model_metadata = orjson.dumps(model.metadata())

    # Dispatch -----------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Answer one request; never raises for anything a client can send."""
        try:
            return self._route(request)
        except RequestError as error:
            # Label only the served model: names clients make up must not become series.
            model = self.model.name if self._names_served_model(request.path) else ""
            response = error_response(
                error.status, error.message, model=model, endpoint=_endpoint_of(request.path)
            )
            if isinstance(error, _MethodNotAllowed):
                response.headers = (("allow", error.allowed),)
            return response
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.path)
            return error_response(500, "internal server error; see the server log")

    def _names_served_model(self, path: str) -> bool:
        parts = path.split("?", 1)[0].split("/")
        return (
            len(parts) > 3
            and parts[1:3] == ["v2", "models"]
            and unquote(parts[3]) == self.model.name
        )

    def _route(self, request: Request) -> Response:
        path = request.path.split("?", 1)[0]
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "metrics" and len(parts) == 1:
            self._allow(request, "GET")
            return Response(
                200, self.metrics.render(), metrics_module.CONTENT_TYPE, endpoint="metrics"
            )
        if parts[0] != "v2":
            raise RequestError(404, f"no such endpoint {path!r}; the API is under /v2")
        rest = parts[1:]
        if not rest:
            self._allow(request, "GET")
            return Response(200, self._server_metadata, endpoint="server_metadata")
        if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            self._allow(request, "GET")
            if rest[1] == "live":
                return Response(200, _LIVE, endpoint="health_live")
            return Response(
                200 if self.ready else 400,
                _READY if self.ready else _NOT_READY,
                endpoint="health_ready",
            )
        if rest[0] == "models" and len(rest) >= 2:
            return self._model_route(request, rest[1], rest[2:])
        raise RequestError(404, f"no such endpoint {path!r}")

    def _model_route(self, request: Request, name: str, rest: list[str]) -> Response:
        model = self.model
        if name != model.name:
            raise RequestError(404, f"unknown model {name!r}; this server serves {model.name!r}")
        if len(rest) >= 2 and rest[0] == "versions":
            if rest[1] != model.version:
                raise RequestError(
                    404,
                    f"unknown version {rest[1]!r} of model {name!r}; "
                    f"this server serves version {model.version!r}",
                )
            rest = rest[2:]
        if not rest:
            self._allow(request, "GET")
            return Response(200, self._model_metadata, model=name, endpoint="model_metadata")
        if rest == ["ready"]:
            self._allow(request, "GET")
            return Response(
                200 if self.ready else 400,
                orjson.dumps({"name": name, "ready": self.ready}),
                model=name,
                endpoint="model_ready",
            )
        if rest == ["infer"]:
            self._allow(request, "POST")
            return self.infer(request)
        raise RequestError(404, f"no such endpoint {request.path!r}")

    @staticmethod
    def _allow(request: Request, method: str) -> None:
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            raise _MethodNotAllowed(
                method, f"{request.path} accepts {method}, not {request.method}"
            )

    # Inference ----------------------------------------------------------------

    def infer(self, request: Request) -> Response:
        model = self.model
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding != "identity":
            raise RequestError(
                415, f"Content-Encoding {encoding!r} is not supported; send the body uncompressed"
            )
        body = request.body
        header_length = request.headers.get(HEADER_LENGTH)
        binary: memoryview | None = None
        if header_length is not None:
            json_size = _parse_header_length(header_length, len(body))
            binary = memoryview(body)[json_size:]
            body = body[:json_size]
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise RequestError(400, f"request body is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise RequestError(400, 'request body must be a JSON object with an "inputs" array')

        # Booleans can only be where the JSON text says true or false: skip the
        # per-element boolean check of numeric data when it says neither (the usual case).
        may_hold_booleans = b"true" in body or b"false" in body
        feeds = self._decode_inputs(document.get("inputs"), binary, may_hold_booleans)
        outputs, binary_outputs = self._requested_outputs(document)
        try:
            results = model.run(outputs, feeds)
        except InvalidArgument as error:  # e.g. inputs disagree on a shared dynamic dimension
            raise RequestError(
                400, f"onnxruntime rejected the inputs: {_first_line(error)}"
            ) from None

        response: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        request_id = document.get("id")
        if request_id is not None:
            if not isinstance(request_id, str):
                raise RequestError(400, '"id" must be a string')
            response["id"] = request_id
        out_list: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for output_name, array in zip(outputs, results, strict=True):
            spec = model.output_by_name[output_name]
            entry: dict[str, Any] = {
                "name": output_name,
                "datatype": spec.datatype.name,
                "shape": list(array.shape),
            }
            if output_name in binary_outputs:
                raw = binary_data(array, spec.datatype)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = json_data(array, spec.datatype)
            out_list.append(entry)
        response["outputs"] = out_list
        header = orjson.dumps(response, option=_DUMPS_OPTIONS)
        if not chunks:
            return Response(200, header, model=model.name, endpoint="infer")
        return Response(
            200,
            b"".join([header, *chunks]),
            OCTET_STREAM,
            headers=(("Inference-Header-Content-Length", str(len(header))),),
            model=model.name,
            endpoint="infer",
        )

    def _decode_inputs(
        self, inputs: object, binary: memoryview | None, may_hold_booleans: bool = True
    ) -> dict[str, np.ndarray]:
        model = self.model
        if not isinstance(inputs, list) or not inputs:
            raise RequestError(400, 'request needs a non-empty "inputs" array')
        feeds: dict[str, np.ndarray] = {}
        offset = 0
        for item in inputs:
            if not isinstance(item, dict):
                raise RequestError(400, 'each entry of "inputs" must be an object')
            name = item.get("name")
            if not isinstance(name, str):
                raise RequestError(400, 'an input has no "name" string')
            spec = model.input_by_name.get(name)
            if spec is None:
                raise RequestError(
                    400,
                    f"model {model.name!r} has no input {name!r}; its inputs are "
                    + ", ".join(repr(s.name) for s in model.inputs),
                )
            if name in feeds:
                raise RequestError(400, f"input {name!r} is given twice")
            datatype = datatype_named(item.get("datatype"), f"input {name!r}")
            if datatype is not spec.datatype:
                raise RequestError(
                    400,
                    f"input {name!r} has datatype {datatype.name} but the model expects "
                    f"{spec.datatype.name}",
                )
            shape = _parse_shape(item.get("shape"), name, datatype.dtype.itemsize)
            _check_shape(shape, spec.shape, name)
            binary_size = _binary_size(item)
            if binary_size is not None:
                if binary is None:
                    raise RequestError(
                        400,
                        f"input {name!r} has binary_data_size but the request has no "
                        "Inference-Header-Content-Length header",
                    )
                if offset + binary_size > len(binary):
                    raise RequestError(
                        400, f"input {name!r}: binary data runs past the end of the body"
                    )
                feeds[name] = decode_binary_data(
                    datatype, shape, binary[offset : offset + binary_size], name
                )
                offset += binary_size
            elif "data" in item:
                feeds[name] = decode_json_data(
                    datatype, shape, item["data"], name, may_hold_booleans=may_hold_booleans
                )
            else:
                raise RequestError(400, f'input {name!r} has neither "data" nor binary_data_size')
        if binary is not None and offset != len(binary):
            raise RequestError(
                400, f"{len(binary) - offset} bytes of binary data are not claimed by any input"
            )
        if len(feeds) != len(model.inputs):
            missing = [s.name for s in model.inputs if s.name not in feeds]
            raise RequestError(400, "missing inputs: " + ", ".join(repr(n) for n in missing))
        if model.has_shared_symbols:
            _check_symbols(model.inputs, feeds)
        return feeds

    def _requested_outputs(self, document: dict[str, Any]) -> tuple[list[str], set[str]]:
        """The outputs to compute, and which of them to return as binary data."""
        model = self.model
        parameters = document.get("parameters")
        all_binary = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
        requested = document.get("outputs")
        if requested is None:
            names = model.output_names
            return names, set(names) if all_binary else set()
        if not isinstance(requested, list):
            raise RequestError(400, '"outputs" must be an array of {"name": ...} objects')
        names = []
        binary: set[str] = set()
        for item in requested:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or name not in model.output_by_name:
                raise RequestError(
                    400,
                    f"model {model.name!r} has no output {name!r}; its outputs are "
                    + ", ".join(repr(s.name) for s in model.outputs),
                )
            if name in names:
                raise RequestError(400, f"output {name!r} is requested twice")
            names.append(name)
            params = item.get("parameters")
            wants = params.get("binary_data") if isinstance(params, dict) else None
            if wants is True or (wants is None and all_binary):
                binary.add(name)
        if not names:
            names = model.output_names
        return names, binary


def _parse_header_length(value: str, body_length: int) -> int:
    try:
        size = int(value)
    except ValueError:
        size = -1
    if not 0 <= size <= body_length:
        raise RequestError(
            400,
            f"Inference-Header-Content-Length {value!r} must be a byte count between 0 and "
            f"the body length {body_length}",
        )
    return size


# numpy (and onnxruntime) refuse a shape whose non-zero dimensions multiply, in bytes,
# past a signed 64-bit size even when another dimension is 0 and the tensor is empty.
_MAX_EXTENT = 2**62


def _parse_shape(shape: object, name: str, itemsize: int) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise RequestError(400, f"input {name!r}: shape must be an array of non-negative integers")
    extent = max(itemsize, 1)
    for d in shape:
        extent *= d or 1
        if extent > _MAX_EXTENT:
            raise RequestError(
                400,
                f"input {name!r}: shape [{','.join(map(str, shape))}] is too large: its "
                f"non-zero dimensions multiply to more than {_MAX_EXTENT} bytes",
            )
    return tuple(shape)


def _check_shape(shape: tuple[int, ...], expected: tuple[int, ...], name: str) -> None:
    if len(shape) != len(expected) or any(
        want != -1 and got != want for got, want in zip(shape, expected, strict=True)
    ):
        shown = ",".join("-1" if d == -1 else str(d) for d in expected)
        raise RequestError(
            400,
            f"input {name!r} has shape [{','.join(map(str, shape))}] but the model expects "
            f"[{shown}] (-1: any size)",
        )


def _check_symbols(specs: tuple[TensorSpec, ...], feeds: dict[str, np.ndarray]) -> None:
    """Inputs that share a named dynamic dimension ("batch") must agree on its size."""
    seen: dict[str, tuple[str, int]] = {}
    for spec in specs:
        shape = feeds[spec.name].shape
        for symbol, size in zip(spec.symbols, shape, strict=False):
            if symbol is None:
                continue
            first = seen.setdefault(symbol, (spec.name, size))
            if first[1] != size:
                raise RequestError(
                    400,
                    f"inputs {first[0]!r} and {spec.name!r} disagree on dimension {symbol!r}: "
                    f"{first[1]} vs {size}",
                )


def _binary_size(item: dict[str, Any]) -> int | None:
    params = item.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if type(size) is not int or size < 0:
        raise RequestError(
            400, f"input {item.get('name')!r}: binary_data_size must be a non-negative integer"
        )
    return size


def _endpoint_of(path: str) -> str:
    if path.endswith("/infer"):
        return "infer"
    if path.startswith("/v2/health/"):
        return "health"
    if path.startswith("/v2/models/"):
        return "model_ready" if path.endswith("/ready") else "model_metadata"
    return "other"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
