"""Publisher keys, the three registration signature kinds, and revocations.

OMS bundles are made by the real ``model-signing`` package, and our verdict is
compared with its own verifier on the same inputs.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import model_signing
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modeltrust.chain.canonical import canonical_json
from modeltrust.chain.digest import format_digest
from modeltrust.chain.entries import Registration, entry_from_json, entry_to_json
from modeltrust.chain.errors import SignatureError
from modeltrust.chain.signatures import (
    PrivateKey,
    cosign_blob_registration,
    cosign_blob_signature,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    modeltrust_statement,
    oms_bundle_registration,
    private_key_pem,
    public_key_pem,
    sign_registration,
    sign_revocation,
    verify_cosign_blob,
    verify_oms_bundle,
    verify_registration,
    verify_revocation,
)

MODEL = b"\x08\x07onnx model bytes" * 100
DIGEST = format_digest(hashlib.sha256(MODEL).digest())


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def private_key(request: pytest.FixtureRequest) -> PrivateKey:
    return generate_private_key(request.param)


@pytest.fixture
def ec_key() -> PrivateKey:
    return generate_private_key("ecdsa-p256")


# --- Keys -------------------------------------------------------------------------------------


@pytest.mark.unit
def test_key_id_is_sha256_of_der_spki_and_pem_round_trips(private_key: PrivateKey) -> None:
    public = private_key.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(public) == hashlib.sha256(der).hexdigest()
    assert key_id(load_public_key(public_key_pem(public))) == key_id(public)
    again = load_private_key(private_key_pem(private_key))
    assert key_id(again.public_key()) == key_id(public)


@pytest.mark.unit
def test_unsupported_or_garbage_keys_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(SignatureError, match="secp384r1"):
        load_public_key(
            p384.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(SignatureError, match="RSA"):
        load_private_key(
            rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with pytest.raises(SignatureError, match="not a PEM public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SignatureError, match="not one of"):
        generate_private_key("rsa")


# --- modeltrust-v1 ------------------------------------------------------------------------------


@pytest.mark.unit
def test_statement_is_domain_separated_canonical_json() -> None:
    statement = modeltrust_statement("resnet", "1.0", DIGEST)
    assert statement == b"modeltrust-v1 registration\n" + canonical_json(
        {"digest": DIGEST, "name": "resnet", "version": "1.0"}
    )
    assert statement.startswith(b'modeltrust-v1 registration\n{"digest":')


@pytest.mark.unit
def test_modeltrust_v1_signs_and_verifies(private_key: PrivateKey) -> None:
    reg = sign_registration(private_key, name="resnet", version="1.0", digest=DIGEST, size=1600)
    assert reg.signature_kind == "modeltrust-v1"
    assert reg.signer_key_id == key_id(private_key.public_key())
    assert entry_from_json(entry_to_json(reg)) == reg
    verify_registration(reg, private_key.public_key())


@pytest.mark.unit
@pytest.mark.parametrize(
    "change",
    [
        {"model_name": "resnet-evil"},
        {"model_version": "1.1"},
        {"digest": "sha256:" + "00" * 32},
    ],
)
def test_modeltrust_v1_binds_name_version_and_digest(
    private_key: PrivateKey, change: dict[str, Any]
) -> None:
    reg = sign_registration(private_key, name="resnet", version="1.0", digest=DIGEST, size=1)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_registration(dataclasses.replace(reg, **change), private_key.public_key())


@pytest.mark.unit
def test_wrong_key_and_forged_signer_id_are_refused(private_key: PrivateKey) -> None:
    other = generate_private_key("ed25519")
    reg = sign_registration(private_key, name="m", version="1", digest=DIGEST, size=1)
    with pytest.raises(SignatureError, match="names signer key"):
        verify_registration(reg, other.public_key())
    claimed = dataclasses.replace(reg, signer_key_id=key_id(other.public_key()))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_registration(claimed, other.public_key())


# --- cosign-blob --------------------------------------------------------------------------------


@pytest.mark.unit
def test_cosign_blob_is_ecdsa_sha256_over_the_artifact(ec_key: PrivateKey) -> None:
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    reg = cosign_blob_registration(ec_key, name="m", version="1", digest=DIGEST, size=len(MODEL))
    verify_registration(reg, ec_key.public_key())
    # What cosign does: ECDSA P-256 with SHA-256 over the blob itself. Such a signature,
    # made by hashing the whole file, verifies from the digest alone, and ours over the
    # digest verifies as an ordinary signature of the file.
    over_file = ec_key.sign(MODEL, ec.ECDSA(hashes.SHA256()))
    verify_cosign_blob(over_file, ec_key.public_key(), hashlib.sha256(MODEL).digest())
    ours = base64.b64decode(reg.signature)
    ec_key.public_key().verify(ours, MODEL, ec.ECDSA(hashes.SHA256()))


@pytest.mark.unit
def test_cosign_blob_refusals(ec_key: PrivateKey) -> None:
    reg = cosign_blob_registration(ec_key, name="m", version="1", digest=DIGEST, size=1)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_registration(
            dataclasses.replace(reg, digest="sha256:" + "11" * 32), ec_key.public_key()
        )
    with pytest.raises(SignatureError, match="P-256"):
        cosign_blob_signature(generate_private_key("ed25519"), hashlib.sha256(MODEL).digest())
    garbage = dataclasses.replace(reg, signature=base64.b64encode(b"not der").decode())
    with pytest.raises(SignatureError, match="does not verify"):
        verify_registration(garbage, ec_key.public_key())


# --- oms-bundle (real model-signing bundles) ---------------------------------------------------


def oms_hashing() -> Any:
    return model_signing.hashing.Config().use_file_serialization()  # type: ignore[no-untyped-call]


def oms_sign(model: Path, key: PrivateKey, tmp: Path) -> bytes:
    key_path = tmp / "oms.key"
    key_path.write_bytes(private_key_pem(key))
    sig_path = tmp / "model.sig"
    config = model_signing.signing.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_signer(private_key=key_path)
    config.set_hashing_config(oms_hashing()).sign(model, sig_path)
    return sig_path.read_bytes()


def oms_accepts(model: Path, public_pem: bytes, bundle: bytes, tmp: Path) -> bool:
    """model-signing's own verdict (with an explicit hashing config, as it needs)."""
    (tmp / "check.pub").write_bytes(public_pem)
    (tmp / "check.sig").write_bytes(bundle)
    config = model_signing.verifying.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_verifier(public_key=tmp / "check.pub")
    try:
        config.set_hashing_config(oms_hashing()).verify(model, tmp / "check.sig")
    except Exception:  # any failure is a refusal, whatever its type
        return False
    return True


