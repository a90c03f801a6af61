"""Source credentials: what a Secret's keys mean, the hosts they are bound to, and that no
message ever carries a secret value."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from modeltrust.serving.credentials import (
    CredentialsError,
    RegistryAuth,
    credentials_from_data,
    host_allowed,
    load_credentials_dir,
    parse_hosts,
    redact,
)

CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def parse(data: dict[str, bytes], hosts: tuple[str, ...] = ("h",)):  # type: ignore[no-untyped-def]
    return credentials_from_data(data, hosts=hosts, source_name="Secret ml/s")


def test_each_kind_of_key_is_read() -> None:
    docker = {
        "auths": {
            "registry.example.com": {"auth": base64.b64encode(b"robot:pw1").decode()},
            "https://other.example.com:5000": {"username": "u", "password": "pw2"},
            "id.example.com": {"identitytoken": "refresh-1"},
        }
    }
    creds = parse(
        {
            "token": b"tok\n",  # a trailing newline, as `kubectl create secret --from-file` keeps
            "AWS_ACCESS_KEY_ID": b"AKIA1",
            "AWS_SECRET_ACCESS_KEY": b"secret-1",
            ".dockerconfigjson": json.dumps(docker).encode(),
            "ca.crt": CA,
        }
    )
    assert creds.token == "tok"
    assert (creds.s3_access_key, creds.s3_secret_key, creds.s3_session_token) == (
        "AKIA1",
        "secret-1",
        None,
    )
    assert creds.registry_auth("registry.example.com") == RegistryAuth("robot", "pw1")
    assert creds.registry_auth("other.example.com:5000") == RegistryAuth("u", "pw2")
    assert creds.registry_auth("id.example.com") == RegistryAuth("", "", "refresh-1")
    assert creds.registry_auth("unknown.example.com") is None
    assert creds.ca_pem == CA


def test_basic_auth_serves_registries_without_a_docker_config() -> None:
    creds = parse({"username": b"ml", "password": b"pw"})
    assert creds.registry_auth("any.example.com") == RegistryAuth("ml", "pw")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"other": b"x"}, "none of the keys modeltrust reads"),
        ({"username": b"ml"}, "both username and password"),
        ({"AWS_ACCESS_KEY_ID": b"AKIA"}, "both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
        ({"token": b""}, "key token is empty"),
        ({"token": b"a\nb"}, "line break"),
        ({"token": b"\xff"}, "not UTF-8"),
        ({"ca.crt": b"not pem"}, "no PEM certificate"),
        ({".dockerconfigjson": b"{"}, "not docker config JSON"),
        ({".dockerconfigjson": b'{"auths": {"r": {"auth": "!!"}}}'}, "not base64"),
    ],
)
def test_unusable_secrets_are_refused_with_the_reason(data: dict[str, bytes], problem: str) -> None:
    with pytest.raises(CredentialsError, match="Secret ml/s") as refused:
        parse(data)
    assert problem in str(refused.value)


def test_hosts_bind_credentials_to_a_host_or_a_host_and_port() -> None:
    hosts = parse_hosts("Registry.Example.com, s3.example.com:9000\n[::1]:8443")
    assert hosts == ("registry.example.com", "s3.example.com:9000", "[::1]:8443")
    assert host_allowed(hosts, "registry.example.com", 443)
    assert host_allowed(hosts, "REGISTRY.example.com", None)
    assert host_allowed(hosts, "s3.example.com", 9000)
    assert not host_allowed(hosts, "s3.example.com", 443)
    assert not host_allowed(hosts, "s3.example.com", None)
    assert host_allowed(hosts, "::1", 8443)
    assert not host_allowed(hosts, "evil.example.com", 443)
    assert not host_allowed(hosts, "registry.example.com.evil.com", 443)
    with pytest.raises(CredentialsError, match="not a host or host:port"):
        parse_hosts("https://registry.example.com/")


def test_no_message_carries_a_secret() -> None:
    creds = parse({"username": b"ml", "password": b"hunter22", "token": b"tok-123456"})
    pair = base64.b64encode(b"ml:hunter22").decode()
    text = f"server said: bad token tok-123456 for ml:hunter22 (Basic {pair})"
    cleaned = redact(text, creds)
    assert "tok-123456" not in cleaned
    assert "hunter22" not in cleaned
    assert pair not in cleaned
    assert redact("nothing secret", None) == "nothing secret"
    with pytest.raises(CredentialsError) as refused:
        creds.check_host("evil.example.com", 443)
    assert "hunter22" not in str(refused.value)
    assert "tok-123456" not in str(refused.value)


def test_a_mounted_secret_directory_reads_like_the_secret(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok")
    (tmp_path / "ca.crt").write_bytes(CA)
    (tmp_path / "unrelated").write_text("ignored")
    creds = load_credentials_dir(tmp_path, hosts=("h",))
    assert (creds.token, creds.ca_pem, creds.hosts) == ("tok", CA, ("h",))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CredentialsError, match="none of the keys"):
        load_credentials_dir(empty, hosts=("h",))
