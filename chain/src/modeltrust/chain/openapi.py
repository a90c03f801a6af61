"""The OpenAPI 3.1 document of the ledger API, served at /openapi.json.

Why one long module: it is data (the API document), one entry per route.

Kept next to the handlers by hand (the API is small); tests check that every route
the server registers is documented and that documented responses match reality.
"""

from __future__ import annotations

from functools import cache
from typing import Any

_B64_HASH = {
    "type": "string",
    "contentEncoding": "base64",
    "description": "32-byte SHA-256 hash, standard base64",
    "pattern": "^[A-Za-z0-9+/]{43}=$",
}
_PROOF = {"type": "array", "items": {"$ref": "#/components/schemas/Hash"}}
_UINT = {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}
_SIZE = {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999}
_NOTE = {"type": "string", "description": "C2SP signed note carrying a tlog-checkpoint"}


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _q(name: str, schema: dict[str, Any], required: bool, description: str = "") -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if description:
        p["description"] = description
    return p


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _UINT}


_LOOKUP_PAGING = [
    _q("after", _UINT, False, "only entries with a larger index (paging)"),
    _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, False),
]
_DIGEST = {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"}
_KEY_ID = {"type": "string", "pattern": "^[0-9a-f]{64}$"}


def _lookup(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params + _LOOKUP_PAGING,
            "responses": {"200": _ok(_ref("LookupResult")), "400": _err("bad query")},
        }
    }


def _text(limit: int) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": limit,
        "pattern": "^[^\\x00-\\x1f\\x7f]+$",
    }


def _entry(kind: str, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", *props],
        "properties": {"kind": {"const": kind}, **props},
    }


def _entry_schemas() -> dict[str, Any]:
    """The entry kinds as modeltrust.chain.entries validates them."""
    b64 = {"type": "string", "minLength": 1, "pattern": "^[A-Za-z0-9+/]*={0,2}$"}
    time = {
        "type": "string",
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?Z$",
    }
    word = {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,62}$"}
    count = {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}
    return {
        "Registration": _entry(
            "registration",
            {
                "model_name": _text(253),
                "model_version": _text(128),
                "digest": _DIGEST,
                "size": count,
                "format": {"enum": ["onnx"]},
                "signer_key_id": _KEY_ID,
                "signature_kind": {"enum": ["modeltrust-v1", "cosign-blob", "oms-bundle"]},
                "signature": b64,
            },
        ),
        "Revocation": _entry(
            "revocation",
            {
                "target_kind": {"enum": ["digest", "key"]},
                "target": {"type": "string", "description": "a digest, or a key id"},
                "reason": _text(1024),
                "signer_key_id": _KEY_ID,
                "time": time,
                "signature": b64,
            },
        ),
        "AuditEntry": _entry(
            "audit",
            {
                "action": word,
                "namespace": _text(63),
                "name": _text(253),
                "uid": _text(128),
                "generation": count,
                "digest": _DIGEST,
                "decision": word,
                "reasons": {"type": "array", "maxItems": 32, "items": _text(1024)},
                "actor": _text(253),
                "time": time,
                "idempotency_key": _text(128),
            },
        ),
    }


@cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Hash": _B64_HASH,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "index": _UINT},
        },
        "Entry": {
            "description": "registration, revocation or audit entry (see docs/ledger.md)",
            "oneOf": [_ref("Registration"), _ref("Revocation"), _ref("AuditEntry")],
        },
        **_entry_schemas(),
        "Receipt": {
            "type": "object",
            "required": [
                "index",
                "leaf_hash",
                "inclusion_proof",
                "existing",
                "checkpoint",
                "tree_size",
            ],
            "properties": {
                "index": _UINT,
                "leaf_hash": _ref("Hash"),
                "inclusion_proof": _PROOF,
                "existing": {"type": "boolean"},
                "checkpoint": _NOTE,
                "tree_size": _UINT,
            },
        },
        "BatchReceipt": {
            "type": "object",
            "required": ["checkpoint", "tree_size", "receipts"],
            "properties": {
                "checkpoint": _NOTE,
                "tree_size": _UINT,
                "receipts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["index", "leaf_hash", "inclusion_proof", "existing"],
                        "properties": {
                            "index": _UINT,
                            "leaf_hash": _ref("Hash"),
                            "inclusion_proof": _PROOF,
                            "existing": {"type": "boolean"},
                        },
                    },
                },
            },
        },
        "StoredEntry": {
            "type": "object",
            "required": ["index", "leaf_hash", "entry"],
            "properties": {"index": _UINT, "leaf_hash": _ref("Hash"), "entry": _ref("Entry")},
        },
        "ProvenEntry": {
            "type": "object",
            "required": ["index", "leaf_hash", "entry", "inclusion_proof"],
            "properties": {
                "index": _UINT,
                "leaf_hash": _ref("Hash"),
                "entry": _ref("Entry"),
                "inclusion_proof": _PROOF,
            },
        },
        "LookupResult": {
            "type": "object",
            "required": ["checkpoint", "tree_size", "entries", "next_after"],
            "properties": {
                "checkpoint": _NOTE,
                "tree_size": _UINT,
                "entries": {"type": "array", "items": _ref("ProvenEntry")},
                "next_after": {"type": ["integer", "null"]},
            },
        },
        "Block": {
            "type": "object",
            "required": ["height", "header", "header_hash", "checkpoint"],
            "properties": {
                "height": _UINT,
                "header": {
                    "type": "object",
                    "description": "the block header; its RFC 8785 canonical JSON is hashed",
                },
                "header_hash": _ref("Hash"),
                "checkpoint": _NOTE,
            },
        },
    }
    paths: dict[str, Any] = {
        "/v1/checkpoint": {
            "get": {
                "summary": "The latest checkpoint, with the witnesses' cosignatures when the "
                "ledger has witnesses (the newest checkpoint they were asked to cosign)",
                "responses": {
                    "200": {
                        "description": "C2SP signed note",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/entries": {
            "post": {
                "summary": "Append one entry (object) or several atomically (array)",
                "description": (
                    "Answers once the entries are durable and covered by a signed checkpoint. "
                    "Registrations and revocations must be signed by a publisher key of the "
                    "ledger; audit entries need a bearer token."
                ),
                "security": [{}, {"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    _ref("Entry"),
                                    {"type": "array", "items": _ref("Entry"), "minItems": 1},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "201": _ok({"oneOf": [_ref("Receipt"), _ref("BatchReceipt")]}, "appended"),
                    "200": _ok(
                        {"oneOf": [_ref("Receipt"), _ref("BatchReceipt")]},
                        "idempotent replay of audit entries: the existing entries",
                    ),
                    "400": _err("malformed entry"),
                    "401": _err("missing or unknown bearer token"),
                    "403": _err(
                        "signer not in the publisher set, bad signature, or user not allowed"
                    ),
                    "409": _err("replay, or idempotency key reused for another entry"),
                    "413": _err("body or entry count too large"),
                    "503": _err("sequencer or token review unavailable"),
                },
            },
            "get": {
                "summary": "A range of entries [start, end), at most 1000",
                "parameters": [_q("start", _UINT, True), _q("end", _UINT, False)],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["start", "end", "entries"],
                            "properties": {
                                "start": _UINT,
                                "end": _UINT,
                                "entries": {"type": "array", "items": _ref("StoredEntry")},
                            },
                        }
                    ),
                    "400": _err("bad range"),
                    "404": _err("start beyond the tree"),
                },
            },
        },
        "/v1/entries/{index}": {
            "get": {
                "summary": "One entry",
                "parameters": [_path_param("index")],
                "responses": {
                    "200": _ok(_ref("StoredEntry")),
                    "400": _err("bad index"),
                    "404": _err("no such entry"),
                },
            }
        },
        "/v1/proofs/inclusion": {
            "get": {
                "summary": "RFC 9162 inclusion proof of entry `index` in the tree of `size`",
                "parameters": [_q("index", _UINT, True), _q("size", _SIZE, True)],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["index", "tree_size", "inclusion_proof"],
                            "properties": {
                                "index": _UINT,
                                "tree_size": _UINT,
                                "inclusion_proof": _PROOF,
                            },
                        }
                    ),
                    "400": _err("bad index or size"),
                },
            }
        },
        "/v1/proofs/consistency": {
            "get": {
                "summary": "RFC 9162 consistency proof between tree sizes `from` and `to`",
                "parameters": [_q("from", _SIZE, True), _q("to", _SIZE, True)],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["from", "to", "consistency_proof"],
                            "properties": {"from": _UINT, "to": _UINT, "consistency_proof": _PROOF},
                        }
                    ),
                    "400": _err("bad sizes"),
                },
            }
        },
        "/v1/blocks": {
            "get": {
                "summary": "A range of block headers [start, end), at most 1000",
                "parameters": [_q("start", _UINT, True), _q("end", _UINT, False)],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["start", "end", "blocks"],
                            "properties": {
                                "start": _UINT,
                                "end": _UINT,
                                "blocks": {"type": "array", "items": _ref("Block")},
                            },
                        }
                    ),
                    "400": _err("bad range"),
                    "404": _err("no such block"),
                },
            }
        },
        "/v1/blocks/{height}": {
            "get": {
                "summary": "One block header and the checkpoint that ends it",
                "parameters": [_path_param("height")],
                "responses": {
                    "200": _ok(_ref("Block")),
                    "400": _err("bad height"),
                    "404": _err("no such block"),
                },
            }
        },
        "/v1/registrations": _lookup(
            "Registrations of a digest, each with an inclusion proof at the checkpoint",
            [_q("digest", _DIGEST, True)],
        ),
        "/v1/revocations": _lookup(
            "Revocations of a digest and/or a key (give at least one)",
            [_q("digest", _DIGEST, False), _q("key_id", _KEY_ID, False)],
        ),
        "/v1/audit": _lookup(
            "Audit entries of a ModelDeployment (uid, or namespace and name)",
            [
                _q("uid", {"type": "string", "minLength": 1}, False),
                _q("namespace", {"type": "string", "minLength": 1}, False),
                _q("name", {"type": "string", "minLength": 1}, False),
            ],
        ),
        "/v1/keys": {
            "get": {
                "summary": "The checkpoint verifier key, publisher key ids, empty checkpoint",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["origin", "checkpoint_verifier_key", "publisher_key_ids"],
                            "properties": {
                                "origin": {"type": "string"},
                                "checkpoint_verifier_key": {"type": "string"},
                                "publisher_key_ids": {"type": "array", "items": _KEY_ID},
                                "empty_checkpoint": {
                                    **_NOTE,
                                    "description": "the log's signed checkpoint of the empty "
                                    "tree (the genesis of a witness's copy)",
                                },
                            },
                        }
                    )
                },
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _ok({"type": "object"})}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: the sequencer is running",
                "responses": {"200": _ok({"type": "object"}), "503": _err("not ready")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _ok({"type": "object"})}}
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modeltrust ledger",
            "version": "1",
            "description": "Append-only Merkle-tree ledger (RFC 9162, C2SP checkpoints). "
            "See docs/ledger.md for formats and verification.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