def our_verdict(bundle: bytes, public_pem: bytes, file_bytes: bytes) -> bool:
    try:
        verify_oms_bundle(bundle, load_public_key(public_pem), hashlib.sha256(file_bytes).digest())
    except SignatureError:
        return False
    return True


def edit_payload(bundle: bytes, edit: Any) -> bytes:
    doc = json.loads(bundle)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    edit(statement)
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(doc).encode()


@pytest.fixture
def signed_model(tmp_path: Path, ec_key: PrivateKey) -> tuple[Path, bytes]:
    model = tmp_path / "model.onnx"
    model.write_bytes(MODEL)
    sig_dir = tmp_path / "sig"
    sig_dir.mkdir()
    return model, oms_sign(model, ec_key, sig_dir)


@pytest.mark.integration
def test_oms_bundle_registration_verifies_without_the_file(
    signed_model: tuple[Path, bytes], ec_key: PrivateKey
) -> None:
    _, bundle = signed_model
    reg = oms_bundle_registration(
        bundle, ec_key.public_key(), name="resnet", version="1", size=len(MODEL)
    )
    assert reg.digest == DIGEST
    assert reg.signature_kind == "oms-bundle"
    assert base64.b64decode(reg.signature) == bundle
    verify_registration(reg, ec_key.public_key())
    wrong_digest = dataclasses.replace(reg, digest="sha256:" + "22" * 32)
    with pytest.raises(SignatureError, match="not the registered"):
        verify_registration(wrong_digest, ec_key.public_key())


def flip_signature(bundle: bytes) -> bytes:
    doc = json.loads(bundle)
    sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 1
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(doc).encode()


def set_resource_digest(statement: dict[str, Any]) -> None:
    statement["predicate"]["resources"][0]["digest"] = "33" * 32


def set_subject_name(statement: dict[str, Any]) -> None:
    statement["subject"][0]["name"] = "other.onnx"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("case", "our_message"),
    [
        ("valid", None),
        ("flipped signature", "does not verify"),
        ("edited resource digest", "does not verify"),
        ("edited subject name", "does not verify"),
        ("other key", "different public key"),
        ("other file", "not the registered"),
    ],
)
def test_oms_verdicts_agree_with_model_signing(
    case: str,
    our_message: str | None,
    signed_model: tuple[Path, bytes],
    ec_key: PrivateKey,
    tmp_path: Path,
) -> None:
    model, bundle = signed_model
    public_pem = public_key_pem(ec_key.public_key())
    file_bytes = MODEL
    if case == "flipped signature":
        bundle = flip_signature(bundle)
    elif case == "edited resource digest":
        bundle = edit_payload(bundle, set_resource_digest)
    elif case == "edited subject name":
        bundle = edit_payload(bundle, set_subject_name)
    elif case == "other key":
        public_pem = public_key_pem(generate_private_key("ecdsa-p256").public_key())
    elif case == "other file":
        file_bytes = MODEL + b"!"
        model.write_bytes(file_bytes)
    ours = our_verdict(bundle, public_pem, file_bytes)
    assert ours == oms_accepts(model, public_pem, bundle, tmp_path)
    assert ours == (our_message is None)
    if our_message:
        with pytest.raises(SignatureError, match=our_message):
            verify_oms_bundle(
                bundle, load_public_key(public_pem), hashlib.sha256(file_bytes).digest()
            )


