"""The credentials a ModelDeployment names for reading its model (spec.model.credentials).

The operator reads the Secret only to fetch the artifact for its own check; the pod's
fetch step gets the same Secret mounted (builders.py). The Secret must be in the
ModelDeployment's namespace and list, in its `modeltrust.dev/hosts` annotation, the hosts
its credentials may be sent to: otherwise whoever may create a ModelDeployment (but not
read Secrets) could name a server of their own and receive them.

`credentials_from_secret` and `secret_for_host` are pure; `read_credentials` is the one
API read.

`secret_for_host` is the choice KServe makes from a ServiceAccount: among the Secrets it
lists (`secrets` and `imagePullSecrets`), the one whose `modeltrust.dev/hosts` covers the
model's host. Secrets without the annotation are not meant for sources (a token, a pull
secret for other registries) and are passed over; two that both cover the host are an
ambiguity the operator refuses rather than guesses.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from kubernetes.client.exceptions import ApiException

from modeltrust.operator.kube import Kube
from modeltrust.operator.types import ModelDeployment
from modeltrust.serving.credentials import (
    HOSTS_ANNOTATION,
    CredentialsError,
    SourceCredentials,
    credentials_from_data,
    host_allowed,
    parse_hosts,
)

DEFAULT_SERVICE_ACCOUNT = "default"  # what a pod without serviceAccountName runs as


def credentials_from_secret(secret: Mapping[str, Any], namespace: str) -> SourceCredentials:
    """Parse a Secret object (as the API returns it); raises CredentialsError."""
    meta = secret.get("metadata") or {}
    name = f"Secret {namespace}/{meta.get('name', '?')}"
    annotations = meta.get("annotations") or {}
    hosts = parse_hosts(str(annotations.get(HOSTS_ANNOTATION) or ""))
    if not hosts:
        raise CredentialsError(
            f"{name} has no {HOSTS_ANNOTATION} annotation: list the hosts (host or host:port, "
            "comma separated) its credentials may be sent to, e.g. "
            f"kubectl annotate secret -n {namespace} {meta.get('name', '?')} "
            f"{HOSTS_ANNOTATION}=registry.example.com"
        )
    data: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise CredentialsError(f"{name} key {key} is not base64 (API data)") from None
    return credentials_from_data(data, hosts=hosts, source_name=name)


def source_host(uri: str, s3_endpoint: str | None) -> tuple[str, int | None] | None:
    """The host (and port) a source's requests go to first: an http(s) URL's, an OCI
    registry's, an S3 endpoint's. None when that is not known before asking (Amazon S3
    without an endpoint: the bucket and region make the host) or for local files."""
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not s3_endpoint:
            return None
        parts = urlsplit(s3_endpoint)
    elif parts.scheme not in ("https", "http", "oci"):
        return None
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return parts.hostname, port


def service_account_secret_names(service_account: Mapping[str, Any]) -> list[str]:
    """The Secret names a ServiceAccount lists, `secrets` then `imagePullSecrets`, once each."""
    names: list[str] = []
    for key in ("secrets", "imagePullSecrets"):
        for item in service_account.get(key) or []:
            name = item.get("name") if isinstance(item, Mapping) else None
            if isinstance(name, str) and name and name not in names:
                names.append(name)
    return names


def secret_for_host(
    service_account: str,
    secrets: Mapping[str, Mapping[str, Any] | None],
    host: str,
    port: int | None,
) -> str | None:
    """The name of the one Secret, of those the ServiceAccount lists (`secrets`: name ->
    the Secret, None when it does not exist), whose modeltrust.dev/hosts covers host[:port];
    None when no Secret covers it. Raises CredentialsError when several do, or when a
    Secret's annotation is malformed (it is meant for sources, so it must be readable)."""
    matches: list[str] = []
    for name, secret in secrets.items():
        if secret is None:
            continue
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        text = annotations.get(HOSTS_ANNOTATION)
        if not text:
            continue
        try:
            hosts = parse_hosts(str(text))
        except CredentialsError as error:
            raise CredentialsError(
                f"Secret {name}, listed by ServiceAccount {service_account}: {error}"
            ) from None
        if host_allowed(hosts, host, port):
            matches.append(name)
    if len(matches) > 1:
        where = f"{host}:{port}" if port else host
        raise CredentialsError(
            f"ServiceAccount {service_account} lists {len(matches)} Secrets whose "
            f"{HOSTS_ANNOTATION} covers {where} ({', '.join(sorted(matches))}); name the one "
            "to use in spec.model.credentials.secretName, or narrow their annotations"
        )
    return matches[0] if matches else None


