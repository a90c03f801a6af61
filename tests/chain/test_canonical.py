"""RFC 8785 canonical JSON (float-free subset) and the strict parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeltrust.chain.canonical import MAX_SAFE_INTEGER, canonical_json, parse_json_strict
from modeltrust.chain.errors import CanonicalJSONError

pytestmark = pytest.mark.unit


def test_no_whitespace_and_sorted_keys() -> None:
    value = {"b": [1, True, None], "a": {"y": "x", "x": -5}, "": False}
    assert canonical_json(value) == b'{"":false,"a":{"x":-5,"y":"x"},"b":[1,true,null]}'


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+1F600 is the surrogate pair D83D DE00 in UTF-16, which sorts before U+FB33,
    # although its code point is larger.
    keys = ["\ufb33", "\U0001f600", "\u20ac", "1", "\r", "\u00f6", "\u0080"]
    out = canonical_json(dict.fromkeys(keys, 0)).decode()
    order = list(json.loads(out))
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert order != sorted(keys)  # code point order would differ


def test_strings_escape_like_ecmascript() -> None:
    s = '\u0000\u001f"\\/\b\f\n\r\t\u007f\u2028\u00e9\U0001f600'
    want = '"\\u0000\\u001f\\"\\\\/\\b\\f\\n\\r\\t\u007f\u2028\u00e9\U0001f600"'
    assert canonical_json(s) == want.encode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "floating-point"),
        ({"a": [0.0]}, "floating-point"),
        (MAX_SAFE_INTEGER + 1, "outside"),
        (-MAX_SAFE_INTEGER - 1, "outside"),
        ("\ud800", "lone surrogate"),
        ({"\udc00": 1}, "lone surrogate"),
        ({1: "x"}, "not a string"),
        (b"bytes", "cannot encode bytes"),
        ({"a": {1, 2}}, "cannot encode set"),
    ],
)
def test_unencodable_values_are_refused(value: object, message: str) -> None:
    with pytest.raises(CanonicalJSONError, match=message):
        canonical_json(value)


def test_integer_bounds_are_inclusive() -> None:
    assert (
        canonical_json([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
        == b"[9007199254740991,-9007199254740991]"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1,"a":2}', "duplicate object key 'a'"),
        (b'{"a":1.0}', "floating-point"),
        (b'{"a":1e3}', "floating-point"),
        (b"[NaN]", "NaN"),
        (b"[-Infinity]", "Infinity"),
        (b"[9007199254740992]", "outside"),
        (b"[" + b"9" * 5000 + b"]", "outside"),
        (b'["\\ud800"]', "lone surrogate"),
        (b'{"\\udfff":1}', "lone surrogate"),
        (b'"\xff"', "not valid UTF-8"),
        (b"[1,]", "invalid JSON"),
        (b"[" * 40 + b"]" * 40, "deeper than 32"),
        (b"[" * 100000 + b"]" * 100000, "deeper than"),
    ],
)
def test_strict_parser_refuses(data: bytes, message: str) -> None:
    with pytest.raises(CanonicalJSONError, match=message):
        parse_json_strict(data)


def test_strict_parser_accepts_ordinary_json() -> None:
    assert parse_json_strict(b' { "b" : [1, -2, "\\u00e9"], "a": null } ') == {
        "b": [1, -2, "\u00e9"],
        "a": None,
    }


unicode_text = st.text(st.characters(exclude_categories=["Cs"]))  # no lone surrogates
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | unicode_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(unicode_text, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_round_trip_and_order_independence(value: Any) -> None:
    data = canonical_json(value)
    parsed = parse_json_strict(data)
    assert parsed == value
    assert canonical_json(parsed) == data
    # Any standard JSON parser reads the same value back.
    assert json.loads(data) == value
    if isinstance(value, dict):
        assert canonical_json(dict(reversed(list(value.items())))) == data