@pytest.mark.integration
def test_oms_other_key_without_hint_still_fails_on_signature(
    signed_model: tuple[Path, bytes],
) -> None:
    _, bundle = signed_model
    doc = json.loads(bundle)
    del doc["verificationMaterial"]["publicKey"]["hint"]
    other = generate_private_key("ecdsa-p256").public_key()
    with pytest.raises(SignatureError, match="DSSE signature does not verify"):
        verify_oms_bundle(json.dumps(doc).encode(), other, hashlib.sha256(MODEL).digest())


@pytest.mark.integration
def test_oms_multi_file_bundles_register_their_onnx_file_and_malformed_ones_are_refused(
    tmp_path: Path, ec_key: PrivateKey
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "a.onnx").write_bytes(b"a")
    (model_dir / "b.bin").write_bytes(b"b")
    (model_dir / "c.onnx").write_bytes(b"c")
    sig_dir = tmp_path / "sig"
    sig_dir.mkdir()
    bundle = oms_sign(model_dir, ec_key, sig_dir)
    public_pem = public_key_pem(ec_key.public_key())
    assert oms_accepts(model_dir, public_pem, bundle, tmp_path)  # model-signing agrees it is valid
    for onnx in (b"a", b"c"):  # each signed .onnx file of the directory
        verify_oms_bundle(bundle, ec_key.public_key(), hashlib.sha256(onnx).digest())
    with pytest.raises(SignatureError, match=r"none of its \.onnx files \(a\.onnx, c\.onnx\)"):
        verify_oms_bundle(bundle, ec_key.public_key(), hashlib.sha256(b"b").digest())
    with pytest.raises(SignatureError, match="has the registered sha256:"):
        verify_oms_bundle(bundle, ec_key.public_key(), hashlib.sha256(b"d").digest())
    with pytest.raises(SignatureError, match="signs several files: give the model file"):
        oms_bundle_registration(bundle, ec_key.public_key(), name="m", version="1", size=1)
    reg = oms_bundle_registration(
        bundle,
        ec_key.public_key(),
        name="m",
        version="1",
        size=1,
        digest="sha256:" + hashlib.sha256(b"c").hexdigest(),
    )
    verify_registration(reg, ec_key.public_key())

    def drop_a_file(statement: dict[str, Any]) -> None:
        del statement["predicate"]["resources"][0]

    resigned = edit_payload(bundle, drop_a_file)
    doc = json.loads(resigned)
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"])
    assert isinstance(ec_key, ec.EllipticCurvePrivateKey)
    pae = b"DSSEv1 28 application/vnd.in-toto+json %d %s" % (len(payload), payload)
    sig = ec_key.sign(pae, ec.ECDSA(hashes.SHA256()))
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    with pytest.raises(SignatureError, match="subject digest is not SHA-256 of the signed files"):
        verify_oms_bundle(
            json.dumps(doc).encode(), ec_key.public_key(), hashlib.sha256(b"c").digest()
        )
    for bad, message in [
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"mediaType": "x"}', "media type"),
    ]:
        with pytest.raises(SignatureError, match=message):
            verify_oms_bundle(bad, ec_key.public_key(), hashlib.sha256(b"a").digest())
    with pytest.raises(SignatureError, match="P-256"):
        verify_oms_bundle(bundle, generate_private_key("ed25519").public_key(), bytes(32))


# --- Revocations ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_revocations_sign_verify_and_bind_every_field(private_key: PrivateKey) -> None:
    rev = sign_revocation(private_key, target_kind="digest", target=DIGEST, reason="poisoned")
    verify_revocation(rev, private_key.public_key())
    key_rev = sign_revocation(
        private_key,
        target_kind="key",
        target=key_id(private_key.public_key()),
        reason="key leaked",
        time="2025-01-31T12:00:00Z",
    )
    verify_revocation(key_rev, private_key.public_key())
    for change in (
        {"reason": "other"},
        {"time": "2025-01-31T12:00:01Z"},
        {"target": "sha256:" + "44" * 32},
    ):
        with pytest.raises(SignatureError, match="does not verify"):
            verify_revocation(dataclasses.replace(rev, **change), private_key.public_key())
    # A registration signature can never pass as a revocation (domain separation).
    reg = sign_registration(private_key, name="m", version="1", digest=DIGEST, size=1)
    forged = dataclasses.replace(rev, signature=reg.signature)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_revocation(forged, private_key.public_key())


@pytest.mark.unit
def test_registration_kind_is_checked_against_signature(ec_key: PrivateKey) -> None:
    reg = sign_registration(ec_key, name="m", version="1", digest=DIGEST, size=1)
    as_cosign: Registration = dataclasses.replace(reg, signature_kind="cosign-blob")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_registration(as_cosign, ec_key.public_key())