@dataclass(frozen=True)
class ChosenCredentials:
    credentials: SourceCredentials
    secret: str  # the Secret's name, in the ModelDeployment's namespace
    from_service_account: bool  # chosen from the pods' ServiceAccount, not named in spec


async def read_credentials(
    kube: Kube,
    md: ModelDeployment,
    *,
    default_service_account: str | None = None,
    look_up_service_account: bool = False,
) -> ChosenCredentials | None:
    """The ModelDeployment's source credentials (None when it has none).

    spec.model.credentials.secretName when given; else, with `look_up_service_account`
    (the chart's operator.readSourceCredentials), the one Secret the pods' ServiceAccount
    lists whose modeltrust.dev/hosts covers the model's host (secret_for_host).
    Raises CredentialsError saying what is wrong: missing Secret, no permission, bad data,
    two Secrets for one host.
    """
    name = md.model.credentials_secret
    namespace = md.ref.namespace
    if name is not None:
        secret = await _read_secret(kube, namespace, name, "spec.model.credentials.secretName")
        if secret is None:
            raise CredentialsError(
                f"Secret {namespace}/{name} (spec.model.credentials.secretName) does not exist"
            )
        return ChosenCredentials(credentials_from_secret(secret, namespace), name, False)
    if not look_up_service_account:
        return None
    s3_endpoint = md.model.s3.endpoint if md.model.s3 is not None else None
    host = source_host(md.model.uri, s3_endpoint)
    if host is None:
        return None
    account_name = (
        md.runtime.service_account_name or default_service_account or DEFAULT_SERVICE_ACCOUNT
    )
    try:
        account = await kube.get_service_account(namespace, account_name)
    except ApiException as exc:
        if exc.status == 403:
            raise CredentialsError(
                f"the operator may not read ServiceAccount {namespace}/{account_name} (the "
                "pods' ServiceAccount, whose Secrets may hold the source credentials): grant "
                "it get on serviceaccounts (operator.readSourceCredentials)"
            ) from None
        raise CredentialsError(
            f"reading ServiceAccount {namespace}/{account_name} failed: {exc.status} {exc.reason}"
        ) from None
    if account is None:
        return None  # the pods would not start either; their own events say so
    where = f"listed by ServiceAccount {namespace}/{account_name}"
    secrets = {
        listed: await _read_secret(kube, namespace, listed, where)
        for listed in service_account_secret_names(account)
    }
    chosen = secret_for_host(f"{namespace}/{account_name}", secrets, *host)
    if chosen is None:
        return None
    secret = secrets[chosen]
    assert secret is not None
    return ChosenCredentials(credentials_from_secret(secret, namespace), chosen, True)


async def _read_secret(
    kube: Kube, namespace: str, name: str, named_by: str
) -> Mapping[str, Any] | None:
    try:
        return await kube.get_secret(namespace, name)
    except ApiException as exc:
        if exc.status == 403:
            raise CredentialsError(
                f"the operator may not read Secret {namespace}/{name} ({named_by}): grant it "
                "get on secrets in this namespace"
            ) from None
        raise CredentialsError(
            f"reading Secret {namespace}/{name} failed: {exc.status} {exc.reason}"
        ) from None
