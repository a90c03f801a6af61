"""The append hot path's fast implementations agree exactly with the reference ones.

Each fast path (orjson parsing with cheap checks, orjson leaf encoding, calendar check
by ``fromisoformat``, the entry builder's single-comparison field check) must accept
exactly what its reference accepts, return the same value, and refuse with the same
message. Hypothesis drives them with valid and deliberately broken input.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from modeltrust.chain.canonical import (
    MAX_SAFE_INTEGER,
    canonical_json,
    parse_json_strict,
    parse_json_strict_reference,
)
from modeltrust.chain.entries import (
    _FIELDS,
    _KINDS,
    AuditEntry,
    Registration,
    Revocation,
    check_time,
    entry_from_json,
    entry_to_json,
    leaf_data,
    leaf_data_reference,
)
from modeltrust.chain.errors import CanonicalJSONError, EntryError

pytestmark = pytest.mark.unit


def typed(value: Any) -> Any:
    """A structure that tells 1 from True and keeps key order, for exact comparison."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


def outcome(parse: Callable[[bytes], Any], data: bytes) -> tuple[str, Any]:
    try:
        return "accepted", typed(parse(data))
    except CanonicalJSONError as exc:
        return "refused", str(exc)


def assert_parsers_agree(data: bytes) -> None:
    assert outcome(parse_json_strict, data) == outcome(parse_json_strict_reference, data)


# -- JSON text built from tokens, valid and not -----------------------------------------------

whitespace = st.sampled_from(["", "", " ", "\n", "\t", "\r\n  ", "\x0c", "\x0b"])
string_chars = st.one_of(
    st.characters(exclude_categories=["Cs"]),
    st.sampled_from(
        [":", '\\"', "\\\\", "\\/", "\\n", "\\u003a", "\\u003A", "\\u0000", "\\u001f", "\\ud800",
         "\\udfff", "\\ud83d\\ude00", "\\u00e9", "\\x", "\x7f", "\u2028", '"', "\\"]
    ),
)  # fmt: skip
json_strings = st.lists(string_chars, max_size=6).map(lambda cs: '"' + "".join(cs) + '"')
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        [str(MAX_SAFE_INTEGER), str(-MAX_SAFE_INTEGER), str(MAX_SAFE_INTEGER + 1), "-0", "01",
         "1.0", "1e3", "1E400", "-0.5e-2", "NaN", "Infinity", "-Infinity", str(2**64), "1."]
    ),
)  # fmt: skip
scalars = st.one_of(numbers, json_strings, st.sampled_from(["true", "false", "null", "nul"]))
keys = st.one_of(st.sampled_from(['"a"', '"b"', '"a:b"', '"\\u003a"', '":"', '"é"']), json_strings)


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    arrays = st.lists(st.tuples(whitespace, children), max_size=4).map(
        lambda items: "[" + ",".join(w + c for w, c in items) + "]"
    )
    members = st.lists(st.tuples(keys, whitespace, children), max_size=4)
    objects = members.map(lambda ms: "{" + ",".join(k + w + ":" + v for k, w, v in ms) + "}")
    return arrays | objects


json_texts = st.recursive(scalars, _containers, max_leaves=12)


