"""Publisher private key files: writing them (optionally encrypted) and reading them back.

The password of an encrypted key comes from MODELTRUST_KEY_PASSWORD, or, when that is not
set and stdin is a terminal, from a prompt. Without either, reading an encrypted key exits
UNCHECKED (3) saying so. A password given for a key that is not encrypted is not needed and
not used, so one exported variable works for both kinds of key. A key cosign wrote
(`cosign generate-key-pair`) is read with COSIGN_PASSWORD, as cosign reads it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from modeltrust.chain.errors import ChainError
from modeltrust.chain.signatures import (
    PrivateKey,
    is_encrypted_private_key,
    load_private_key,
    private_key_pem,
)
from modeltrust.cli.common import EXIT_UNCHECKED, fail, is_terminal
from modeltrust.cli.imports import is_cosign_private_key, load_cosign_private_key

PASSWORD_ENV = "MODELTRUST_KEY_PASSWORD"  # noqa: S105 (the variable's name, not a password)


def _from_env() -> bytes | None:
    password = os.environ.get(PASSWORD_ENV)
    return password.encode() if password else None


def new_key_password() -> bytes:
    """The password to encrypt a new key with: $MODELTRUST_KEY_PASSWORD, or asked twice."""
    password = _from_env()
    if password is not None:
        return password
    if not is_terminal(sys.stdin):
        raise click.UsageError(
            f"--encrypt needs a password: set {PASSWORD_ENV} (no terminal to ask on)"
        )
    typed: str = click.prompt(
        "Password for the new key", hide_input=True, confirmation_prompt=True, err=True
    )
    if not typed:
        raise click.UsageError("an empty password encrypts nothing")
    return typed.encode()


def write_private_key(path: Path, key: PrivateKey, password: bytes | None) -> None:
    """Create the file with mode 0600 from the start (no window of wider access)."""
    data = private_key_pem(key, password)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _cosign_password(path: Path) -> bytes:
    """COSIGN_PASSWORD as cosign reads it (set and empty is an empty password), else a
    prompt when there is a terminal to ask at."""
    password = os.environ.get("COSIGN_PASSWORD")
    if password is None:
        if not is_terminal(sys.stdin):
            fail(f"{path} is an encrypted cosign key: set COSIGN_PASSWORD", EXIT_UNCHECKED)
        password = click.prompt(f"Password for cosign key {path}", hide_input=True, err=True)
    return password.encode()


def load_key(path: Path) -> PrivateKey:
    """A publisher private key; an encrypted one with its password (see the module doc), or
    cosign's encrypted key with COSIGN_PASSWORD."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        fail(f"cannot load key {path}: {e}", EXIT_UNCHECKED)
    if is_cosign_private_key(pem):
        try:
            return load_cosign_private_key(pem, _cosign_password(path))
        except ChainError as e:
            fail(f"cannot load key {path}: {e}", EXIT_UNCHECKED)
    password = None
    if is_encrypted_private_key(pem):
        password = _from_env()
        if password is None and is_terminal(sys.stdin):
            password = click.prompt(
                f"Password for {path}", hide_input=True, err=True, default="", show_default=False
            ).encode()
        if not password:
            fail(
                f"cannot load key {path}: it is encrypted; set {PASSWORD_ENV} to its password",
                EXIT_UNCHECKED,
            )
    try:
        return load_private_key(pem, password)
    except ChainError as e:
        if password is not None:
            fail(
                f"cannot load key {path}: wrong password ({PASSWORD_ENV}) or damaged key: {e}",
                EXIT_UNCHECKED,
            )
        fail(f"cannot load key {path}: {e}", EXIT_UNCHECKED)
