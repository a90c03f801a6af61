"""Signatures made with other tools, read into registrations for `modeltrust register`.

Why a module of its own: these are parsers of other tools' file formats, kept apart from
the commands. Nothing here decides trust: every registration they lead to is checked by
``modeltrust.chain.signatures.verify_registration`` (the rule the ledger, the operator and
`modeltrust verify` apply) before it is appended.

Read here (docs/ledger.md, "Importing signatures from other tools"):

- ``cosign sign-blob --key K --output-signature SIG``: SIG is base64 of a DER ECDSA P-256
  signature over the blob's SHA-256; it becomes a ``cosign-blob`` registration as is.
- A cosign Sigstore bundle (``--bundle``; what cosign v3 writes by default; media type
  ``application/vnd.dev.sigstore.bundle*``) with a ``messageSignature``: its
  ``messageDigest`` must be the model's SHA-256 and its ``signature`` becomes a
  ``cosign-blob`` registration. The transparency-log entries it may carry are not checked
  (no Rekor trust root here); the modeltrust ledger is the log that counts.
- The older cosign bundle ``{"base64Signature", "cert", "rekorBundle"}``: the same, with
  ``cert`` holding base64 of the signer's public key PEM (or a certificate: keyless).
- An OpenSSF model-signing bundle (Sigstore bundle v0.3 with a DSSE envelope whose in-toto
  statement has predicate type ``https://model_signing/signature/v1.0``): kept whole as an
  ``oms-bundle`` registration.

Keyless bundles (a Fulcio certificate instead of a key) are refused: see KEYLESS.

Also cosign's encrypted private keys (``cosign generate-key-pair``), for `modeltrust sign`:
a PEM block ``ENCRYPTED SIGSTORE PRIVATE KEY`` (older cosign: ``ENCRYPTED COSIGN PRIVATE
KEY``) holding JSON ``{"kdf": {"name": "scrypt", "params": {"N", "r", "p"}, "salt"},
"cipher": {"name": "nacl/secretbox", "nonce"}, "ciphertext"}`` (byte strings in standard
base64): the key is scrypt(password, salt, N, r, p) of 32 bytes, and the ciphertext is
NaCl secretbox (XSalsa20-Poly1305) of the PKCS#8 DER private key. Decrypting needs PyNaCl
(the ``cosign`` extra: ``pip install 'modeltrust-cli[cosign]'``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization

from modeltrust.chain.canonical import parse_json_strict
from modeltrust.chain.entries import Registration
from modeltrust.chain.errors import CanonicalJSONError, ChainError, SignatureError
from modeltrust.chain.signatures import (
    OMS_PAYLOAD_TYPE,
    OMS_PREDICATE_TYPE,
    PrivateKey,
    PublicKey,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
    verify_registration,
)
from modeltrust.chain.trust import TrustedPublisher

SIGSTORE_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle"  # every version starts so

KEYLESS = (
    "keyless (certificate) signatures are not supported: such a signature is only as good "
    "as the identity in its short-lived Fulcio certificate, which must be checked against "
    "Sigstore's Fulcio CA and Rekor log roots; modeltrust verifies offline against publisher "
    "keys pinned in the policy and has no such trust root. Sign with a key instead "
    "(cosign sign-blob --key, or model-signing's key signer)"
)


class ImportRefused(ChainError):
    """A foreign signature file that cannot become a registration, and why."""


@dataclass(frozen=True)
class Imported:
    """A signature read from another tool's file, not yet verified."""

    kind: str  # the registration's signature_kind: "cosign-blob" or "oms-bundle"
    signature: bytes  # DER ECDSA signature (cosign-blob), or the whole bundle (oms-bundle)
    source: str  # what the file was, for messages
    signed_digest: bytes | None = None  # the digest the file says it signs, when it says
    embedded_key: PublicKey | None = None  # the signer's key, when the file carries it
    hint: str | None = None  # the bundle's publicKey hint, when it has one
    notes: tuple[str, ...] = field(default=())  # what was read but not checked


@dataclass(frozen=True)
class Candidate:
    """A public key the signature may be from: --public-key files, or a policy's publishers."""

    name: str
    public_key: PublicKey
    policy_publisher: TrustedPublisher | None = None  # when it comes from a policy


def read_cosign_signature(data: bytes) -> Imported:
    """What ``cosign sign-blob --output-signature`` writes: base64 of a DER signature."""
    text = data.strip()
    if text.startswith(b"{"):
        raise ImportRefused("this is a JSON document, not a cosign signature: pass it as --bundle")
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImportRefused(
            "cosign signature file is not base64 (cosign sign-blob output)"
        ) from None
    if not signature:
        raise ImportRefused("cosign signature file is empty")
    return Imported("cosign-blob", signature, "cosign signature")


