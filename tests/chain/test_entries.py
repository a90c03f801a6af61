"""Ledger entries: wire format, round trips and strict validation."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from modeltrust.chain.entries import (
    AuditEntry,
    Entry,
    Registration,
    Revocation,
    entry_from_json,
    entry_from_leaf_data,
    entry_to_json,
    format_time,
    leaf_data,
    utc_now,
)
from modeltrust.chain.errors import EntryError

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "0f" * 32
KEY_ID = "1a" * 32
SIG = base64.b64encode(b"signature bytes").decode()

REGISTRATION = Registration(
    model_name="resnet50",
    model_version="1.2.0",
    digest=DIGEST,
    size=1234,
    format="onnx",
    signer_key_id=KEY_ID,
    signature_kind="modeltrust-v1",
    signature=SIG,
)
REVOCATION = Revocation(
    target_kind="digest",
    target=DIGEST,
    reason="weights poisoned",
    signer_key_id=KEY_ID,
    time="2025-01-31T12:00:00Z",
    signature=SIG,
)
AUDIT = AuditEntry(
    action="rollout",
    namespace="default",
    name="resnet",
    uid="7c9e6679-7425-40de-944b-e07fc1f90ae7",
    generation=3,
    digest=DIGEST,
    decision="allowed",
    reasons=("signature verified", "not revoked"),
    actor="system:serviceaccount:modeltrust:operator",
    time="2025-01-31T12:00:01.5Z",
    idempotency_key="uid-3-rollout",
)
ALL: list[Entry] = [REGISTRATION, REVOCATION, AUDIT]


def test_registration_leaf_data_is_the_documented_canonical_json() -> None:
    assert leaf_data(REGISTRATION) == (
        b'{"digest":"' + DIGEST.encode() + b'","format":"onnx","kind":"registration",'
        b'"model_name":"resnet50","model_version":"1.2.0","signature":"' + SIG.encode() + b'",'
        b'"signature_kind":"modeltrust-v1","signer_key_id":"' + KEY_ID.encode() + b'",'
        b'"size":1234}'
    )


@pytest.mark.parametrize("entry", ALL, ids=lambda e: type(e).__name__)
def test_round_trips(entry: Entry) -> None:
    obj = entry_to_json(entry)
    assert obj["kind"] in {"registration", "revocation", "audit"}
    assert entry_from_json(obj) == entry
    assert entry_from_leaf_data(leaf_data(entry)) == entry


def with_field(entry: Entry, **changes: Any) -> dict[str, Any]:
    obj = entry_to_json(entry)
    obj.update(changes)
    return obj


@pytest.mark.parametrize(
    ("entry", "changes", "message"),
    [
        (REGISTRATION, {"kind": "registrations"}, "entry kind"),
        (REGISTRATION, {"extra": 1}, "unknown field.*extra"),
        (REGISTRATION, {"digest": "sha256:" + "0F" * 32}, "digest"),
        (REGISTRATION, {"digest": "md5:abc"}, "digest"),
        (REGISTRATION, {"model_name": ""}, "model_name must be a non-empty"),
        (REGISTRATION, {"model_name": "x" * 254}, "model_name is 254 characters"),
        (REGISTRATION, {"model_name": "a\nb"}, "control character"),
        (REGISTRATION, {"model_version": 1}, "model_version must be a string"),
        (REGISTRATION, {"size": True}, "size must be an integer"),
        (REGISTRATION, {"size": -1}, "size must be an integer from 0"),
        (REGISTRATION, {"format": "pickle"}, "format 'pickle'"),
        (REGISTRATION, {"signer_key_id": "1A" * 32}, "signer_key_id"),
        (REGISTRATION, {"signature_kind": "pgp"}, "signature_kind 'pgp'"),
        (REGISTRATION, {"signature": "not base64!"}, "signature is not valid"),
        (REGISTRATION, {"signature": "QQ"}, "signature is not valid"),
        (REGISTRATION, {"signature": "QR=="}, "not canonical"),
        (REGISTRATION, {"signature": ""}, "non-empty base64"),
        (REVOCATION, {"target_kind": "model"}, "target_kind"),
        (REVOCATION, {"target_kind": "key", "target": DIGEST}, "target must be 64"),
        (REVOCATION, {"time": "2025-01-31T12:00:00+00:00"}, "RFC 3339 UTC"),
        (REVOCATION, {"time": "2025-01-31 12:00:00Z"}, "RFC 3339 UTC"),
        (REVOCATION, {"time": "2025-02-30T12:00:00Z"}, "real calendar time"),
        (REVOCATION, {"reason": ""}, "reason must be a non-empty"),
        (AUDIT, {"reasons": "one reason"}, "list of strings"),
        (AUDIT, {"reasons": ["ok", 3]}, "list of strings"),
        (AUDIT, {"reasons": ["x"] * 33}, "at most 32"),
        (AUDIT, {"generation": "3"}, "generation must be an integer"),
        (AUDIT, {"action": "Roll Out"}, "lowercase word"),
        (AUDIT, {"decision": ""}, "lowercase word"),
        (AUDIT, {"idempotency_key": ""}, "idempotency_key"),
    ],
)
def test_invalid_entries_are_refused(entry: Entry, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(EntryError, match=message):
        entry_from_json(with_field(entry, **changes))


def test_missing_fields_and_non_objects_are_refused() -> None:
    obj = entry_to_json(AUDIT)
    del obj["uid"]
    with pytest.raises(EntryError, match=r"lacks field.*uid"):
        entry_from_json(obj)
    with pytest.raises(EntryError, match="entry kind None"):
        entry_from_json({})
    with pytest.raises(EntryError, match="JSON object"):
        entry_from_json([])  # type: ignore[arg-type]


def test_constructors_validate_too() -> None:
    with pytest.raises(EntryError, match="digest"):
        dataclasses.replace(REGISTRATION, digest="sha256:xyz")


def test_leaf_data_must_be_canonical() -> None:
    data = leaf_data(REVOCATION)
    spaced = data.replace(b",", b", ")
    with pytest.raises(EntryError, match="canonical form"):
        entry_from_leaf_data(spaced)
    with pytest.raises(EntryError, match="not valid entry JSON"):
        entry_from_leaf_data(data[:-1])
    with pytest.raises(EntryError, match="floating-point"):
        entry_from_leaf_data(data[:-1] + b',"extra":1.0}')


def test_times() -> None:
    now = utc_now()
    assert now.endswith("Z")
    assert len(now) == 20
    assert format_time(datetime(2025, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == "2025-01-02T03:04:05Z"
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime(2025, 1, 2))
