"""Publisher commands: keygen and sign.

Exit codes scripts can rely on: 0 success, 1 a verification failed or the command
refused (for example to overwrite a key), 2 usage error or unreadable/invalid input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import NoReturn

import click
from tqdm import tqdm

from modeltrust.chain.digest import format_digest, sha256_file
from modeltrust.chain.entries import Registration, entry_to_json
from modeltrust.chain.errors import ChainError
from modeltrust.chain.signatures import (
    KEY_KINDS,
    PrivateKey,
    cosign_blob_registration,
    generate_private_key,
    key_id,
    load_private_key,
    private_key_pem,
    public_key_pem,
    sign_registration,
    verify_registration,
)

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
PROGRESS_THRESHOLD = 64 << 20  # show a progress bar when hashing more than 64 MiB


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.command()
@click.option(
    "--kind", type=click.Choice(KEY_KINDS), default="ed25519", show_default=True, help="Key type."
)
@click.option(
    "--out",
    "prefix",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Writes PREFIX.key (private, mode 0600) and PREFIX.pub.",
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def keygen(kind: str, prefix: Path, force: bool) -> None:
    """Generate a publisher key pair and print its key id."""
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    if not force:
        for path in (key_path, pub_path):
            if path.exists():
                fail(f"{path} exists; refusing to overwrite a key (use --force)", EXIT_REFUSED)
    key = generate_private_key(kind)
    try:
        _write_private(key_path, private_key_pem(key))
        pub_path.write_bytes(public_key_pem(key.public_key()))
    except OSError as e:
        fail(f"cannot write key files: {e}", EXIT_BAD_INPUT)
    click.echo(key_id(key.public_key()))


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Publisher private key (PEM).",
)
@click.option("--name", required=True, help="Model name.")
@click.option("--version", "model_version", required=True, help="Model version.")
@click.option(
    "--kind",
    type=click.Choice(["modeltrust-v1", "cosign-blob"]),
    default="modeltrust-v1",
    show_default=True,
    help="Signature kind (cosign-blob needs an ECDSA P-256 key).",
)
@click.option("--format", "model_format", default="onnx", show_default=True, help="Model format.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the registration entry JSON ('-' for stdout).",
)
def sign(
    model: Path,
    key_path: Path,
    name: str,
    model_version: str,
    kind: str,
    model_format: str,
    out: Path,
) -> None:
    """Hash MODEL and write a signed registration entry for it."""
    try:
        key = load_private_key(key_path.read_bytes(), _key_password())
    except (ChainError, OSError) as e:
        fail(f"cannot load key {key_path}: {e}", EXIT_BAD_INPUT)
    try:
        raw, size = _hash_with_progress(model)
    except OSError as e:
        fail(f"cannot read {model}: {e}", EXIT_BAD_INPUT)
    digest = format_digest(raw)
    try:
        reg = _registration(key, kind, name, model_version, digest, size, model_format)
        verify_registration(reg, key.public_key())  # never hand out a signature we cannot check
    except ChainError as e:
        fail(str(e), EXIT_BAD_INPUT)
    document = json.dumps(entry_to_json(reg), indent=2, sort_keys=True) + "\n"
    if str(out) == "-":
        click.echo(document, nl=False)
    else:
        try:
            out.write_text(document)
        except OSError as e:
            fail(f"cannot write {out}: {e}", EXIT_BAD_INPUT)
    click.echo(
        f"signed {name} {model_version} {digest} ({size} bytes) with key {reg.signer_key_id}",
        err=True,
    )


def _registration(
    key: PrivateKey, kind: str, name: str, version: str, digest: str, size: int, fmt: str
) -> Registration:
    if kind == "cosign-blob":
        return cosign_blob_registration(
            key, name=name, version=version, digest=digest, size=size, format=fmt
        )
    return sign_registration(key, name=name, version=version, digest=digest, size=size, format=fmt)


def _hash_with_progress(path: Path) -> tuple[bytes, int]:
    total = path.stat().st_size
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"hashing {path.name}",
        file=sys.stderr,
        disable=total < PROGRESS_THRESHOLD,
    ) as bar:
        return sha256_file(path, progress=bar.update)


def _key_password() -> bytes | None:
    password = os.environ.get("MODELTRUST_KEY_PASSWORD")
    return password.encode() if password else None


def _write_private(path: Path, data: bytes) -> None:
    """Create the private key file with mode 0600 from the start (no window of wider access)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


COMMANDS: list[click.Command] = [keygen, sign]
