"""examples/: the commented ModelTrustPolicy sets every field its CRD defines, and its keys
are what the operator will accept. tests/e2e/test_examples.py has the API server validate
the examples (schema and CEL rules)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.signatures import key_id, load_public_key

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
POLICY_CRD = REPO / "crds" / "modeltrust.dev_modeltrustpolicies.yaml"


def spec_fields(schema: dict[str, Any], path: str = "spec") -> Iterator[str]:
    """Every field path the schema defines under `path` ("[]" for list items)."""
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}.{name}"
        yield here
        yield from spec_fields(sub, here)
        if sub.get("type") == "array":
            yield from spec_fields(sub["items"], here + "[]")


def present(obj: Any, path: list[str]) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    if head.endswith("[]"):
        items = obj.get(head[:-2]) if isinstance(obj, dict) else None
        return isinstance(items, list) and any(present(i, rest) for i in items)
    return isinstance(obj, dict) and head in obj and present(obj[head], rest)


def test_the_policy_example_sets_every_field_of_the_crds_spec() -> None:
    crd = yaml.safe_load(POLICY_CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    example = yaml.safe_load((EXAMPLES / "modeltrustpolicy.yaml").read_text())
    assert example["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert example["kind"] == crd["spec"]["names"]["kind"]
    fields = list(spec_fields(schema))
    assert len(fields) > 20, "the CRD's spec was not found"
    missing = [f for f in fields if not present(example, f.split("."))]
    assert not missing, f"examples/modeltrustpolicy.yaml leaves out {missing}"
    # Every field is explained: the file has a comment line per spec field, at least.
    text = (EXAMPLES / "modeltrustpolicy.yaml").read_text()
    comments = [line for line in text.splitlines() if line.strip().startswith("#")]
    assert len(comments) >= len([f for f in fields if "[]" not in f])


def test_the_policy_examples_keys_are_well_formed_and_consistent() -> None:
    spec = yaml.safe_load((EXAMPLES / "modeltrustpolicy.yaml").read_text())["spec"]
    verifier = NoteVerifier.from_verifier_key(spec["ledger"]["verifierKey"])
    assert spec["ledger"]["origin"] == verifier.name
    for witness in spec["ledger"]["witnesses"]:
        NoteVerifier.from_verifier_key(witness)
    for publisher in spec["publishers"]:
        kid = key_id(load_public_key(publisher["publicKey"].encode()))
        if "keyId" in publisher:
            assert publisher["keyId"] == kid, publisher["name"]
