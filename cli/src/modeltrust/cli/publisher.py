"""Publisher commands: keygen, sign, register, revoke, verify.

Exit codes scripts can rely on: 0 success, 1 a verification failed, the ledger gave
no verified answer, or the command refused (for example to overwrite a key),
2 usage error or unreadable/invalid input.

Ledger commands take --ledger URL and --ledger-key (the checkpoint verifier key,
inline or a file), or the MODELTRUST_LEDGER / MODELTRUST_LEDGER_KEY variables.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from tqdm import tqdm

from modeltrust.chain.client import EntryExistsError, LedgerClient, VerifiedReceipt
from modeltrust.chain.digest import format_digest, sha256_file
from modeltrust.chain.entries import (
    Entry,
    Registration,
    Revocation,
    entry_from_json,
    entry_to_json,
    leaf_data,
)
from modeltrust.chain.errors import ChainError
from modeltrust.chain.merkle import leaf_hash
from modeltrust.chain.signatures import (
    KEY_KINDS,
    PrivateKey,
    PublicKey,
    cosign_blob_registration,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign_registration,
    sign_revocation,
    verify_registration,
    verify_revocation,
)
from modeltrust.chain.trust_state import FileTrustStateStore

F = TypeVar("F", bound=Callable[..., Any])

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
    key = _load_key(key_path)
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


# --- Ledger commands ---------------------------------------------------------------------


def ledger_options(f: F) -> F:
    options = [
        click.option(
            "--ledger",
            "ledger_url",
            required=True,
            envvar="MODELTRUST_LEDGER",
            help="Ledger URL, e.g. http://ledger:8080.",
        ),
        click.option(
            "--ledger-key",
            required=True,
            envvar="MODELTRUST_LEDGER_KEY",
            help="Ledger checkpoint verifier key (name+id+key) or a file holding it.",
        ),
        click.option(
            "--origin",
            envvar="MODELTRUST_LEDGER_ORIGIN",
            help="Expected checkpoint origin (default: the verifier key's name).",
        ),
        click.option(
            "--trust-state",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="MODELTRUST_TRUST_STATE",
            help="File remembering the newest verified checkpoint, so a rolled-back "
            "or forked ledger is detected across runs.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@contextmanager
def ledger_client(
    url: str, ledger_key: str, origin: str | None, trust_state: Path | None
) -> Iterator[LedgerClient]:
    """A verifying client; any ledger failure becomes exit 1 (no verified answer)."""
    if "+" not in ledger_key and Path(ledger_key).is_file():
        ledger_key = Path(ledger_key).read_text().strip()
    try:
        store = FileTrustStateStore(trust_state) if trust_state else None
        client = LedgerClient(url, verifier_key=ledger_key, origin=origin, trust_store=store)
    except (ChainError, ValueError) as e:
        fail(f"bad ledger settings: {e}", EXIT_BAD_INPUT)
    try:
        with client:
            yield client
    except ChainError as e:
        fail(f"ledger: {e}", EXIT_REFUSED)


@click.command()
@click.argument(
    "registration", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@ledger_options
def register(
    registration: Path,
    ledger_url: str,
    ledger_key: str,
    origin: str | None,
    trust_state: Path | None,
) -> None:
    """Append a registration (from `modeltrust sign`) to the ledger; print its verified receipt."""
    entry = _read_entry(registration)
    if not isinstance(entry, Registration):
        fail(f"{registration} holds a {type(entry).__name__}, not a registration", EXIT_BAD_INPUT)
    with ledger_client(ledger_url, ledger_key, origin, trust_state) as client:
        _print_receipt(_append(client, entry))


@click.command()
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Publisher private key signing the revocation.",
)
@click.option("--digest", help="Revoke this model digest (sha256:...).")
@click.option("--key-id", "target_key_id", help="Revoke this publisher key id.")
@click.option("--reason", required=True, help="Why (recorded on the ledger).")
@ledger_options
def revoke(
    key_path: Path,
    digest: str | None,
    target_key_id: str | None,
    reason: str,
    ledger_url: str,
    ledger_key: str,
    origin: str | None,
    trust_state: Path | None,
) -> None:
    """Sign a revocation of a digest or a key and append it to the ledger."""
    if (digest is None) == (target_key_id is None):
        raise click.UsageError("give exactly one of --digest and --key-id")
    key = _load_key(key_path)
    kind, target = ("digest", digest) if digest is not None else ("key", target_key_id)
    assert target is not None
    try:
        rev = sign_revocation(key, target_kind=kind, target=target, reason=reason)
    except ChainError as e:
        fail(str(e), EXIT_BAD_INPUT)
    with ledger_client(ledger_url, ledger_key, origin, trust_state) as client:
        _print_receipt(_append(client, rev))


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--publisher",
    "publisher_keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trusted publisher public key (PEM); repeat for several.",
)
@click.option("--name", help="Require a registration for this model name.")
@click.option("--version", "model_version", help="Require a registration for this version.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@ledger_options
def verify(
    model: Path,
    publisher_keys: tuple[Path, ...],
    name: str | None,
    model_version: str | None,
    as_json: bool,
    ledger_url: str,
    ledger_key: str,
    origin: str | None,
    trust_state: Path | None,
) -> None:
    """Check MODEL is registered on the ledger by a trusted publisher and not revoked.

    Every ledger answer is proven against a verified checkpoint and every signature
    is checked here. Exit 0 only if some registration is valid and nothing revokes it.
    """
    trusted = _load_publishers(publisher_keys)
    try:
        raw, _ = _hash_with_progress(model)
    except OSError as e:
        fail(f"cannot read {model}: {e}", EXIT_BAD_INPUT)
    digest = format_digest(raw)
    with ledger_client(ledger_url, ledger_key, origin, trust_state) as client:
        found = client.find_registrations(digest)
        revocations = [v.entry for v in client.revocations_for(digest=digest)]
        for kid in trusted:
            revocations += [v.entry for v in client.revocations_for(key_id=kid)]
        size = client.checkpoint().size
    revoked_digest, revoked_keys = _valid_revocations(revocations, trusted, digest)
    results = []
    for item in found:
        reg = item.entry
        assert isinstance(reg, Registration)
        status = _registration_status(reg, trusted, revoked_keys, name, model_version)
        results.append(
            {
                "index": item.index,
                "name": reg.model_name,
                "version": reg.model_version,
                "signer_key_id": reg.signer_key_id,
                "signature_kind": reg.signature_kind,
                "status": status,
            }
        )
    ok = not revoked_digest and any(r["status"] == "ok" for r in results)
    verdict = {
        "digest": digest,
        "verified": ok,
        "digest_revoked": revoked_digest,
        "checkpoint_size": size,
        "registrations": results,
    }
    _print_verdict(verdict, as_json)
    sys.exit(0 if ok else EXIT_REFUSED)


def _registration_status(
    reg: Registration,
    trusted: dict[str, PublicKey],
    revoked_keys: set[str],
    name: str | None,
    version: str | None,
) -> str:
    key = trusted.get(reg.signer_key_id)
    if key is None:
        return "signer not trusted"
    try:
        verify_registration(reg, key)
    except ChainError as e:
        return f"bad signature: {e}"
    if reg.signer_key_id in revoked_keys:
        return "signer key revoked"
    if name is not None and reg.model_name != name:
        return f"registered as {reg.model_name!r}, not {name!r}"
    if version is not None and reg.model_version != version:
        return f"registered as version {reg.model_version!r}, not {version!r}"
    return "ok"


def _valid_revocations(
    entries: list[Entry], trusted: dict[str, PublicKey], digest: str
) -> tuple[bool, set[str]]:
    """Revocations count only when a trusted publisher signed them and the signature verifies."""
    revoked_digest, revoked_keys = False, set()
    for rev in entries:
        if not isinstance(rev, Revocation) or rev.signer_key_id not in trusted:
            continue
        try:
            verify_revocation(rev, trusted[rev.signer_key_id])
        except ChainError:
            continue
        if rev.target_kind == "digest" and rev.target == digest:
            revoked_digest = True
        elif rev.target_kind == "key":
            revoked_keys.add(rev.target)
    return revoked_digest, revoked_keys


def _print_verdict(verdict: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(verdict, indent=2))
        return
    for r in verdict["registrations"]:
        click.echo(
            f"entry {r['index']}: {r['name']} {r['version']} "
            f"by {r['signer_key_id'][:16]}… ({r['signature_kind']}): {r['status']}"
        )
    if verdict["digest_revoked"]:
        click.echo(f"{verdict['digest']} is revoked by a trusted publisher")
    if not verdict["registrations"]:
        click.echo(f"{verdict['digest']} is not registered on the ledger")
    state = "VERIFIED" if verdict["verified"] else "NOT VERIFIED"
    click.echo(f"{state}: {verdict['digest']} (checkpoint size {verdict['checkpoint_size']})")


def _append(client: LedgerClient, entry: Entry) -> VerifiedReceipt:
    try:
        return client.append(entry)
    except EntryExistsError as e:
        # Already on the ledger: prove that the entry at that index is exactly ours.
        if e.index is None:
            raise
        found = client.entry(e.index)
        if leaf_hash(leaf_data(found.entry)) != leaf_hash(leaf_data(entry)):
            raise
        return VerifiedReceipt(e.index, found.leaf_hash, found.checkpoint, existing=True)


def _print_receipt(receipt: VerifiedReceipt) -> None:
    click.echo(
        json.dumps(
            {
                "index": receipt.index,
                "leaf_hash": base64.b64encode(receipt.leaf_hash).decode(),
                "checkpoint_size": receipt.checkpoint.size,
                "existing": receipt.existing,
            }
        )
    )


def _read_entry(path: Path) -> Entry:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
        return entry_from_json(json.loads(text))
    except (OSError, ValueError) as e:
        fail(f"cannot read an entry from {path}: {e}", EXIT_BAD_INPUT)


def _load_key(path: Path) -> PrivateKey:
    try:
        return load_private_key(path.read_bytes(), _key_password())
    except (ChainError, OSError) as e:
        fail(f"cannot load key {path}: {e}", EXIT_BAD_INPUT)


def _load_publishers(paths: tuple[Path, ...]) -> dict[str, PublicKey]:
    keys: dict[str, PublicKey] = {}
    for path in paths:
        try:
            key = load_public_key(path.read_bytes())
        except (ChainError, OSError) as e:
            fail(f"cannot load publisher key {path}: {e}", EXIT_BAD_INPUT)
        keys[key_id(key)] = key
    return keys


COMMANDS: list[click.Command] = [keygen, sign, register, revoke, verify]