@settings(max_examples=600, deadline=None)
@given(json_texts, whitespace, st.binary(max_size=3) | st.just(b""))
@example('{"a":1,"a":1}', "", b"")
@example('{"a":":","a":1}', "", b"")
@example('{"\\u003a":1,":":2}', "", b"")
@example('[{"a":{"b":1,"b":2}}]', "", b"")
@example("[18446744073709551616]", "", b"")
@example('"\\ud800"', "", b"")
@example("[1]", "", b"\xef\xbb\xbf")
def test_strict_parsers_agree_on_generated_json(text: str, pad: str, tail: bytes) -> None:
    data = (pad + text + pad).encode() + tail
    assert_parsers_agree(data)
    assert_parsers_agree(tail + data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_strict_parsers_agree_on_arbitrary_bytes(data: bytes) -> None:
    assert_parsers_agree(data)


@pytest.mark.parametrize("depth", range(29, 36))
@pytest.mark.parametrize(
    "innermost", ["", "1", '"s"', "1.5", '{"k":"v"}', '{"k":1}', '{"k":{}}', "[]"]
)
def test_strict_parsers_agree_on_nesting_depth_limits(depth: int, innermost: str) -> None:
    for opening, closing in (("[", "]"), ('{"x":', "}")):
        data = (opening * depth + innermost + closing * depth).encode()
        if opening == "{" and not innermost:
            continue  # '{"x":}' is no JSON at all; covered by the generated cases
        assert_parsers_agree(data)


@pytest.mark.parametrize(
    "data", [b'{"\\u003a":1,"\\u003a":2}', b'{"\\u003A":1,"\\u003A":2}', b'[{"\\u003a":1,":":2}]']
)
def test_fast_parser_refuses_duplicate_keys_hidden_behind_escaped_colons(data: bytes) -> None:
    # The dropped member's colon is made up for by the decoded one: only the escape
    # check catches it.
    with pytest.raises(CanonicalJSONError, match="duplicate object key"):
        parse_json_strict(data)


# -- check_time against strptime -----------------------------------------------------------


def strptime_reference(value: str) -> datetime | None:
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def two_digits(high: int) -> st.SearchStrategy[str]:
    return st.integers(0, high).map(lambda n: f"{n:02d}")


@settings(max_examples=800, deadline=None)
@given(
    year=st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    month=two_digits(15),
    day=two_digits(35),
    hour=two_digits(26),
    minute=two_digits(61),
    second=two_digits(62),
    frac=st.sampled_from(["", ".5", ".123456789"]),
)
@example(year="2024", month="02", day="29", hour="00", minute="00", second="00", frac="")
@example(year="2023", month="02", day="29", hour="00", minute="00", second="00", frac="")
@example(year="1900", month="02", day="29", hour="00", minute="00", second="00", frac="")
@example(year="0000", month="01", day="01", hour="00", minute="00", second="00", frac="")
@example(year="2025", month="01", day="31", hour="24", minute="00", second="00", frac="")
@example(year="2025", month="12", day="31", hour="23", minute="59", second="60", frac="")
def test_check_time_agrees_with_strptime(
    year: str, month: str, day: str, hour: str, minute: str, second: str, frac: str
) -> None:
    value = f"{year}-{month}-{day}T{hour}:{minute}:{second}{frac}Z"
    expected = strptime_reference(value)
    if expected is None:
        with pytest.raises(EntryError, match="not a real calendar time"):
            check_time("time", value)
    else:
        got = check_time("time", value)
        assert got == expected
        assert got.tzinfo is UTC


# -- entries: leaf encoding and the field checks ---------------------------------------------

texts = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="\x7f"), min_size=1
)
hex64 = st.binary(min_size=32, max_size=32).map(bytes.hex)
digests = hex64.map(lambda h: "sha256:" + h)
tokens = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
signatures = st.binary(min_size=1, max_size=80).map(lambda b: base64.b64encode(b).decode())
times = st.sampled_from(
    ["2025-01-31T12:00:00Z", "1999-12-31T23:59:59.999Z", "2024-02-29T00:00:00Z"]
)
safe_ints = st.integers(0, MAX_SAFE_INTEGER)

registrations = st.builds(
    Registration,
    model_name=texts.filter(lambda s: len(s) <= 253),
    model_version=texts.filter(lambda s: len(s) <= 128),
    digest=digests,
    size=safe_ints,
    format=st.just("onnx"),
    signer_key_id=hex64,
    signature_kind=st.sampled_from(["modeltrust-v1", "cosign-blob", "oms-bundle"]),
    signature=signatures,
)
revocations = st.builds(
    Revocation,
    target_kind=st.just("digest"),
    target=digests,
    reason=texts,
    signer_key_id=hex64,
    time=times,
    signature=signatures,
) | st.builds(
    Revocation,
    target_kind=st.just("key"),
    target=hex64,
    reason=texts,
    signer_key_id=hex64,
    time=times,
    signature=signatures,
)
audits = st.builds(
    AuditEntry,
    action=tokens,
    namespace=texts.filter(lambda s: len(s) <= 63),
    name=texts.filter(lambda s: len(s) <= 253),
    uid=texts.filter(lambda s: len(s) <= 128),
    generation=safe_ints,
    digest=digests,
    decision=tokens,
    reasons=st.lists(texts, max_size=5).map(tuple),
    actor=texts.filter(lambda s: len(s) <= 253),
    time=times,
    idempotency_key=texts.filter(lambda s: len(s) <= 128),
)
entries = registrations | revocations | audits