def read_bundle(data: bytes) -> Imported:
    """A cosign bundle (Sigstore v0.1-v0.3, or cosign's older format) or a model-signing one."""
    doc = _json_object(data, "bundle")
    if "base64Signature" in doc:
        return _old_cosign_bundle(doc)
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith(SIGSTORE_BUNDLE_MEDIA_TYPE):
        raise ImportRefused(
            "not a cosign or model-signing bundle (no Sigstore bundle mediaType, "
            "no base64Signature)"
        )
    material = _object(doc, "verificationMaterial", what="bundle verificationMaterial")
    if "certificate" in material or "x509CertificateChain" in material:
        raise ImportRefused(f"bundle is signed keyless: {KEYLESS}")
    public_key = material.get("publicKey")
    hint = public_key.get("hint") if isinstance(public_key, dict) else None
    hint = hint if isinstance(hint, str) and hint else None
    if "messageSignature" in doc:
        return _sigstore_message_signature(doc, media_type, hint)
    if "dsseEnvelope" in doc:
        return _dsse_bundle(data, doc, hint)
    raise ImportRefused("bundle holds neither a messageSignature nor a DSSE envelope")


def _sigstore_message_signature(doc: dict[str, Any], media_type: str, hint: str | None) -> Imported:
    message = _object(doc, "messageSignature", what="bundle messageSignature")
    digest = _object(message, "messageDigest", what="bundle messageSignature.messageDigest")
    if digest.get("algorithm") != "SHA2_256":
        raise ImportRefused(
            f"bundle message digest algorithm is {digest.get('algorithm')!r}, not SHA2_256: "
            "only SHA-256 signatures can be registered"
        )
    signed = _b64(digest.get("digest"), "bundle messageDigest.digest")
    if len(signed) != 32:
        raise ImportRefused("bundle messageDigest.digest is not 32 bytes")
    signature = _b64(message.get("signature"), "bundle messageSignature.signature")
    notes: tuple[str, ...] = ()
    if _object(doc, "verificationMaterial", what="").get("tlogEntries"):
        notes = ("its transparency-log (Rekor) entries were not checked",)
    return Imported(
        "cosign-blob",
        signature,
        f"cosign bundle ({media_type})",
        signed_digest=signed,
        hint=hint,
        notes=notes,
    )


def _dsse_bundle(data: bytes, doc: dict[str, Any], hint: str | None) -> Imported:
    envelope = _object(doc, "dsseEnvelope", what="bundle dsseEnvelope")
    if envelope.get("payloadType") != OMS_PAYLOAD_TYPE:
        raise ImportRefused(f"bundle DSSE payload type is not {OMS_PAYLOAD_TYPE}")
    statement = _json_object(_b64(envelope.get("payload"), "DSSE payload"), "DSSE payload")
    predicate = statement.get("predicateType")
    if predicate != OMS_PREDICATE_TYPE:
        raise ImportRefused(
            f"bundle is an in-toto attestation of predicate type {str(predicate)[:100]!r}, not a "
            f"model-signing signature ({OMS_PREDICATE_TYPE}); attestations (cosign attest-blob) "
            "say something about a file rather than sign it, and are not registrations"
        )
    return Imported("oms-bundle", data, "model-signing bundle", hint=hint)


def _old_cosign_bundle(doc: dict[str, Any]) -> Imported:
    signature = _b64(doc.get("base64Signature"), "bundle base64Signature")
    cert = doc.get("cert")
    key: PublicKey | None = None
    if cert:
        pem = _b64(cert, "bundle cert")
        if b"-----BEGIN CERTIFICATE-----" in pem:
            raise ImportRefused(f"bundle is signed keyless: {KEYLESS}")
        try:
            key = load_public_key(pem)
        except SignatureError as e:
            raise ImportRefused(
                f"bundle cert is neither a certificate nor a public key: {e}"
            ) from None
    notes = ("its rekorBundle was not checked",) if doc.get("rekorBundle") else ()
    return Imported(
        "cosign-blob",
        signature,
        "cosign bundle (pre-Sigstore format)",
        embedded_key=key,
        notes=notes,
    )


def import_registration(
    imported: Imported,
    candidates: Sequence[Candidate],
    *,
    name: str,
    version: str,
    digest: bytes,
    size: int,
    format: str = "onnx",
) -> tuple[Registration, Candidate]:
    """The registration of ``imported`` for a model file with this SHA-256 and size, and
    the candidate key it verifies with (``verify_registration``, the one rule).

    Raises ImportRefused naming the check that failed: the digest the file signs, the
    signature under each candidate key, or the key a bundle names.
    """
    if not candidates:
        raise ImportRefused("no publisher key to check the signature with (--public-key, --policy)")
    model = f"sha256:{digest.hex()}"
    if imported.signed_digest is not None and imported.signed_digest != digest:
        raise ImportRefused(
            f"digest check failed: the {imported.source} signs "
            f"sha256:{imported.signed_digest.hex()}, but the model file is {model}"
        )
    keys = list(candidates)
    if imported.embedded_key is not None:
        embedded = key_id(imported.embedded_key)
        keys = [c for c in candidates if key_id(c.public_key) == embedded]
        if not keys:
            raise ImportRefused(
                f"key check failed: the {imported.source} was signed with key {embedded}, "
                "which is none of the given publisher keys"
            )
    keys.sort(key=lambda c: not _hint_matches(imported.hint, c.public_key))
    failures: list[str] = []
    for candidate in keys:
        reg = Registration(
            model_name=name,
            model_version=version,
            digest=model,
            size=size,
            format=format,
            signer_key_id=key_id(candidate.public_key),
            signature_kind=imported.kind,
            signature=base64.b64encode(imported.signature).decode(),
        )
        try:
            verify_registration(reg, candidate.public_key)
        except ChainError as e:
            failures.append(f"{candidate.name}: {e}")
            continue
        return reg, candidate
    raise ImportRefused(
        f"signature check failed: the {imported.source} does not verify for {model} with "
        f"{'the given key' if len(keys) == 1 else f'any of the {len(keys)} given keys'} ("
        + "; ".join(failures)
        + ")"
    )


