"""The modeltrust custom resources as tests and benchmarks write them: the CRDs, a
ModelDeployment, a ModelTrustPolicy, and the publishers a policy trusts."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cluster import Cluster
from modeltrust.chain.signatures import generate_private_key, key_id, public_key_pem

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
# The audit writers' token a test ledger process accepts and a test operator presents.
TOKEN = "e2e-audit-token"
API_VERSION = "modeltrust.dev/v1alpha1"


def install_crds(cluster: Cluster) -> None:
    """Apply the CRDs and wait until the API server serves both kinds."""
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/modeldeployments.modeltrust.dev", "crd/modeltrustpolicies.modeltrust.dev",
    )  # fmt: skip


@dataclass
class Publisher:
    """A model publisher: a name and a fresh Ed25519 key."""

    name: str
    key: Any = field(default_factory=lambda: generate_private_key("ed25519"))

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())

    @property
    def pem(self) -> str:
        return public_key_pem(self.key.public_key()).decode()


def trust_policy(
    name: str,
    ledger_url: str,
    verifier_key: str,
    publishers: list[Publisher],
    spec: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A cluster-scoped ModelTrustPolicy trusting `publishers` on one ledger; `spec` adds
    or replaces spec fields (enforcement, revocationAction, ledger, publishers, ...)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelTrustPolicy",
        "metadata": {"name": name},
        "spec": {
            "ledger": {"url": ledger_url, "verifierKey": verifier_key},
            "publishers": [{"name": p.name, "publicKey": p.pem} for p in publishers],
            **(spec or {}),
        },
    }


def apply(cluster: Cluster, body: dict[str, Any]) -> None:
    """`kubectl apply` of one object."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))


def model_deployment(
    namespace: str,
    name: str,
    policy: str,
    uri: str,
    digest: str,
    *,
    version: str = "1.0.0",
    replicas: int = 1,
) -> dict[str, Any]:
    """A ModelDeployment of the model "mnist" at `uri`, pinned to `digest`."""
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "mnist", "version": version, "uri": uri, "digest": digest},
            "replicas": replicas,
            "policy": policy,
        },
    }


def source_secret(
    namespace: str, name: str, hosts: str | None, data: dict[str, bytes]
) -> dict[str, Any]:
    """A Secret for spec.model.credentials; `hosts`: its modeltrust.dev/hosts annotation
    (None: not annotated)."""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }
    if hosts is not None:
        body["metadata"]["annotations"] = {"modeltrust.dev/hosts": hosts}
    return body