@settings(max_examples=400, deadline=None)
@given(entries)
def test_leaf_data_equals_the_general_rfc8785_encoder(entry: Any) -> None:
    assert leaf_data(entry) == leaf_data_reference(entry)
    assert json.loads(leaf_data(entry)) == entry_to_json(entry)


def entry_from_json_reference(obj: Mapping[str, Any]) -> Any:
    """The field checks as first written: one field at a time, in field order."""
    if not isinstance(obj, Mapping):
        raise EntryError(f"an entry must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise EntryError(f"entry kind {kind!r} is not one of {', '.join(_KINDS)}")
    expected = _FIELDS[kind]
    unknown = sorted(set(obj) - set(expected) - {"kind"})
    if unknown:
        raise EntryError(f"{kind} entry has unknown field(s): {', '.join(unknown)}")
    missing = [name for name in expected if name not in obj]
    if missing:
        raise EntryError(f"{kind} entry lacks field(s): {', '.join(missing)}")
    values: dict[str, Any] = {}
    for name, annotation in expected.items():
        value = obj[name]
        if annotation == "int":
            if type(value) is not int:
                raise EntryError(f"{kind}.{name} must be an integer")
        elif annotation == "tuple[str, ...]":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise EntryError(f"{kind}.{name} must be a list of strings")
            value = tuple(value)
        elif not isinstance(value, str):
            raise EntryError(f"{kind}.{name} must be a string")
        values[name] = value
    return _KINDS[kind](**values)


class Text(str):
    """A str subclass: accepted by the field checks, as before."""


odd_values = st.sampled_from(
    [None, True, 0, -1, 2**53, 1.5, "", "x", "sha256:" + "0" * 64, "0" * 64, "a\x00b",
     "rollout", "2025-01-31T12:00:00Z", "2025-02-30T00:00:00Z", [], ["r"], [1], ("t",),
     {"a": 1}, Text("x"), "digest", "key", "onnx", "AAAA", "AAA="]
)  # fmt: skip


@st.composite
def entry_documents(draw: st.DrawFn) -> Any:
    """Valid entry objects, then some fields dropped, added, retyped or replaced."""
    doc: Any = entry_to_json(draw(entries))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "add", "replace", "kind"]))
        if action == "drop" and doc:
            doc.pop(draw(st.sampled_from(sorted(doc))))
        elif action == "add":
            doc[draw(st.sampled_from(["extra", "size", "time", "reasons", "kind"]))] = draw(
                odd_values
            )
        elif action == "replace" and doc:
            doc[draw(st.sampled_from(sorted(doc)))] = draw(odd_values)
        elif action == "kind":
            doc["kind"] = draw(st.sampled_from(["audit", "registration", "revocation", "x", 1]))
    return doc if draw(st.booleans()) else draw(st.sampled_from([doc, [doc], "doc", None]))


def entry_outcome(build: Callable[[Any], Any], doc: Any) -> tuple[str, Any]:
    try:
        return "built", build(doc)
    except (EntryError, ValueError, TypeError) as exc:
        return "refused", (type(exc).__name__, str(exc))


@settings(max_examples=800, deadline=None)
@given(entry_documents())
def test_entry_from_json_agrees_with_the_field_by_field_checks(doc: Any) -> None:
    assert entry_outcome(entry_from_json, doc) == entry_outcome(entry_from_json_reference, doc)


def test_canonical_json_of_parsed_entries_round_trips() -> None:
    # The path an append takes: parse, build, encode; equal to the reference all along.
    entry = AuditEntry(
        action="rollout", namespace="ns", name="ünïcode:name", uid="u", generation=7,
        digest="sha256:" + "ab" * 32, decision="allowed", reasons=("a:b", "😀"),
        actor="system:serviceaccount:x:y", time="2025-01-31T12:00:00Z", idempotency_key="k",
    )  # fmt: skip
    data = canonical_json(entry_to_json(entry))
    assert entry_from_json(parse_json_strict(data)) == entry
    assert leaf_data(entry_from_json(parse_json_strict(data))) == data
