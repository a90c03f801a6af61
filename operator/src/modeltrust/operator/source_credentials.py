"""The credentials a ModelDeployment names for reading its model (spec.model.credentials).

The operator reads the Secret only to fetch the artifact for its own check; the pod's
fetch step gets the same Secret mounted (builders.py). The Secret must be in the
ModelDeployment's namespace and list, in its `modeltrust.dev/hosts` annotation, the hosts
its credentials may be sent to: otherwise whoever may create a ModelDeployment (but not
read Secrets) could name a server of their own and receive them.

`credentials_from_secret` is pure; `read_credentials` is the one API read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from modeltrust.operator.kube import Kube
from modeltrust.operator.types import ModelDeployment
from modeltrust.serving.credentials import (
    HOSTS_ANNOTATION,
    CredentialsError,
    SourceCredentials,
    credentials_from_data,
    parse_hosts,
)


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


async def read_credentials(kube: Kube, md: ModelDeployment) -> SourceCredentials | None:
    """The ModelDeployment's source credentials (None when it names none).

    Raises CredentialsError saying what is wrong: missing Secret, no permission, bad data.
    """
    name = md.model.credentials_secret
    if name is None:
        return None
    namespace = md.ref.namespace
    try:
        secret = await kube.get_secret(namespace, name)
    except ApiException as exc:
        if exc.status == 403:
            raise CredentialsError(
                f"the operator may not read Secret {namespace}/{name} "
                "(spec.model.credentials.secretName): grant it get on secrets in this namespace"
            ) from None
        raise CredentialsError(
            f"reading Secret {namespace}/{name} failed: {exc.status} {exc.reason}"
        ) from None
    if secret is None:
        raise CredentialsError(
            f"Secret {namespace}/{name} (spec.model.credentials.secretName) does not exist"
        )
    return credentials_from_secret(secret, namespace)
