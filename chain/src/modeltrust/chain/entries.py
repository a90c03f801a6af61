"""Ledger entries: registrations, revocations and audit records, strictly validated.

An entry's leaf data is the RFC 8785 canonical JSON of ``entry_to_json(entry)``:
an object with ``"kind"`` plus exactly the fields of its dataclass (snake_case).
Anything else (unknown kinds or fields, wrong types, malformed digests, key ids,
times or base64, over-long strings) is refused with an EntryError naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Final

import orjson

from modeltrust.chain.canonical import MAX_SAFE_INTEGER, canonical_json, parse_json_strict
from modeltrust.chain.digest import parse_digest
from modeltrust.chain.errors import CanonicalJSONError, EntryError, InvalidArgumentError

SIGNATURE_KINDS: Final = ("modeltrust-v1", "cosign-blob", "oms-bundle")
MODEL_FORMATS: Final = ("onnx",)
REVOCATION_TARGETS: Final = ("digest", "key")

MAX_NAME = 253  # model names, Kubernetes object names
MAX_SHORT = 128  # versions, uids, actors' tokens, idempotency keys
MAX_TEXT = 1024  # free text: reasons
MAX_REASONS = 32
MAX_SIGNATURE = 256 * 1024  # base64; OMS bundles carry a DSSE envelope and key material

_KEY_ID = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[a-z][a-z0-9-]{0,62}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # digest.parse_digest's form, checked inline
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")


@dataclass(frozen=True, slots=True)
class Registration:
    """A publisher's signed statement that ``digest`` is ``model_name`` at ``model_version``."""

    model_name: str
    model_version: str
    digest: str
    size: int
    format: str
    signer_key_id: str
    signature_kind: str
    signature: str

    def __post_init__(self) -> None:
        _text("model_name", self.model_name, MAX_NAME)
        _text("model_version", self.model_version, MAX_SHORT)
        _digest("digest", self.digest)
        _count("size", self.size)
        _choice("format", self.format, MODEL_FORMATS)
        _key_id("signer_key_id", self.signer_key_id)
        _choice("signature_kind", self.signature_kind, SIGNATURE_KINDS)
        _base64("signature", self.signature)


