"""Static checks on the CRDs: what kubectl explain and the API server will show users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[3] / "crds"
MD = CRDS / "modeltrust.dev_modeldeployments.yaml"
MTP = CRDS / "modeltrust.dev_modeltrustpolicies.yaml"


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def schema_of(path: Path) -> dict[str, Any]:
    (version,) = load(path)["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("path", [MD, MTP], ids=["ModelDeployment", "ModelTrustPolicy"])
def test_every_field_is_described_for_kubectl_explain(path: Path) -> None:
    undocumented = [
        p for p, node in walk(schema_of(path))
        if p and p != ".metadata" and not p.endswith(("[]", "{}")) and not node.get("description")
    ]  # fmt: skip
    assert undocumented == []


@pytest.mark.parametrize("path", [MD, MTP], ids=["ModelDeployment", "ModelTrustPolicy"])
def test_every_cel_rule_has_a_message_and_every_node_a_type(path: Path) -> None:
    for p, node in walk(schema_of(path)):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), p
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{p}: {rule['rule']}"


@pytest.mark.parametrize("path", [MD, MTP], ids=["ModelDeployment", "ModelTrustPolicy"])
def test_strings_and_lists_are_bounded(path: Path) -> None:
    # Bounds keep CEL cost estimates under the API server's budget and objects small.
    for p, node in walk(schema_of(path)):
        if not p.startswith(".spec"):
            continue
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, p
        if node.get("type") == "array":
            assert "maxItems" in node, p


def test_model_deployment_contract() -> None:
    crd = load(MD)
    assert crd["metadata"]["name"] == "modeldeployments.modeltrust.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["md"]
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    # What was asked next to what serves, and whether it is verified or only audit-mode.
    assert columns == [
        "Model", "Requested", "Serving", "Digest", "Verified", "Mode", "Ready", "Available", "Age"
    ]  # fmt: skip
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["default"] == 1
    assert spec["properties"]["policy"]["default"] == "default"
    assert set(spec["properties"]["model"]["required"]) == {"name", "version", "uri", "digest"}
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for field in (
        "observedGeneration",
        "conditions",
        "verifiedDigest",
        "signerKeyIds",
        "registrationIndex",
        "checkpointSize",
        "lastAuditIndex",
        "replicas",
        "readyReplicas",
        "servingDigest",
        "shortDigest",
        "selector",
        "runtimeImage",
        "podTemplateDigest",
        "mode",
        "artifactReadTime",
    ):
        assert field in status, field
    cond = status["conditions"]["items"]
    assert set(cond["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}


def test_trust_policy_contract() -> None:
    crd = load(MTP)
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == ["mtp"]
    spec = schema_of(MTP)["properties"]["spec"]["properties"]
    assert spec["enforcement"]["enum"] == ["Enforce", "Audit"]
    assert spec["enforcement"]["default"] == "Enforce"
    assert spec["revocationAction"]["enum"] == ["ScaleToZero", "KeepAndFlag"]
    assert spec["threshold"]["default"] == 1
    assert set(spec) >= {"namespaces", "namespaceSelector", "runtime"}
    assert set(spec["runtime"]["properties"]) == {"allowedImages", "allowedEnv"}