def _hint_matches(hint: str | None, key: PublicKey) -> bool:
    """Whether a bundle's publicKey hint names this key, in the forms the tools write:
    model-signing hex SHA-256 of the PEM, cosign base64 SHA-256 of the DER."""
    if hint is None:
        return False
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der_hash = hashlib.sha256(der).digest()
    return hint in {
        hashlib.sha256(public_key_pem(key)).hexdigest(),
        der_hash.hex(),
        base64.b64encode(der_hash).decode(),
    }


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = parse_json_strict(data)
    except CanonicalJSONError as e:
        raise ImportRefused(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ImportRefused(f"{what} is not a JSON object")
    return doc


def _object(doc: dict[str, Any], key: str, *, what: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise ImportRefused(f"{what} is missing or not an object")
    return value


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise ImportRefused(f"{what} must be a non-empty base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ImportRefused(f"{what} is not valid base64") from None


# --- cosign's encrypted private keys -----------------------------------------------------

COSIGN_KEY_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_COSIGN_PEM = re.compile(
    rb"-----BEGIN (ENCRYPTED (?:SIGSTORE|COSIGN) PRIVATE KEY)-----\s*(.*?)\s*-----END \1-----",
    re.DOTALL,
)
# scrypt parameters read from a key file are bounded, so a hostile file cannot ask for
# gigabytes or hours; cosign v3 writes N=65536, r=8, p=1.
_SCRYPT_MAX_N, _SCRYPT_MAX_R, _SCRYPT_MAX_P = 1 << 20, 32, 16


def is_cosign_private_key(data: bytes) -> bool:
    """Whether ``data`` is a cosign encrypted private key file (either PEM type)."""
    return _COSIGN_PEM.search(data) is not None


def load_cosign_private_key(data: bytes, password: bytes) -> PrivateKey:
    """Decrypt a ``cosign generate-key-pair`` private key (see the module docstring).

    Raises ImportRefused naming what failed: the format, the password, or the key type.
    """
    match = _COSIGN_PEM.search(data)
    if match is None:
        raise ImportRefused(f"not a cosign private key (no {' or '.join(COSIGN_KEY_PEM_TYPES)})")
    try:
        body = base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        raise ImportRefused("cosign private key PEM body is not base64") from None
    doc = _json_object(body, "cosign private key")
    kdf = _object(doc, "kdf", what="cosign private key kdf")
    params = _object(kdf, "params", what="cosign private key kdf params")
    cipher = _object(doc, "cipher", what="cosign private key cipher")
    if kdf.get("name") != "scrypt":
        raise ImportRefused(f"cosign private key kdf {kdf.get('name')!r} is not scrypt")
    if cipher.get("name") != "nacl/secretbox":
        raise ImportRefused(
            f"cosign private key cipher {cipher.get('name')!r} is not nacl/secretbox"
        )
    n, r, p = params.get("N"), params.get("r"), params.get("p")
    if not (
        isinstance(n, int)
        and isinstance(r, int)
        and isinstance(p, int)
        and 2 <= n <= _SCRYPT_MAX_N
        and n & (n - 1) == 0
        and 1 <= r <= _SCRYPT_MAX_R
        and 1 <= p <= _SCRYPT_MAX_P
    ):
        raise ImportRefused(f"cosign private key scrypt parameters out of range: N={n} r={r} p={p}")
    salt = _b64(kdf.get("salt"), "cosign private key salt")
    nonce = _b64(cipher.get("nonce"), "cosign private key nonce")
    ciphertext = _b64(doc.get("ciphertext"), "cosign private key ciphertext")
    if len(nonce) != 24:
        raise ImportRefused("cosign private key nonce is not 24 bytes")
    try:
        from nacl.exceptions import CryptoError
        from nacl.secret import SecretBox
    except ImportError:
        raise ImportRefused(
            "decrypting a cosign private key needs PyNaCl: pip install 'modeltrust-cli[cosign]'"
        ) from None
    secret = hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * n * r + (128 << 20)
    )
    try:
        der = SecretBox(secret).decrypt(ciphertext, nonce)
    except CryptoError:
        raise ImportRefused(
            "cannot decrypt the cosign private key: wrong password (COSIGN_PASSWORD) "
            "or a damaged key file"
        ) from None
    pem = (
        b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(der) + b"-----END PRIVATE KEY-----\n"
    )
    try:
        return load_private_key(pem)
    except SignatureError as e:
        raise ImportRefused(f"the decrypted cosign key is not usable here: {e}") from None