@dataclass(frozen=True, slots=True)
class Revocation:
    """A publisher's signed withdrawal of a digest or of a signing key."""

    target_kind: str
    target: str
    reason: str
    signer_key_id: str
    time: str
    signature: str

    def __post_init__(self) -> None:
        _choice("target_kind", self.target_kind, REVOCATION_TARGETS)
        if self.target_kind == "digest":
            _digest("target", self.target)
        else:
            _key_id("target", self.target)
        _text("reason", self.reason, MAX_TEXT)
        _key_id("signer_key_id", self.signer_key_id)
        check_time("time", self.time)
        _base64("signature", self.signature)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record of a decision the operator took about a ModelDeployment."""

    action: str
    namespace: str
    name: str
    uid: str
    generation: int
    digest: str
    decision: str
    reasons: tuple[str, ...]
    actor: str
    time: str
    idempotency_key: str

    def __post_init__(self) -> None:
        _token("action", self.action)
        _text("namespace", self.namespace, 63)
        _text("name", self.name, MAX_NAME)
        _text("uid", self.uid, MAX_SHORT)
        _count("generation", self.generation)
        _digest("digest", self.digest)
        _token("decision", self.decision)
        if not isinstance(self.reasons, tuple) or len(self.reasons) > MAX_REASONS:
            raise EntryError(f"reasons must be a tuple of at most {MAX_REASONS} strings")
        for i, reason in enumerate(self.reasons):
            _text(f"reasons[{i}]", reason, MAX_TEXT)
        _text("actor", self.actor, MAX_NAME)
        check_time("time", self.time)
        _text("idempotency_key", self.idempotency_key, MAX_SHORT)


Entry = Registration | Revocation | AuditEntry

_KINDS: Final[dict[str, type[Registration] | type[Revocation] | type[AuditEntry]]] = {
    "registration": Registration,
    "revocation": Revocation,
    "audit": AuditEntry,
}
_KIND_OF: Final = {cls: kind for kind, cls in _KINDS.items()}
_FIELDS: Final = {kind: {f.name: f.type for f in fields(cls)} for kind, cls in _KINDS.items()}


def entry_kind(e: Entry) -> str:
    """``"registration"``, ``"revocation"`` or ``"audit"``."""
    return _KIND_OF[type(e)]


def entry_to_json(e: Entry) -> dict[str, Any]:
    """The entry as a JSON object, including ``"kind"``."""
    obj: dict[str, Any] = {"kind": entry_kind(e)}
    for name in _FIELDS[obj["kind"]]:
        value = getattr(e, name)
        obj[name] = list(value) if isinstance(value, tuple) else value
    return obj


def entry_from_json(obj: Mapping[str, Any]) -> Entry:
    """Build an entry from a JSON object, refusing unknown kinds, unknown or missing fields
    and values of the wrong type or format."""
    if not isinstance(obj, Mapping):
        raise EntryError(f"an entry must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise EntryError(f"entry kind {kind!r} is not one of {', '.join(_KINDS)}")
    expected = _FIELDS[kind]
    if obj.keys() != _KEYS_WITH_KIND[kind]:  # one set comparison on the hot path
        unknown = sorted(set(obj) - set(expected) - {"kind"})
        if unknown:
            raise EntryError(f"{kind} entry has unknown field(s): {', '.join(unknown)}")
        missing = [name for name in expected if name not in obj]
        if missing:
            raise EntryError(f"{kind} entry lacks field(s): {', '.join(missing)}")
    spec = _SPECS[kind]
    values = list(spec.values_of(obj))  # in field order
    if tuple(map(type, values)) != spec.types or not all(
        _is_plain_string_list(values[i]) for i in spec.list_positions
    ):
        _refuse_wrong_types(kind, obj)  # or str subclasses only: acceptable, as before
    for i in spec.list_positions:
        values[i] = tuple(values[i])
    return spec.cls(*values)


def _refuse_wrong_types(kind: str, obj: Mapping[str, Any]) -> None:
    """Name the first field (in field order) whose value has the wrong type."""
    for name, annotation in _FIELDS[kind].items():
        value = obj[name]
        if annotation == "int":
            if type(value) is not int:
                raise EntryError(f"{kind}.{name} must be an integer")
        elif annotation == "tuple[str, ...]":
            if not _is_string_list(value):
                raise EntryError(f"{kind}.{name} must be a list of strings")
        elif not isinstance(value, str):
            raise EntryError(f"{kind}.{name} must be a string")


def _is_string_list(value: object) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


def _is_plain_string_list(value: list[Any]) -> bool:
    return all(type(v) is str for v in value)


@dataclass(frozen=True, slots=True)
class _KindSpec:
    """An entry kind's fields in order: how to read them and the JSON types they take."""

    cls: type[Registration] | type[Revocation] | type[AuditEntry]
    values_of: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    types: tuple[type, ...]  # str, int, or list (a list of strings)
    list_positions: tuple[int, ...]


_KEYS_WITH_KIND: Final = {kind: {"kind", *names} for kind, names in _FIELDS.items()}
_JSON_TYPES: Final[dict[str, type]] = {"str": str, "int": int, "tuple[str, ...]": list}
_SPECS: Final = {
    kind: _KindSpec(
        cls,
        values_of=itemgetter(*_FIELDS[kind]),
        types=tuple(_JSON_TYPES[str(a)] for a in _FIELDS[kind].values()),
        list_positions=tuple(
            i for i, a in enumerate(_FIELDS[kind].values()) if a == "tuple[str, ...]"
        ),
    )
    for kind, cls in _KINDS.items()
}


