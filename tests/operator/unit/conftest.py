"""Sample ModelDeployment and ModelTrustPolicy objects, shaped as the API server returns them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
ED25519_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)
VERIFIER_KEY = "ledger.example+7c3d1a2b+AQID" + "A" * 40


def _md() -> dict[str, Any]:
    return {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "resnet",
            "namespace": "ml",
            "uid": "0b6c1f3e-2f43-4d6e-9a53-6f1f4b0e2a11",
            "generation": 3,
        },
        "spec": {
            "model": {
                "name": "resnet50",
                "version": "1.2.0",
                "uri": "https://models.example/resnet50.onnx",
                "digest": DIGEST,
            },
            "replicas": 2,
            "policy": "default",
            "runtime": {
                "image": "registry.example/modeltrust@sha256:" + "11" * 32,
                "port": 8080,
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"memory": 2},
                },
                "env": [{"name": "OMP_NUM_THREADS", "value": "2"}],
                "nodeSelector": {"pool": "inference"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    }


def _policy() -> dict[str, Any]:
    return {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelTrustPolicy",
        "metadata": {"name": "default", "generation": 1},
        "spec": {
            "ledger": {"url": "http://127.0.0.1:8443/", "verifierKey": VERIFIER_KEY},
            "publishers": [
                {"name": "acme", "publicKey": ED25519_PEM},
                {"name": "vision", "publicKey": ED25519_PEM, "modelNamePatterns": ["resnet*"]},
            ],
            "threshold": 1,
        },
    }


@pytest.fixture
def md_body() -> Callable[..., dict[str, Any]]:
    """A fresh ModelDeployment dict; keyword overrides replace spec or model fields."""

    def make(**model_overrides: Any) -> dict[str, Any]:
        body = copy.deepcopy(_md())
        body["spec"]["model"].update(model_overrides)
        return body

    return make


@pytest.fixture
def policy_body() -> Callable[[], dict[str, Any]]:
    return lambda: copy.deepcopy(_policy())
