"""RFC 8785 JSON Canonicalization Scheme for our float-free documents, and a strict parser.

Ledger leaves are canonical JSON, so every implementation must produce the same
bytes: no whitespace, object keys sorted by their UTF-16 code units, strings
escaped as ECMAScript's JSON.stringify does (only ``"``, ``\\`` and control
characters; ``\\b \\f \\n \\r \\t`` short forms, others ``\\u00xx`` lowercase),
UTF-8 output. Entries hold no floating-point numbers, so floats are refused
instead of implementing ECMAScript number formatting, and integers are limited
to the range every JSON implementation represents exactly (+-(2**53 - 1)).

Python's json module escapes strings exactly that way with ``ensure_ascii=False``,
so the encoder validates and re-orders the value, then lets the C encoder write it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modeltrust.chain.errors import CanonicalJSONError

MAX_SAFE_INTEGER = (1 << 53) - 1


def canonical_json(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value`` (dicts, lists, str, int, bool, None)."""
    prepared = _prepare(value, 0)
    text = json.dumps(prepared, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError(
            "string holds a lone surrogate, which UTF-8 cannot encode"
        ) from None


def parse_json_strict(data: bytes, *, max_depth: int = 32) -> Any:
    """Parse UTF-8 JSON, refusing floats, NaN/Infinity, duplicate keys, unsafe integers,
    lone surrogates and nesting deeper than ``max_depth``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CanonicalJSONError(f"JSON is not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_float=_reject_float,
            parse_int=_safe_int,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as e:
        raise CanonicalJSONError(
            f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise CanonicalJSONError(f"JSON nests deeper than {max_depth} levels") from None
    _check_parsed(value, 0, max_depth)
    return value


def _prepare(value: object, depth: int) -> object:
    if depth > 64:
        raise CanonicalJSONError("value nests deeper than 64 levels")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"integer {value} is outside +-(2**53 - 1)")
        return int(value)
    if isinstance(value, float):
        raise CanonicalJSONError("floating-point numbers are not allowed in ledger JSON")
    if isinstance(value, list | tuple):
        return [_prepare(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        for k in value:
            if not isinstance(k, str):
                raise CanonicalJSONError(f"object key {k!r} is not a string")
        keys = sorted(value, key=_utf16_order)
        return {k: _prepare(value[k], depth + 1) for k in keys}
    raise CanonicalJSONError(f"cannot encode {type(value).__name__} as canonical JSON")


def _utf16_order(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare exactly as the UTF-16 code unit sequences do.
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise CanonicalJSONError("object key holds a lone surrogate") from None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CanonicalJSONError(f"duplicate object key {key[:80]!r}")
            seen.add(key)
    return obj


def _reject_float(s: str) -> Any:
    raise CanonicalJSONError(f"floating-point number {s[:40]} is not allowed in ledger JSON")


def _reject_constant(s: str) -> Any:
    raise CanonicalJSONError(f"{s} is not valid JSON")


def _safe_int(s: str) -> int:
    if len(s.lstrip("-")) > 16:
        raise CanonicalJSONError(f"integer {s[:40]} is outside +-(2**53 - 1)")
    value = int(s)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise CanonicalJSONError(f"integer {s} is outside +-(2**53 - 1)")
    return value


def _check_parsed(value: Any, depth: int, max_depth: int) -> None:
    if depth > max_depth:
        raise CanonicalJSONError(f"JSON nests deeper than {max_depth} levels")
    if isinstance(value, str):
        _check_string(value)
    elif isinstance(value, list):
        for v in value:
            _check_parsed(v, depth + 1, max_depth)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_string(k)
            _check_parsed(v, depth + 1, max_depth)


def _check_string(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError("JSON string holds a lone surrogate escape") from None
