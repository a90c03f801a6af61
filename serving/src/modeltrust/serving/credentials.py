"""Credentials for reading a model source, and the hosts they may be sent to.

One Kubernetes Secret (or, for the pod's fetch step, the directory it is mounted at) holds
them, under these keys; which are present says what they are for:

    token                        HTTPS bearer token (Authorization: Bearer)
    username, password           HTTPS basic auth (kubernetes.io/basic-auth), and OCI
                                 registries when there is no .dockerconfigjson
    .dockerconfigjson            OCI registry auth (kubernetes.io/dockerconfigjson)
    AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN            S3 keys (the session token is optional)
    ca.crt                       CA certificate(s), PEM, trusted for the source's TLS

Credentials are bound to hosts: they are attached only to requests for a host the Secret's
owner listed (annotation `modeltrust.dev/hosts`), never to a redirect's target or to any
other host. Otherwise whoever may create a ModelDeployment could name a URL of their own
and have the operator (or the pod) send them a Secret they cannot read.

Nothing here ever puts a secret value in a message: `redact` removes them from text that
came from elsewhere (a server's error body, a library's exception).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modeltrust.serving.errors import FetchError

HOSTS_ANNOTATION = "modeltrust.dev/hosts"
KNOWN_KEYS = (
    "token",
    "username",
    "password",
    ".dockerconfigjson",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "ca.crt",
)
_MAX_VALUE = 1 << 20  # a Secret holds at most 1 MiB in all


class CredentialsError(FetchError):
    """The credentials are unusable or may not be sent where the URI points."""


@dataclass(frozen=True)
class RegistryAuth:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # docker config "identitytoken": an OAuth2 refresh token


@dataclass(frozen=True)
class SourceCredentials:
    """What a source may authenticate with; `hosts` are where it may be sent."""

    source_name: str  # e.g. "Secret ml-prod/model-store": for messages
    hosts: tuple[str, ...]
    token: str | None = None
    username: str | None = None
    password: str | None = None
    registries: Mapping[str, RegistryAuth] = field(default_factory=dict)
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_session_token: str | None = None
    ca_pem: bytes | None = None

    def secrets(self) -> list[str]:
        """Every secret value, for `redact`."""
        values = [self.token, self.password, self.s3_secret_key, self.s3_session_token]
        pairs = [(self.username, self.password)]
        for auth in self.registries.values():
            values += [auth.password, auth.identity_token]
            pairs.append((auth.username, auth.password))
        # Basic auth travels as base64(user:password): that form is a secret too.
        values += [
            base64.b64encode(f"{user}:{password}".encode()).decode()
            for user, password in pairs
            if user is not None and password
        ]
        return [v for v in values if v]

    def allows(self, host: str, port: int | None) -> bool:
        return host_allowed(self.hosts, host, port)

    def check_host(self, host: str, port: int | None) -> None:
        """Raise unless these credentials may be sent to host[:port]."""
        if not self.allows(host, port):
            where = f"{host}:{port}" if port else host
            listed = ", ".join(self.hosts) if self.hosts else "nothing"
            raise CredentialsError(
                f"the credentials of {self.source_name} may not be sent to {where}: its "
                f"{HOSTS_ANNOTATION} annotation lists {listed}; add the host there if it "
                "is meant to receive them"
            )

    def registry_auth(self, registry: str) -> RegistryAuth | None:
        """Auth for an OCI registry host[:port]: its docker config entry, else basic auth."""
        for name in _registry_names(registry):
            if name in self.registries:
                return self.registries[name]
        if self.username is not None and self.password is not None:
            return RegistryAuth(self.username, self.password)
        return None


def parse_hosts(text: str) -> tuple[str, ...]:
    """The `modeltrust.dev/hosts` annotation: host or host:port entries, comma separated."""
    hosts = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip().lower()
        if not item:
            continue
        if "/" in item or "@" in item or any(c.isspace() for c in item):
            raise CredentialsError(f"{HOSTS_ANNOTATION} entry {item!r} is not a host or host:port")
        hosts.append(item)
    return tuple(hosts)


def host_allowed(hosts: Iterable[str], host: str, port: int | None) -> bool:
    host = host.lower().strip("[]")
    for entry in hosts:
        name, _, entry_port = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
        if name.strip("[]") != host:
            continue
        if not entry_port or (port is not None and entry_port == str(port)):
            return True
    return False


def _has_port(entry: str) -> bool:
    tail = entry.rsplit(":", 1)
    return len(tail) == 2 and tail[1].isdigit() and not entry.endswith("]")


def _registry_names(registry: str) -> list[str]:
    names = [registry, f"https://{registry}", f"http://{registry}"]
    if registry in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        names.append("https://index.docker.io/v1/")
    return names


def _text(data: Mapping[str, bytes], key: str, source_name: str) -> str | None:
    raw = data.get(key)
    if raw is None:
        return None
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CredentialsError(f"{source_name} key {key} is not UTF-8 text") from None
    if not text:
        raise CredentialsError(f"{source_name} key {key} is empty")
    if any(c in text for c in "\r\n\0"):
        raise CredentialsError(f"{source_name} key {key} holds a line break or NUL")
    return text


def _docker_config(raw: bytes, source_name: str) -> dict[str, RegistryAuth]:
    try:
        document = json.loads(raw)
        auths = document.get("auths", {})
    except (ValueError, AttributeError):
        raise CredentialsError(
            f"{source_name} key .dockerconfigjson is not docker config JSON "
            '({"auths": {"registry": {...}}})'
        ) from None
    if not isinstance(auths, dict):
        raise CredentialsError(f"{source_name} .dockerconfigjson: 'auths' is not an object")
    result: dict[str, RegistryAuth] = {}
    for registry, entry in auths.items():
        if not isinstance(entry, dict):
            raise CredentialsError(
                f"{source_name} .dockerconfigjson entry {registry} is not an object"
            )
        username = str(entry.get("username") or "")
        password = str(entry.get("password") or "")
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise CredentialsError(
                    f"{source_name} .dockerconfigjson entry {registry}: 'auth' is not "
                    "base64 of user:password"
                ) from None
            username, _, password = decoded.partition(":")
        token = str(entry.get("identitytoken") or "")
        result[str(registry).lower().rstrip("/") if "://" not in registry else registry] = (
            RegistryAuth(username, password, token)
        )
    return result


def credentials_from_data(
    data: Mapping[str, bytes], *, hosts: tuple[str, ...], source_name: str
) -> SourceCredentials:
    """Parse a Secret's data (decoded) into credentials bound to `hosts`."""
    if not any(key in data for key in KNOWN_KEYS):
        raise CredentialsError(
            f"{source_name} has none of the keys modeltrust reads ({', '.join(KNOWN_KEYS)})"
        )
    for key in KNOWN_KEYS:
        if len(data.get(key, b"")) > _MAX_VALUE:
            raise CredentialsError(f"{source_name} key {key} is larger than 1 MiB")
    username = _text(data, "username", source_name)
    password = _text(data, "password", source_name)
    if (username is None) != (password is None):
        raise CredentialsError(f"{source_name} needs both username and password, or neither")
    access_key = _text(data, "AWS_ACCESS_KEY_ID", source_name)
    secret_key = _text(data, "AWS_SECRET_ACCESS_KEY", source_name)
    if (access_key is None) != (secret_key is None):
        raise CredentialsError(
            f"{source_name} needs both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"
        )
    ca_pem = data.get("ca.crt")
    if ca_pem is not None and b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise CredentialsError(f"{source_name} key ca.crt holds no PEM certificate")
    registries = (
        _docker_config(data[".dockerconfigjson"], source_name)
        if ".dockerconfigjson" in data
        else {}
    )
    return SourceCredentials(
        source_name=source_name,
        hosts=hosts,
        token=_text(data, "token", source_name),
        username=username,
        password=password,
        registries=registries,
        s3_access_key=access_key,
        s3_secret_key=secret_key,
        s3_session_token=_text(data, "AWS_SESSION_TOKEN", source_name),
        ca_pem=ca_pem,
    )


def load_credentials_dir(
    directory: Path, *, hosts: tuple[str, ...], source_name: str | None = None
) -> SourceCredentials:
    """Credentials from a mounted Secret volume (one file per key)."""
    data: dict[str, bytes] = {}
    for key in KNOWN_KEYS:
        path = directory / key
        try:
            data[key] = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise CredentialsError(f"cannot read {path}: {error.strerror}") from None
    return credentials_from_data(
        data, hosts=hosts, source_name=source_name or f"the credentials in {directory}"
    )


def redact(text: str, credentials: SourceCredentials | None) -> str:
    """`text` with every secret value of `credentials` replaced by '[redacted]'."""
    if credentials is None:
        return text
    for value in sorted(credentials.secrets(), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "[redacted]")
    return text
