"""Choosing a model source's Secret from the ServiceAccount the pods run as (KServe's way):
exactly the one whose modeltrust.dev/hosts covers the model's host."""

from __future__ import annotations

from typing import Any

import pytest

from modeltrust.operator.source_credentials import (
    secret_for_host,
    service_account_secret_names,
    source_host,
)
from modeltrust.serving.credentials import CredentialsError

pytestmark = pytest.mark.unit


def _secret(name: str, hosts: str | None) -> dict[str, Any]:
    annotations = {} if hosts is None else {"modeltrust.dev/hosts": hosts}
    return {"metadata": {"name": name, "annotations": annotations}, "data": {}}


def test_the_names_come_from_secrets_then_image_pull_secrets_once_each() -> None:
    account = {
        "secrets": [{"name": "token-abc"}, {"name": "models"}],
        "imagePullSecrets": [{"name": "registry"}, {"name": "models"}, {}],
    }
    assert service_account_secret_names(account) == ["token-abc", "models", "registry"]
    assert service_account_secret_names({}) == []


@pytest.mark.parametrize(
    ("uri", "endpoint", "expected"),
    [
        ("https://models.example.com/m.onnx", None, ("models.example.com", None)),
        ("https://models.example.com:8443/m.onnx", None, ("models.example.com", 8443)),
        (
            "oci://registry.example.com:5000/ml/m@sha256:" + "a" * 64,
            None,
            ("registry.example.com", 5000),
        ),
        ("s3://bucket/key", "https://minio.example.com:9000", ("minio.example.com", 9000)),
        ("s3://bucket/key", None, None),  # Amazon S3: the bucket and region make the host
        ("/models/m.onnx", None, None),
        ("file:///models/m.onnx", None, None),
    ],
)
def test_the_host_of_each_kind_of_source(
    uri: str, endpoint: str | None, expected: tuple[str, int | None] | None
) -> None:
    assert source_host(uri, endpoint) == expected


def test_the_one_secret_whose_hosts_cover_the_model_host_is_chosen() -> None:
    secrets = {
        "token-abc": _secret("token-abc", None),  # not meant for sources: passed over
        "other": _secret("other", "other.example.com"),
        "models": _secret("models", "models.example.com, registry.example.com:5000"),
        "gone": None,  # listed, but does not exist
    }
    assert secret_for_host("sa", secrets, "models.example.com", 443) == "models"
    assert secret_for_host("sa", secrets, "registry.example.com", 5000) == "models"
    assert secret_for_host("sa", secrets, "other.example.com", None) == "other"


def test_no_secret_covering_the_host_means_none() -> None:
    secrets = {"other": _secret("other", "other.example.com"), "plain": _secret("plain", None)}
    assert secret_for_host("sa", secrets, "models.example.com", None) is None
    # The port must match when the annotation names one.
    ported = {"p": _secret("p", "registry.example.com:5000")}
    assert secret_for_host("sa", ported, "registry.example.com", 5001) is None
    assert secret_for_host("sa", {}, "models.example.com", None) is None


def test_two_secrets_covering_the_host_are_refused_by_name() -> None:
    secrets = {
        "models-a": _secret("models-a", "models.example.com"),
        "models-b": _secret("models-b", "models.example.com:443"),
    }
    with pytest.raises(CredentialsError) as raised:
        secret_for_host("ml-runner", secrets, "models.example.com", 443)
    message = str(raised.value)
    assert "ServiceAccount ml-runner lists 2 Secrets" in message
    assert "models-a, models-b" in message
    assert "spec.model.credentials.secretName" in message


def test_a_malformed_annotation_is_reported_not_skipped() -> None:
    secrets = {"bad": _secret("bad", "https://models.example.com/")}
    with pytest.raises(CredentialsError, match="Secret bad, listed by ServiceAccount sa"):
        secret_for_host("sa", secrets, "models.example.com", None)
