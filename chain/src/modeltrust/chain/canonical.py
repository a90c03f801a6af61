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

Parsing is on every append's hot path, so ``parse_json_strict`` first tries orjson
(a C parser that already refuses NaN/Infinity, lone surrogates and invalid UTF-8)
plus cheap checks for what orjson accepts and we do not (floats, unsafe integers,
duplicate keys, depth). Anything the fast path is unsure about goes to the
reference parser, which gives the verdict and the error message, so both paths
accept exactly the same documents with the same values (tests/chain/test_fast_paths.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

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
    if type(data) is bytes:
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # the reference parser names what is wrong (or accepts what orjson refused)
        else:
            if _fast_parse_acceptable(data, value, max_depth):
                return value
    return parse_json_strict_reference(data, max_depth=max_depth)


def _fast_parse_acceptable(data: bytes, value: Any, max_depth: int) -> bool:
    """Whether orjson's ``value`` of ``data`` is what the reference parser returns.

    orjson keeps the last of duplicate keys silently. A 0x3A byte (``:``) in valid
    JSON is either a member separator or a colon inside a string (UTF-8 never uses
    0x3A inside a multi-byte character), and orjson writes one separator per member
    and string colons verbatim. So unless a colon hides in a ``\\u003a`` escape, the
    input has as many colons as orjson's re-encoding exactly when no member was
    dropped. A false alarm only costs a trip through the reference parser.
    """
    if b"\\u003" in data and (b"\\u003a" in data or b"\\u003A" in data):
        return False
    try:
        if data.count(b":") != orjson.dumps(value).count(b":"):
            return False
    except orjson.JSONEncodeError:  # e.g. nesting beyond orjson's encoder limit
        return False
    try:
        return _plain(value, 0, max_depth)
    except RecursionError:  # only with a huge max_depth; the reference parser decides
        return False


def _plain(value: Any, depth: int, max_depth: int) -> bool:
    """No floats (orjson's reading of 1.0, 1e3 and integers beyond 64 bits), only safe
    integers, nesting within ``max_depth`` (strings are already valid Unicode)."""
    if depth > max_depth:
        return False
    kind = type(value)
    if kind is dict or kind is list:
        children = value.values() if kind is dict else value
        if children and depth == max_depth:
            return False  # the children (strings included) would nest too deep
        for child in children:
            if type(child) is not str and not _plain(child, depth + 1, max_depth):
                return False
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    return kind is str or kind is bool or value is None


def parse_json_strict_reference(data: bytes, *, max_depth: int = 32) -> Any:
    """``parse_json_strict`` on Python's json module alone: the definition the fast path
    must agree with, and what names the problem when input is refused."""
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
