"""Publisher keys and the three registration signature kinds, plus signed revocations.

Why one long module: the three signature kinds share key loading, key ids and the
statements they sign; one file keeps the domain separation between them visible.

Keys are Ed25519 or ECDSA P-256, exchanged as PEM (PKCS#8 private keys,
SubjectPublicKeyInfo public keys). A key id is the lowercase hex SHA-256 of the
DER SubjectPublicKeyInfo.

Signature kinds of a Registration (``signature`` is always standard base64):

``modeltrust-v1``
    Ed25519, or ECDSA P-256 with SHA-256 (DER signature), over the statement
    ``b"modeltrust-v1 registration\\n" + canonical_json({"digest", "name", "version"})``
    (RFC 8785, so keys sorted: digest, name, version). The prefix keeps these
    signatures from ever being valid for anything else we sign.

``cosign-blob``
    What ``cosign sign-blob --key`` makes: an ECDSA P-256 signature (DER) of the
    artifact's SHA-256; base64 of the DER bytes. Verified from the digest alone
    (the digest is used as a prehashed SHA-256 message), so the file is not needed.

``oms-bundle``
    An OpenSSF model-signing bundle (``model-signing`` package, elliptic-curve key),
    the bundle JSON base64-encoded. It is a Sigstore bundle v0.3 holding a DSSE
    envelope whose payload is an in-toto v1 statement of predicate type
    ``https://model_signing/signature/v1.0``. The predicate lists the signed files
    (``resources``: name and hex sha256) and the subject digest is SHA-256 of their
    digests' bytes concatenated in that order. We verify the DSSE signature with the
    publisher key, the subject digest, and that the registered digest is a signed
    file's: the only file of a single-file signature, or a ``.onnx`` file of a
    directory's (the model server loads that one file's bytes, nothing beside it).
    No model file is needed.

Only ``modeltrust-v1`` binds the model name and version; the other two kinds sign
the artifact digest only, so for them name and version are the registrant's claim.

Revocations sign ``b"modeltrust-v1 revocation\\n" + canonical_json({"reason",
"target", "target_kind", "time"})`` the same way as ``modeltrust-v1``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from modeltrust.chain.canonical import canonical_json, parse_json_strict
from modeltrust.chain.digest import parse_digest
from modeltrust.chain.entries import Registration, Revocation, utc_now
from modeltrust.chain.errors import CanonicalJSONError, SignatureError

PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
KeyKind = Literal["ed25519", "ecdsa-p256"]
KEY_KINDS: tuple[KeyKind, ...] = ("ed25519", "ecdsa-p256")

REGISTRATION_PREFIX = b"modeltrust-v1 registration\n"
REVOCATION_PREFIX = b"modeltrust-v1 revocation\n"

OMS_BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
OMS_PAYLOAD_TYPE = "application/vnd.in-toto+json"
OMS_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
OMS_PREDICATE_TYPE = "https://model_signing/signature/v1.0"


# --- Keys --------------------------------------------------------------------------------


def key_id(public_key: PublicKey) -> str:
    """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def key_kind(key: PublicKey | PrivateKey) -> KeyKind:
    if isinstance(key, Ed25519PublicKey | Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    raise SignatureError(f"unsupported key: ECDSA curve {key.curve.name}; use P-256 or Ed25519")


def generate_private_key(kind: str) -> PrivateKey:
    if kind == "ed25519":
        return Ed25519PrivateKey.generate()
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise SignatureError(f"key kind {kind!r} is not one of {', '.join(KEY_KINDS)}")


def load_public_key(pem: bytes) -> PublicKey:
    """Load a PEM SubjectPublicKeyInfo Ed25519 or ECDSA P-256 key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise SignatureError(f"not a PEM public key: {e}") from None
    if not isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise SignatureError(f"unsupported public key type {type(key).__name__}")
    key_kind(key)
    return key


def load_private_key(pem: bytes, password: bytes | None = None) -> PrivateKey:
    """Load a PEM Ed25519 or ECDSA P-256 private key (optionally encrypted)."""
    try:
        key = serialization.load_pem_private_key(pem, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignatureError(f"not a usable PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise SignatureError(f"unsupported private key type {type(key).__name__}")
    key_kind(key)
    return key


def private_key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM; encrypted under PASSWORD when one is given (cryptography's best
    available scheme: PBES2, PBKDF2-HMAC-SHA256 and AES-256-CBC, which OpenSSL reads)."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def is_encrypted_private_key(pem: bytes) -> bool:
    """Whether PEM holds an encrypted private key (PKCS#8 or OpenSSL's traditional form)."""
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in pem or b"Proc-Type: 4,ENCRYPTED" in pem


def public_key_pem(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- modeltrust-v1 statements ----------------------------------------------------------------


def modeltrust_statement(name: str, version: str, digest: str) -> bytes:
    """The bytes a ``modeltrust-v1`` registration signs (see the module docstring)."""
    parse_digest(digest)
    return REGISTRATION_PREFIX + canonical_json(
        {"name": name, "version": version, "digest": digest}
    )


def revocation_statement(target_kind: str, target: str, reason: str, time: str) -> bytes:
    """The bytes a revocation signs."""
    fields = {"target_kind": target_kind, "target": target, "reason": reason, "time": time}
    return REVOCATION_PREFIX + canonical_json(fields)


def sign_registration(
    private_key: PrivateKey,
    *,
    name: str,
    version: str,
    digest: str,
    size: int,
    format: str = "onnx",
) -> Registration:
    """A ``modeltrust-v1`` registration signed with ``private_key``."""
    signature = _sign(private_key, modeltrust_statement(name, version, digest))
    return Registration(
        model_name=name,
        model_version=version,
        digest=digest,
        size=size,
        format=format,
        signer_key_id=key_id(private_key.public_key()),
        signature_kind="modeltrust-v1",
        signature=_b64(signature),
    )


def cosign_blob_signature(private_key: PrivateKey, artifact_sha256: bytes) -> bytes:
    """The DER ECDSA P-256 signature ``cosign sign-blob`` makes for an artifact digest."""
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise SignatureError("cosign-blob signatures need an ECDSA P-256 key")
    if len(artifact_sha256) != 32:
        raise SignatureError("artifact SHA-256 must be 32 bytes")
    return private_key.sign(artifact_sha256, ec.ECDSA(Prehashed(hashes.SHA256())))


def cosign_blob_registration(
    private_key: PrivateKey,
    *,
    name: str,
    version: str,
    digest: str,
    size: int,
    format: str = "onnx",
) -> Registration:
    """A ``cosign-blob`` registration: the cosign signature of the artifact digest."""
    signature = cosign_blob_signature(private_key, parse_digest(digest))
    return Registration(
        model_name=name,
        model_version=version,
        digest=digest,
        size=size,
        format=format,
        signer_key_id=key_id(private_key.public_key()),
        signature_kind="cosign-blob",
        signature=_b64(signature),
    )


def oms_bundle_registration(
    bundle: bytes,
    public_key: PublicKey,
    *,
    name: str,
    version: str,
    size: int,
    digest: str | None = None,
    format: str = "onnx",
) -> Registration:
    """An ``oms-bundle`` registration from a model-signing bundle, verified first.

    ``digest``: the model file's (``sha256:...``); without it, the only file of a
    single-file bundle. Pass the publisher's public key.
    """
    raw = parse_digest(digest) if digest is not None else oms_bundle_file_digest(bundle)
    verify_oms_bundle(bundle, public_key, raw)
    return Registration(
        model_name=name,
        model_version=version,
        digest="sha256:" + raw.hex(),
        size=size,
        format=format,
        signer_key_id=key_id(public_key),
        signature_kind="oms-bundle",
        signature=_b64(bundle),
    )


def oms_bundle_file_digest(bundle: bytes) -> bytes:
    """The single file's sha256 an oms bundle claims to sign (unverified: verify it next)."""
    envelope = _path(_json_object(bundle, "oms bundle"), "dsseEnvelope")
    payload = _b64decode(envelope.get("payload"), "oms bundle DSSE payload")
    statement = _json_object(payload, "oms in-toto statement")
    resources = _path(statement, "predicate").get("resources")
    if not isinstance(resources, list) or len(resources) != 1:
        raise SignatureError(
            "oms bundle signs several files: give the model file, whose digest picks the "
            "signed .onnx file"
        )
    digest = _path(resources[0], what="resource").get("digest")
    try:
        raw = bytes.fromhex(digest) if isinstance(digest, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise SignatureError("oms bundle resource digest is not a sha256 hex digest")
    return raw


def sign_revocation(
    private_key: PrivateKey,
    *,
    target_kind: str,
    target: str,
    reason: str,
    time: str | None = None,
) -> Revocation:
    """A revocation of a digest or a key id, signed with ``private_key``."""
    when = time or utc_now()
    signature = _sign(private_key, revocation_statement(target_kind, target, reason, when))
    return Revocation(
        target_kind=target_kind,
        target=target,
        reason=reason,
        signer_key_id=key_id(private_key.public_key()),
        time=when,
        signature=_b64(signature),
    )


# --- Verification --------------------------------------------------------------------------


def verify_registration(reg: Registration, public_key: PublicKey) -> None:
    """Check a registration's signature with the publisher's key; raise SignatureError."""
    _check_signer(reg.signer_key_id, public_key)
    signature = _b64decode(reg.signature)
    if reg.signature_kind == "modeltrust-v1":
        message = modeltrust_statement(reg.model_name, reg.model_version, reg.digest)
        if not _verify(public_key, signature, message):
            raise SignatureError(
                f"modeltrust-v1 signature of {reg.model_name} {reg.model_version} ({reg.digest}) "
                f"does not verify with key {reg.signer_key_id}"
            )
    elif reg.signature_kind == "cosign-blob":
        verify_cosign_blob(signature, public_key, parse_digest(reg.digest))
    elif reg.signature_kind == "oms-bundle":
        verify_oms_bundle(signature, public_key, parse_digest(reg.digest))
    else:  # Registration validation makes this unreachable; refuse rather than pass.
        raise SignatureError(f"unknown signature kind {reg.signature_kind!r}")


def verify_revocation(rev: Revocation, public_key: PublicKey) -> None:
    """Check a revocation's signature with the key named by its signer_key_id."""
    _check_signer(rev.signer_key_id, public_key)
    message = revocation_statement(rev.target_kind, rev.target, rev.reason, rev.time)
    if not _verify(public_key, _b64decode(rev.signature), message):
        raise SignatureError(
            f"revocation of {rev.target_kind} {rev.target} does not verify with key "
            f"{rev.signer_key_id}"
        )


def verify_cosign_blob(signature: bytes, public_key: PublicKey, artifact_sha256: bytes) -> None:
    """Check a ``cosign sign-blob`` signature (DER ECDSA P-256) against an artifact digest."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise SignatureError("cosign-blob signatures need an ECDSA P-256 publisher key")
    try:
        public_key.verify(signature, artifact_sha256, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, ValueError):
        raise SignatureError(
            f"cosign-blob signature does not verify for sha256:{artifact_sha256.hex()} "
            f"with key {key_id(public_key)}"
        ) from None


def verify_oms_bundle(bundle: bytes, public_key: PublicKey, artifact_sha256: bytes) -> None:
    """Check an OpenSSF model-signing bundle signs a model file with this digest."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise SignatureError("oms-bundle signatures need an ECDSA P-256 publisher key")
    doc = _json_object(bundle, "oms bundle")
    if doc.get("mediaType") != OMS_BUNDLE_MEDIA_TYPE:
        raise SignatureError(f"oms bundle media type is not {OMS_BUNDLE_MEDIA_TYPE}")
    hint = _path(doc, "verificationMaterial", "publicKey").get("hint")
    if hint and hint != hashlib.sha256(public_key_pem(public_key)).hexdigest():
        raise SignatureError("oms bundle names a different public key (verificationMaterial hint)")
    envelope = _path(doc, "dsseEnvelope")
    if envelope.get("payloadType") != OMS_PAYLOAD_TYPE:
        raise SignatureError(f"oms bundle DSSE payload type is not {OMS_PAYLOAD_TYPE}")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise SignatureError("oms bundle DSSE envelope must hold exactly one signature")
    payload = _b64decode(envelope.get("payload"), "oms bundle DSSE payload")
    sig = _b64decode(
        _path(signatures[0], what="DSSE signature").get("sig"), "oms bundle DSSE signature"
    )
    try:
        public_key.verify(sig, _dsse_pae(OMS_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureError(
            f"oms bundle DSSE signature does not verify with key {key_id(public_key)}"
        ) from None
    _check_oms_statement(_json_object(payload, "oms in-toto statement"), artifact_sha256)


def _check_oms_statement(statement: dict[str, Any], artifact_sha256: bytes) -> None:
    if statement.get("_type") != OMS_STATEMENT_TYPE:
        raise SignatureError(f"oms statement type is not {OMS_STATEMENT_TYPE}")
    if statement.get("predicateType") != OMS_PREDICATE_TYPE:
        raise SignatureError(f"oms predicate type is not {OMS_PREDICATE_TYPE}")
    predicate = _path(statement, "predicate")
    serialization_ = _path(predicate, "serialization")
    if serialization_.get("method") != "files" or serialization_.get("hash_type") != "sha256":
        raise SignatureError("oms bundle must use file serialization with sha256 hashing")
    resources = predicate.get("resources")
    if not isinstance(resources, list) or not resources:
        raise SignatureError("oms bundle lists no signed files (predicate resources)")
    files: list[tuple[str, bytes]] = []
    for item in resources:
        resource = _path(item, what="resource")
        name, digest = resource.get("name"), resource.get("digest")
        if resource.get("algorithm") != "sha256" or not _is_sha256_hex(digest):
            raise SignatureError("oms bundle resource digest is not sha256")
        assert isinstance(digest, str)
        files.append((name if isinstance(name, str) else "", bytes.fromhex(digest)))
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise SignatureError("oms statement must have exactly one subject")
    subject_digest = _path(subjects[0], "digest", what="subject digest").get("sha256")
    if subject_digest != hashlib.sha256(b"".join(d for _, d in files)).hexdigest():
        raise SignatureError("oms subject digest is not SHA-256 of the signed files' digests")
    registered = f"sha256:{artifact_sha256.hex()}"
    if len(files) == 1:
        if files[0][1] != artifact_sha256:
            raise SignatureError(
                f"oms bundle signs file digest {files[0][1].hex()}, not the registered {registered}"
            )
        return
    if not any(d == artifact_sha256 and n.endswith(".onnx") for n, d in files):
        onnx = [n for n, _ in files if n.endswith(".onnx")]
        raise SignatureError(
            f"oms bundle signs {len(files)} files and none of its .onnx files "
            f"({', '.join(onnx[:5]) or 'none'}) has the registered {registered}"
        )


def _is_sha256_hex(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the envelope signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def _check_signer(signer_key_id: str, public_key: PublicKey) -> None:
    actual = key_id(public_key)
    if actual != signer_key_id:
        raise SignatureError(
            f"entry names signer key {signer_key_id}, but the key given has id {actual}"
        )
    key_kind(public_key)


def _sign(private_key: PrivateKey, message: bytes) -> bytes:
    if isinstance(private_key, Ed25519PrivateKey):
        return private_key.sign(message)
    key_kind(private_key)
    return private_key.sign(message, ec.ECDSA(hashes.SHA256()))


def _verify(public_key: PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(public_key, Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = parse_json_strict(data)
    except CanonicalJSONError as e:
        raise SignatureError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise SignatureError(f"{what} is not a JSON object")
    return doc


def _path(obj: Any, *keys: str, what: str = "") -> dict[str, Any]:
    """Follow ``keys`` through nested objects, refusing anything that is not an object."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(obj, dict):
        raise SignatureError(f"oms bundle lacks the object {what or '.'.join(keys)}")
    return obj


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _b64decode(value: object, what: str = "signature") -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not valid base64") from None
