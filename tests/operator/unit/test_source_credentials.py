"""Choosing a model source's Secret from the ServiceAccount the pods run as (KServe's way):
exactly the one whose modeltrust.dev/hosts covers the model's host."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from modeltrust.operator.source_credentials import (
    read_credentials,
    secret_for_host,
    service_account_secret_names,
    source_host,
)
from modeltrust.operator.types import ModelDeployment, parse_model_deployment
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


class _Kube:
    """The two reads read_credentials makes; 403 for names in `forbidden`."""

    def __init__(
        self,
        accounts: dict[str, dict[str, Any]],
        secrets: dict[str, dict[str, Any]],
        forbidden: frozenset[str] = frozenset(),
    ) -> None:
        self.accounts = accounts
        self.secrets = secrets
        self.forbidden = forbidden
        self.reads: list[str] = []

    async def get_service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"serviceaccount/{name}")
        if name in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        return self.accounts.get(name)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads.append(f"secret/{name}")
        if name in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        return self.secrets.get(name)


def _md(md_body: Callable[..., dict[str, Any]], **runtime: str) -> ModelDeployment:
    body = md_body(uri="https://models.example.com/a.onnx")
    if runtime:
        body["spec"]["runtime"] = dict(runtime)
    return parse_model_deployment(body)


def _token_secret(name: str, hosts: str | None) -> dict[str, Any]:
    secret = _secret(name, hosts)
    secret["data"] = {"token": base64.b64encode(b"t0ken").decode()}
    return secret


async def test_the_pods_service_account_supplies_the_secret_for_the_model_host(
    md_body: Callable[..., dict[str, Any]],
) -> None:
    kube = _Kube(
        {"ml-runner": {"secrets": [{"name": "sa-token"}], "imagePullSecrets": [{"name": "m"}]}},
        {
            "sa-token": _token_secret("sa-token", None),
            "m": _token_secret("m", "models.example.com"),
        },
    )
    md = _md(md_body, serviceAccountName="ml-runner")
    chosen = await read_credentials(
        kube,  # type: ignore[arg-type]
        md,
        look_up_service_account=True,
    )
    assert chosen is not None
    assert (chosen.secret, chosen.from_service_account) == ("m", True)
    assert chosen.credentials.token == "t0ken"
    assert chosen.credentials.hosts == ("models.example.com",)
    # Not enabled (the chart's operator.readSourceCredentials off): nothing is read at all.
    kube.reads.clear()
    none = await read_credentials(kube, md)  # type: ignore[arg-type]
    assert none is None
    assert kube.reads == []


async def test_the_service_account_falls_back_to_the_operator_setting_then_default(
    md_body: Callable[..., dict[str, Any]],
) -> None:
    kube = _Kube({}, {})
    md = _md(md_body)
    assert await read_credentials(kube, md, look_up_service_account=True) is None  # type: ignore[arg-type]
    await read_credentials(
        kube,  # type: ignore[arg-type]
        md,
        default_service_account="models-sa",
        look_up_service_account=True,
    )
    assert kube.reads == ["serviceaccount/default", "serviceaccount/models-sa"]


async def test_a_named_secret_wins_and_the_service_account_is_not_read(
    md_body: Callable[..., dict[str, Any]],
) -> None:
    kube = _Kube({}, {"named": _token_secret("named", "models.example.com")})
    body = md_body(uri="https://models.example.com/a.onnx")
    body["spec"]["model"]["credentials"] = {"secretName": "named"}
    chosen = await read_credentials(
        kube,  # type: ignore[arg-type]
        parse_model_deployment(body),
        look_up_service_account=True,
    )
    assert chosen is not None
    assert (chosen.secret, chosen.from_service_account) == ("named", False)
    assert kube.reads == ["secret/named"]


async def test_an_unreadable_service_account_says_which_permission_is_missing(
    md_body: Callable[..., dict[str, Any]],
) -> None:
    kube = _Kube({}, {}, forbidden=frozenset({"default"}))
    with pytest.raises(CredentialsError) as raised:
        await read_credentials(kube, _md(md_body), look_up_service_account=True)  # type: ignore[arg-type]
    assert "may not read ServiceAccount" in str(raised.value)
    assert "get on serviceaccounts" in str(raised.value)


def test_the_chosen_secret_is_kept_in_status_for_the_pods_to_mount() -> None:
    from modeltrust.operator.status_record import MDStatus

    record = MDStatus.from_status(None).patch(
        credential_hosts=("models.example.com",), credential_secret="models"
    )
    status = record.record.to_status(["credential_hosts", "credential_secret"])
    assert status == {"credentialHosts": ["models.example.com"], "credentialSecret": "models"}
    again = MDStatus.from_status(status)
    assert (again.credential_hosts, again.credential_secret) == (("models.example.com",), "models")
