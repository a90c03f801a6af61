"""Publisher commands: keygen, sign, register, revoke, verify.

Why one long module: the publisher's five commands share key reading, ledger options
and receipts; each command is a short function over modeltrust.chain.

Exit codes: modeltrust.cli.common (0 ok, 1 refused, 2 usage, 3 could not check).

Ledger commands take --ledger URL and --ledger-key (the checkpoint verifier key,
inline or a file), or the MODELTRUST_LEDGER / MODELTRUST_LEDGER_KEY variables.

`verify` decides with the same rules and reason codes as the operator
(modeltrust.chain.trust), from the same inputs a ModelTrustPolicy gives it, and takes
revocations from a complete read of the verified log, never from the ledger's lookups.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from modeltrust.chain.client import EntryExistsError, LedgerClient, VerifiedReceipt
from modeltrust.chain.digest import format_digest, parse_digest
from modeltrust.chain.entries import (
    Entry,
    Registration,
    entry_from_json,
    entry_to_json,
    leaf_data,
)
from modeltrust.chain.errors import ChainError
from modeltrust.chain.merkle import hash_to_b64, leaf_hash
from modeltrust.chain.revocation_index import LedgerRead, RevocationIndex, read_ledger
from modeltrust.chain.signatures import (
    KEY_KINDS,
    PrivateKey,
    cosign_blob_registration,
    generate_private_key,
    key_id,
    load_public_key,
    public_key_pem,
    sign_registration,
    sign_revocation,
    verify_registration,
)
from modeltrust.chain.trust import (
    Finding,
    Materials,
    Subject,
    TrustedPublisher,
    TrustVerdict,
    VerificationPolicy,
    applicable_revocations,
    check_revocations,
    ledger_finding,
    verify,
)
from modeltrust.cli.common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNCHECKED,
    fail,
    ledger_client,
    ledger_exit_code,
    ledger_options,
    open_ledger,
    requires_extra,
)
from modeltrust.cli.imports import (
    Candidate,
    ImportRefused,
    import_registration,
    read_bundle,
    read_cosign_signature,
)
from modeltrust.cli.keyfile import PASSWORD_ENV, load_key, new_key_password, write_private_key
from modeltrust.cli.sources import SourceFlags, digest_model, source_options


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
@click.option(
    "--encrypt",
    is_flag=True,
    help=f"Encrypt PREFIX.key (PKCS#8, AES-256) with the password in ${PASSWORD_ENV}, or "
    "one asked for on the terminal when it is not set. sign and revoke read an encrypted "
    f"key's password from ${PASSWORD_ENV} too.",
)
def keygen(kind: str, prefix: Path, force: bool, encrypt: bool) -> None:
    """Generate a publisher key pair and print its key id."""
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    if not force:
        for path in (key_path, pub_path):
            if path.exists():
                fail(f"{path} exists; refusing to overwrite a key (use --force)", EXIT_REFUSED)
    password = new_key_password() if encrypt else None
    key = generate_private_key(kind)
    try:
        write_private_key(key_path, key, password)
        pub_path.write_bytes(public_key_pem(key.public_key()))
    except OSError as e:
        fail(f"cannot write key files: {e}", EXIT_UNCHECKED)
    click.echo(key_id(key.public_key()))


@click.command()
@click.argument("model")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"Publisher private key (PEM; if encrypted, its password is ${PASSWORD_ENV}).",
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
@source_options
def sign(
    model: str,
    key_path: Path,
    name: str,
    model_version: str,
    kind: str,
    model_format: str,
    out: Path,
    model_source: SourceFlags,
) -> None:
    """Hash MODEL and write a signed registration entry for it.

    MODEL is a file, or a URI the operator reads too (https://, http://, oci://, s3://),
    hashed straight from the source and kept nowhere (docs/sources.md)."""
    key = _load_key(key_path)
    raw, size = digest_model(model, model_source, "sign")
    digest = format_digest(raw)
    try:
        reg = _registration(key, kind, name, model_version, digest, size, model_format)
        verify_registration(reg, key.public_key())  # never hand out a signature we cannot check
    except ChainError as e:
        fail(str(e), EXIT_UNCHECKED)
    document = json.dumps(entry_to_json(reg), indent=2, sort_keys=True) + "\n"
    if str(out) == "-":
        click.echo(document, nl=False)
    else:
        try:
            out.write_text(document)
        except OSError as e:
            fail(f"cannot write {out}: {e}", EXIT_UNCHECKED)
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


# --- Ledger commands ---------------------------------------------------------------------


@click.command(epilog=EXIT_CODES_HELP)
@click.argument(
    "registration",
    required=False,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option(
    "--signature",
    "signature_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Import a `cosign sign-blob --output-signature` file (base64) instead.",
)
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Import a key-signed cosign bundle (Sigstore bundle, or cosign's older format) or "
    "an OpenSSF model-signing bundle instead.",
)
@click.option(
    "--model",
    help="With --signature/--bundle: the model the signature is for (a file, or a URI "
    "read straight from its source).",
)
@click.option("--name", help="With --signature/--bundle: the model name to register.")
@click.option("--version", "model_version", help="With --signature/--bundle: the model version.")
@click.option("--format", "model_format", default="onnx", show_default=True, help="Model format.")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --signature/--bundle: the publisher's public key (PEM); repeat to let the "
    "signature pick its key.",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --signature/--bundle: a ModelTrustPolicy whose publishers are the candidate "
    "keys (and whose ledger is the default --ledger/--ledger-key).",
)
@source_options
@ledger_options
def register(
    registration: Path | None,
    signature_path: Path | None,
    bundle_path: Path | None,
    model: str | None,
    name: str | None,
    model_version: str | None,
    model_format: str,
    public_keys: tuple[Path, ...],
    policy_path: Path | None,
    ledger_url: str | None,
    ledger_key: str | None,
    origin: str | None,
    trust_state: Path | None,
    model_source: SourceFlags,
) -> None:
    """Append a registration to the ledger; print its verified receipt.

    The registration is a file from `modeltrust sign`, or is imported from another tool's
    signature of MODEL: --signature (cosign sign-blob) or --bundle (cosign, model-signing),
    checked with --public-key or the --policy's publishers by the rule every verifier
    applies before anything is appended. Keyless (certificate) signatures are refused.
    """
    given = [p for p in (registration, signature_path, bundle_path) if p is not None]
    if len(given) != 1:
        raise click.UsageError(
            "give one of: REGISTRATION (from `modeltrust sign`), --signature, --bundle"
        )
    if registration is not None:
        if model or name or model_version or public_keys or policy_path:
            raise click.UsageError(
                "--model, --name, --version, --public-key and --policy go with --signature or "
                "--bundle, not with a REGISTRATION file"
            )
        entry = _read_entry(registration)
        if not isinstance(entry, Registration):
            fail(
                f"{registration} holds a {type(entry).__name__}, not a registration", EXIT_UNCHECKED
            )
    else:
        if model is None or name is None or model_version is None:
            raise click.UsageError("--signature and --bundle need --model, --name and --version")
        candidates = [_candidate(path) for path in public_keys]
        if policy_path is not None:
            policy, (url, vkey, policy_origin) = _policy_file(policy_path)
            candidates += [Candidate(p.name, p.public_key, p) for p in policy.publishers]
            ledger_url, ledger_key = ledger_url or url, ledger_key or vkey
            origin = origin or policy_origin
        if not candidates:
            raise click.UsageError("give the publisher's key: --public-key PEM or --policy FILE")
        source = signature_path or bundle_path
        assert source is not None
        entry = _import(
            source,
            is_bundle=bundle_path is not None,
            model=model,
            model_source=model_source,
            candidates=candidates,
            name=name,
            version=model_version,
            model_format=model_format,
        )
    with ledger_client(ledger_url, ledger_key, origin, trust_state) as client:
        _print_receipt(_append(client, entry))


def _candidate(path: Path) -> Candidate:
    try:
        return Candidate(path.stem, load_public_key(path.read_bytes()))
    except (ChainError, OSError) as e:
        fail(f"cannot load publisher key {path}: {e}", EXIT_UNCHECKED)


def _import(
    source: Path,
    *,
    is_bundle: bool,
    model: str,
    model_source: SourceFlags,
    candidates: list[Candidate],
    name: str,
    version: str,
    model_format: str,
) -> Registration:
    """The registration of another tool's signature of ``model``, verified (imports.py)."""
    try:
        data = source.read_bytes()
    except OSError as e:
        fail(f"cannot read {e.filename}: {e.strerror or e}", EXIT_UNCHECKED)
    raw, size = digest_model(model, model_source, "register")
    try:
        imported = read_bundle(data) if is_bundle else read_cosign_signature(data)
        reg, signer = import_registration(
            imported,
            candidates,
            name=name,
            version=version,
            digest=raw,
            size=size,
            format=model_format,
        )
    except ImportRefused as e:
        fail(f"{source}: {e}", EXIT_REFUSED)
    except ChainError as e:  # a malformed --name or --version
        raise click.UsageError(str(e)) from None
    click.echo(
        f"imported {imported.source}: {name} {version} {reg.digest} ({size} bytes) as "
        f"{reg.signature_kind}, signed by {signer.name} (key {reg.signer_key_id})"
        + "".join(f"; {note}" for note in imported.notes),
        err=True,
    )
    trusted = signer.policy_publisher
    if trusted is not None and not trusted.may_vouch_for(name):
        click.echo(
            f"warning: the policy lets {trusted.name} vouch only for "
            f"{', '.join(trusted.model_name_patterns)}: it will not count for {name!r}",
            err=True,
        )
    return reg


@click.command()
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Publisher private key signing the revocation (if encrypted, its password is "
    f"${PASSWORD_ENV}).",
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
    except ChainError as e:  # a malformed --digest or --key-id
        raise click.UsageError(str(e)) from None
    with ledger_client(ledger_url, ledger_key, origin, trust_state) as client:
        _print_receipt(_append(client, rev))


def _publisher(value: str) -> TrustedPublisher:
    """--publisher PATH[=PATTERN,...]: a PEM public key file, optionally with the model-name
    patterns it may vouch for (a ModelTrustPolicy's modelNamePatterns)."""
    path_text, patterns = value, ""
    if not Path(value).is_file() and "=" in value:
        path_text, _, patterns = value.rpartition("=")
    path = Path(path_text)
    try:
        key = load_public_key(path.read_bytes())
    except (ChainError, OSError) as e:
        fail(f"cannot load publisher key {path}: {e}", EXIT_UNCHECKED)
    names = tuple(p for p in patterns.split(",") if p)
    return TrustedPublisher(path.stem, key, names)


def _policy_file(path: Path) -> tuple[VerificationPolicy, tuple[str, str, str | None]]:
    """A ModelTrustPolicy (YAML or JSON, as applied to the cluster), read with the
    operator's own parser: the policy, and its ledger's URL, verifier key and origin."""
    with requires_extra("operator", "verify --policy"):
        import yaml

        from modeltrust.operator.errors import SpecError
        from modeltrust.operator.keys import TrustedKeys
        from modeltrust.operator.types import parse_trust_policy

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        fail(f"cannot read policy {path}: {e}", EXIT_UNCHECKED)
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        fail(f"{path} is not a ModelTrustPolicy (no spec)", EXIT_UNCHECKED)
    doc.setdefault("metadata", {"name": path.stem})
    try:
        parsed = parse_trust_policy(doc)
        policy = TrustedKeys.from_policy(parsed).policy
    except SpecError as e:
        fail(f"policy {path}: {e}", EXIT_UNCHECKED)
    ledger = parsed.ledger
    return policy, (ledger.url, ledger.verifier_key, ledger.origin)


def _registrations_json(read: LedgerRead, policy: VerificationPolicy) -> list[dict[str, Any]]:
    out = []
    for ve in read.registrations:
        reg = ve.entry
        assert isinstance(reg, Registration)  # the client accepts nothing else
        trusted = policy.publisher(reg.signer_key_id)
        out.append(
            {
                "index": ve.index,
                "name": reg.model_name,
                "version": reg.model_version,
                "signer_key_id": reg.signer_key_id,
                "signature_kind": reg.signature_kind,
                "publisher": trusted.name if trusted else None,
            }
        )
    return out


def _revocations_json(
    read: LedgerRead, policy: VerificationPolicy, digest: str
) -> list[dict[str, Any]]:
    facts = check_revocations(read.revocations, policy)
    signers = {
        ve.entry.signer_key_id for ve in read.registrations if isinstance(ve.entry, Registration)
    }
    counting = {f.ledger_index for f in applicable_revocations(digest, signers, facts)}
    return [
        {
            "index": f.ledger_index,
            "target_kind": f.target_kind,
            "target": f.target,
            "signer_key_id": f.signer_key_id,
            "reason": f.reason,
            "signed_by_policy_publisher": f.signature_valid,
            "has_authority": f.ledger_index in counting,
        }
        for f in facts
    ]


@click.command("verify", epilog=EXIT_CODES_HELP)
@click.argument("model", required=False)
@click.option("--digest", help="Verify this digest (sha256:...) instead of hashing MODEL.")
@click.option(
    "--publisher",
    "publishers",
    multiple=True,
    metavar="KEY[=PATTERN,...]",
    help="A trusted publisher public key (PEM file), optionally with the model-name patterns "
    "it may vouch for (e.g. vendor.pem=resnet*,bert*); repeat for several.",
)
@click.option(
    "--threshold",
    type=click.IntRange(min=1),
    help="How many distinct trusted publishers must have signed (default 1).",
)
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A ModelTrustPolicy (YAML or JSON): its publishers, threshold, modelNamePatterns "
    "and ledger, instead of --publisher/--threshold (and --ledger/--ledger-key).",
)
@click.option("--name", help="Require a registration for this model name.")
@click.option("--version", "model_version", help="Require a registration for this version.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@source_options
@ledger_options
def verify_command(
    model: str | None,
    digest: str | None,
    publishers: tuple[str, ...],
    threshold: int | None,
    policy_path: Path | None,
    name: str | None,
    model_version: str | None,
    as_json: bool,
    ledger_url: str | None,
    ledger_key: str | None,
    origin: str | None,
    trust_state: Path | None,
    model_source: SourceFlags,
) -> None:
    """Check MODEL (or --digest) is trusted under a policy, as the operator would decide.

    Trusted: registered on the ledger by at least --threshold of the trusted publishers
    (each allowed to vouch for the model's name), every signature checked here, every
    entry proven against a verified checkpoint, and nothing revoking it that has the
    authority to (a key revoked by itself, a digest by a publisher that registered it).
    Revocations come from reading the whole verified log, so a ledger cannot hide one.
    Failures print the operator's reason codes (Revoked, BelowThreshold, ...).
    """
    if (model is None) == (digest is None):
        raise click.UsageError("give MODEL or --digest (not both)")
    if policy_path is not None and (publishers or threshold is not None):
        raise click.UsageError("--policy holds the publishers and threshold; give one or the other")
    if policy_path is not None:
        policy, (url, vkey, policy_origin) = _policy_file(policy_path)
        ledger_url, ledger_key = ledger_url or url, ledger_key or vkey
        origin = origin or policy_origin
    elif not publishers:
        raise click.UsageError("give at least one --publisher KEY, or --policy FILE")
    else:
        try:
            policy = VerificationPolicy(
                tuple(_publisher(p) for p in publishers), threshold=threshold or 1
            )
        except ChainError as e:
            raise click.UsageError(str(e)) from None
    if digest is not None:
        try:
            parse_digest(digest)
        except ChainError as e:
            raise click.BadParameter(str(e), param_hint="--digest") from None
    else:
        assert model is not None
        digest = format_digest(digest_model(model, model_source, "verify")[0])
    subject = Subject(digest, name, model_version)
    client = open_ledger(ledger_url, ledger_key, origin, trust_state)
    try:
        with client:
            read = read_ledger(client, RevocationIndex(ledger_url or "ledger"), digest)
    except ChainError as e:
        failed = TrustVerdict((ledger_finding(e),))
        _print_verdict(subject, policy, failed, None, as_json)
        sys.exit(ledger_exit_code(e))
    materials = Materials(subject, read.registrations, read.revocations)
    verdict = verify(materials, policy)
    _print_verdict(subject, policy, verdict, read, as_json)
    sys.exit(EXIT_OK if verdict.trusted else EXIT_REFUSED)


def _print_verdict(
    subject: Subject,
    policy: VerificationPolicy,
    verdict: TrustVerdict,
    read: LedgerRead | None,
    as_json: bool,
) -> None:
    size = read.checkpoint.size if read is not None else None
    if as_json:
        doc = {
            "digest": subject.digest,
            "name": subject.model_name,
            "version": subject.model_version,
            "policy": {
                "name": policy.name,
                "threshold": policy.threshold,
                "publishers": [
                    {
                        "name": p.name,
                        "key_id": p.key_id,
                        "model_name_patterns": list(p.model_name_patterns),
                    }
                    for p in policy.publishers
                ],
            },
            "verified": verdict.trusted,
            "reason": verdict.reason.value,
            "findings": [_finding_json(f) for f in verdict.findings],
            "signer_key_ids": list(verdict.signer_key_ids),
            "registration_index": verdict.registration_index,
            "checkpoint_size": size,
            "registrations": _registrations_json(read, policy) if read is not None else [],
            "revocations": (_revocations_json(read, policy, subject.digest) if read else []),
        }
        click.echo(json.dumps(doc, indent=2))
        return
    for f in verdict.findings:
        click.echo(f"{f.reason.value}: {f.message}")
    where = f"checkpoint size {size}" if size is not None else "no verified checkpoint"
    if verdict.trusted:
        click.echo(
            f"VERIFIED: {subject.digest} ({where}; signed by {len(verdict.signer_key_ids)} of "
            f"policy {policy.name!r}'s publishers, registration at ledger index "
            f"{verdict.registration_index})"
        )
    else:
        click.echo(f"NOT VERIFIED ({verdict.reason.value}): {subject.digest} ({where})")


def _finding_json(f: Finding) -> dict[str, str]:
    return {"reason": f.reason.value, "message": f.message}


def _append(client: LedgerClient, entry: Entry) -> VerifiedReceipt:
    # Check the ledger's checkpoint against the trusted one (a consistency proof from
    # it) before writing: a rolled-back or forked ledger must get nothing from us, not
    # an entry first and the finding after.
    client.checkpoint()
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
                "leaf_hash": hash_to_b64(receipt.leaf_hash),
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
        fail(f"cannot read an entry from {path}: {e}", EXIT_UNCHECKED)


def _load_key(path: Path) -> PrivateKey:
    """A PEM private key (MODELTRUST_KEY_PASSWORD), or cosign's encrypted one
    (COSIGN_PASSWORD): modeltrust.cli.keyfile."""
    return load_key(path)


COMMANDS: list[click.Command] = [keygen, sign, register, revoke, verify_command]
