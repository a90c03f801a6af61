"""Where a command reads a model from: a local file, or any source `modeltrust fetch` and the
operator read (https, http, oci, s3), with the same options everywhere.

`sign`, `register`, `verify` and `fetch` take MODEL (or --uri) as a path or a URI and the
options below; a URI is hashed straight from the source, in one streaming pass, and the
bytes are kept nowhere. Reading a URI needs the `serving` extra (the fetch code and, for
s3://, boto3); a local file needs nothing more than the chain.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import click

from modeltrust.chain.digest import sha256_file
from modeltrust.cli.common import EXIT_UNCHECKED, fail, is_terminal, requires_extra

if TYPE_CHECKING:
    from tqdm import tqdm

    from modeltrust.serving.credentials import SourceCredentials
    from modeltrust.serving.sources import SourceAccess

F = TypeVar("F", bound=Callable[..., Any])
PROGRESS_THRESHOLD = 64 << 20  # a progress bar past 64 MiB, on a terminal
NETWORK_SCHEMES = ("https", "http", "oci", "s3")


@dataclass(frozen=True)
class SourceFlags:
    """The source options of one command line."""

    credentials_dir: Path | None = None
    credential_hosts: str | None = None
    ca_file: Path | None = None
    timeout: float = 60.0
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_addressing: str = "auto"


_FLAG_NAMES = tuple(SourceFlags.__dataclass_fields__)


def source_options(f: F) -> F:
    """Add the source options; the command receives them as one `model_source: SourceFlags`."""
    options = [
        click.option(
            "--credentials-dir",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            help="A directory of credential files, laid out as a mounted Secret: token, "
            "username and password, .dockerconfigjson, AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, ca.crt (docs/sources.md).",
        ),
        click.option(
            "--credential-hosts",
            help="Hosts (host or host:port, comma separated) the credentials may be sent "
            "to; default: the URI's host (for s3://, the --s3-endpoint host).",
        ),
        click.option(
            "--ca-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="Extra CA certificate(s) (PEM) trusted for https, besides the system CAs.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.1),
            default=60.0,
            show_default=True,
            help="Network timeout in seconds (connect and each read).",
        ),
        click.option(
            "--s3-endpoint",
            help="s3:// URIs: the store's URL, e.g. https://minio.example:9000 (default: AWS S3).",
        ),
        click.option(
            "--s3-region", help="s3:// URIs: the region to sign for (default: us-east-1)."
        ),
        click.option(
            "--s3-addressing",
            type=click.Choice(["auto", "path", "virtual"]),
            default="auto",
            show_default=True,
            help="s3:// URIs: ENDPOINT/BUCKET/KEY (path) or BUCKET.ENDPOINT/KEY (virtual); auto "
            "lets the S3 client choose (virtual on AWS, path on other endpoints).",
        ),
    ]

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = SourceFlags(**{name: kwargs.pop(name) for name in _FLAG_NAMES})
        return f(*args, model_source=flags, **kwargs)

    command: Any = wrapper
    for option in reversed(options):
        command = option(command)
    return command  # type: ignore[no-any-return]


def is_remote(model: str) -> bool:
    return urlsplit(model).scheme in NETWORK_SCHEMES


def local_path(model: str) -> Path:
    """A MODEL argument that is not a network URI, as a path (file:// accepted)."""
    parts = urlsplit(model)
    if parts.scheme == "file":
        return Path(parts.path)
    if parts.scheme and len(parts.scheme) > 1:
        raise click.BadParameter(
            f"{model}: unsupported scheme {parts.scheme!r}; give a path or an "
            "https://, http://, oci:// or s3:// URI",
            param_hint="MODEL",
        )
    return Path(model)


def source_access(uri: str, flags: SourceFlags) -> SourceAccess:
    """The SourceAccess for `uri` (needs the serving extra: import inside requires_extra)."""
    from modeltrust.serving.sources import S3Options, SourceAccess

    return SourceAccess(
        credentials=_credentials(uri, flags),
        ca_file=flags.ca_file,
        timeout=flags.timeout,
        s3=S3Options(
            endpoint=flags.s3_endpoint, region=flags.s3_region, addressing=flags.s3_addressing
        ),
    )


def _credentials(uri: str, flags: SourceFlags) -> SourceCredentials | None:
    from modeltrust.serving.credentials import (
        CredentialsError,
        load_credentials_dir,
        parse_hosts,
    )

    if flags.credentials_dir is None:
        if flags.credential_hosts:
            raise click.UsageError("--credential-hosts needs --credentials-dir")
        return None
    try:
        hosts = (
            parse_hosts(flags.credential_hosts)
            if flags.credential_hosts
            else _default_hosts(uri, flags)
        )
        return load_credentials_dir(flags.credentials_dir, hosts=hosts)
    except CredentialsError as error:
        fail(f"FetchFailed: {error}", EXIT_UNCHECKED)


def _default_hosts(uri: str, flags: SourceFlags) -> tuple[str, ...]:
    """Whoever runs a command by hand means the credentials for the URI's own host."""
    where = flags.s3_endpoint if uri.startswith("s3://") else uri
    parts = urlsplit(where or "")
    if not parts.hostname:
        raise click.UsageError(
            "give --credential-hosts: the hosts the credentials may be sent to "
            "(for Amazon S3, e.g. s3.eu-west-1.amazonaws.com)"
        )
    return (f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname,)


def digest_model(model: str, flags: SourceFlags, command: str) -> tuple[bytes, int]:
    """SHA-256 and size of MODEL: a local file, or a URI read straight from its source."""
    if not is_remote(model):
        path = local_path(model)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise click.BadParameter(f"{path} {what}", param_hint="MODEL")
        try:
            return _hash_file(path)
        except OSError as e:
            fail(f"cannot read {path}: {e.strerror or e}", EXIT_UNCHECKED)
    with requires_extra("serving", f"{command} (reading a model from a URI)"):
        from modeltrust.serving.credentials import redact
        from modeltrust.serving.errors import FetchError
        from modeltrust.serving.fetch import digest_source
    access = source_access(model, flags)
    with _bar(None, model) as bar:

        def progress(done: int, total: int | None) -> None:
            if total is not None and bar.total != total:
                bar.reset(total=total)
            bar.update(done - bar.n)

        try:
            found = digest_source(model, access, progress=progress)
        except FetchError as error:
            fail(f"FetchFailed: {redact(str(error), access.credentials)}", EXIT_UNCHECKED)
    return bytes.fromhex(found.digest.split(":", 1)[1]), found.size


def _hash_file(path: Path) -> tuple[bytes, int]:
    total = path.stat().st_size
    with _bar(total, path.name) as bar:
        return sha256_file(path, progress=bar.update)


def _bar(total: int | None, name: str) -> tqdm[Any]:
    from tqdm import tqdm  # at start-up it would cost every command, fetch included

    big = total is None or total >= PROGRESS_THRESHOLD
    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"hashing {name}",
        file=sys.stderr,
        disable=not big or not is_terminal(sys.stderr),
    )