def leaf_data(e: Entry) -> bytes:
    """The bytes the ledger hashes as this entry's leaf: canonical JSON.

    Equal to ``canonical_json(entry_to_json(e))`` (tests/chain/test_fast_paths.py), written
    by orjson: construction validated every value (ASCII field names, strings without
    lone surrogates or control characters, safe integers, tuples of strings), and for
    such values orjson's sorted, compact output escapes exactly as RFC 8785 does.
    """
    kind = _KIND_OF[type(e)]
    obj = {name: getattr(e, name) for name in _FIELDS[kind]}
    obj["kind"] = kind
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def leaf_data_reference(e: Entry) -> bytes:
    """``leaf_data`` by the general RFC 8785 encoder: the definition the fast path meets."""
    return canonical_json(entry_to_json(e))


def entry_from_leaf_data(data: bytes) -> Entry:
    """Parse leaf data, refusing anything that is not exactly the entry's canonical form."""
    try:
        entry = entry_from_json(parse_json_strict(data))
    except CanonicalJSONError as e:
        raise EntryError(f"leaf data is not valid entry JSON: {e}") from None
    if leaf_data(entry) != data:
        raise EntryError("leaf data is not in RFC 8785 canonical form")
    return entry


def utc_now() -> str:
    """The current time as RFC 3339 UTC with whole seconds, e.g. 2025-01-31T12:00:00Z."""
    return format_time(datetime.now(UTC))


def format_time(t: datetime) -> str:
    if t.tzinfo is None:
        raise InvalidArgumentError("refusing a naive datetime: give it a time zone")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_time(field: str, value: str) -> datetime:
    """Parse an RFC 3339 UTC time ``YYYY-MM-DDTHH:MM:SS[.fraction]Z``."""
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise EntryError(f"{field} {value!r} is not an RFC 3339 UTC time like 2025-01-31T12:00:00Z")
    # The pattern fixed every field's digits, so fromisoformat only has to check the
    # calendar (year 1-9999, days per month, leap years, 0-59 minutes and seconds)
    # as strptime did, at a fiftieth of its cost: this runs for every appended entry.
    # Newer Pythons read hour 24 as the next midnight; an entry never means that.
    if value[11:13] != "24":
        try:
            return datetime.fromisoformat(value[:19] + "+00:00")
        except ValueError:
            pass
    raise EntryError(f"{field} {value!r} is not a real calendar time")


def _text(field: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or not value:
        raise EntryError(f"{field} must be a non-empty string")
    if len(value) > limit:
        raise EntryError(f"{field} is {len(value)} characters long, the limit is {limit}")
    if value.isascii() and value.isprintable():
        return  # printable ASCII (U+0020..U+007E): no control character, no surrogate
    if _CONTROL.search(value):
        raise EntryError(f"{field} contains a control character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise EntryError(f"{field} is not valid Unicode (lone surrogate)") from None


def _token(field: str, value: str) -> None:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise EntryError(f"{field} {value!r} must be a lowercase word like 'rollout' or 'refused'")


def _choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise EntryError(f"{field} {value!r} is not one of {', '.join(allowed)}")


def _digest(field: str, value: str) -> None:
    if type(value) is str and _DIGEST.fullmatch(value):
        return
    try:
        parse_digest(value)  # for its message
    except EntryError as e:
        raise EntryError(f"{field}: {e}") from None


def _key_id(field: str, value: str) -> None:
    if not isinstance(value, str) or not _KEY_ID.fullmatch(value):
        raise EntryError(f"{field} must be 64 lowercase hex digits (SHA-256 of the public key)")


def _count(field: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_SAFE_INTEGER:
        raise EntryError(f"{field} must be an integer from 0 to 2**53 - 1")


def _base64(field: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise EntryError(f"{field} must be non-empty base64")
    if len(value) > MAX_SIGNATURE:
        raise EntryError(f"{field} is longer than {MAX_SIGNATURE} characters")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{field} is not valid standard base64") from None
    if base64.b64encode(raw).decode() != value:
        raise EntryError(f"{field} is not canonical base64 (padding or trailing bits)")
