"""`modeltrust register --signature/--bundle` (cosign, model-signing) and cosign's encrypted
keys in `modeltrust sign`, against a real ledger on loopback, then `modeltrust verify`.

The cosign files here are written by this test from the formats cosign documents (the
signature, both bundle formats, the encrypted key file), to reach every refusal and the
keyless case; tests/cli/test_cosign_real.py runs the same paths on real cosign output.
The model-signing bundles are real ones, made with the `model-signing` package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import model_signing
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.secret import SecretBox

from harness.ledger import LedgerKeys, LedgerThread, make_keys, service_config
from modeltrust.chain.entries import Registration, entry_from_json
from modeltrust.chain.signatures import key_id, private_key_pem, public_key_pem
from modeltrust.cli.main import main

pytestmark = pytest.mark.integration

MODEL = b"onnx-ish bytes for import " * 500


class Env:
    """A ledger trusting one ECDSA P-256 publisher (the cosign / model-signing key)."""

    def __init__(self, tmp: Path, thread: LedgerThread, keys: LedgerKeys) -> None:
        self.tmp, self.thread, self.keys = tmp, thread, keys
        self.runner = CliRunner()
        self.key = PUBLISHER
        self.pub = tmp / "cosign.pub"
        self.pub.write_bytes(public_key_pem(self.key.public_key()))
        self.model = tmp / "model.onnx"
        self.model.write_bytes(MODEL)

    @property
    def conn(self) -> list[str]:
        return [
            *["--ledger", self.thread.url, "--ledger-key", self.keys.verifier_key],
            *["--trust-state", str(self.tmp / "trusted.json")],
        ]

    def register(self, *args: str, name: str = "resnet") -> Any:
        return self.runner.invoke(
            main,
            [
                *["register", *args, "--model", str(self.model)],
                *["--name", name, "--version", "1", *self.conn],
            ],
        )

    def verify(self, name: str = "resnet") -> Any:
        args = ["verify", str(self.model), "--publisher", str(self.pub), "--name", name]
        return self.runner.invoke(main, [*args, "--json", *self.conn])

    def write(self, name: str, data: bytes | dict[str, Any]) -> str:
        path = self.tmp / name
        path.write_bytes(json.dumps(data).encode() if isinstance(data, dict) else data)
        return str(path)


PUBLISHER = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    keys = make_keys(tmp_path / "keys")
    (keys.publishers_dir / "cosign.pem").write_bytes(public_key_pem(PUBLISHER.public_key()))
    with LedgerThread(service_config(keys, tmp_path / "ledger.db")) as thread:
        yield Env(tmp_path, thread, keys)


def assert_registered_and_verified(env: Env, result: Any, kind: str) -> None:
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["existing"] is False
    assert f"as {kind}, signed by cosign (key {key_id(PUBLISHER.public_key())})" in result.stderr
    verdict = env.verify()
    assert verdict.exit_code == 0, verdict.output
    doc = json.loads(verdict.stdout)
    assert doc["verified"] is True
    assert [r["signature_kind"] for r in doc["registrations"]] == [kind]


# --- cosign sign-blob signatures and bundles -------------------------------------------------


def cosign_signature(key: ec.EllipticCurvePrivateKey, blob: bytes) -> bytes:
    """What `cosign sign-blob --key` signs: the blob, ECDSA P-256 with SHA-256, DER."""
    return key.sign(blob, ec.ECDSA(hashes.SHA256()))


def der_hint(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def sigstore_bundle(
    key: ec.EllipticCurvePrivateKey, blob: bytes, *, signed: bytes | None = None
) -> dict[str, Any]:
    """A cosign v3 key-based bundle (Sigstore bundle v0.3 with a messageSignature)."""
    return {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "publicKey": {"hint": der_hint(key)},
            "tlogEntries": [{"logIndex": "1", "kindVersion": {"kind": "hashedrekord"}}],
        },
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": base64.b64encode(hashlib.sha256(signed or blob).digest()).decode(),
            },
            "signature": base64.b64encode(cosign_signature(key, blob)).decode(),
        },
    }


def old_bundle(key: ec.EllipticCurvePrivateKey, blob: bytes) -> dict[str, Any]:
    """cosign's pre-Sigstore bundle: the signature, base64 of the public key PEM, Rekor."""
    return {
        "base64Signature": base64.b64encode(cosign_signature(key, blob)).decode(),
        "cert": base64.b64encode(public_key_pem(key.public_key())).decode(),
        "rekorBundle": {"SignedEntryTimestamp": "", "Payload": {"logIndex": 1}},
    }


def test_cosign_signature_file_registers_and_verifies(env: Env) -> None:
    sig = env.write("model.sig", base64.b64encode(cosign_signature(PUBLISHER, MODEL)))
    result = env.register("--signature", sig, "--public-key", str(env.pub))
    assert_registered_and_verified(env, result, "cosign-blob")
    assert "imported cosign signature: resnet 1 sha256:" in result.stderr


@pytest.mark.parametrize("make", [sigstore_bundle, old_bundle], ids=["v0.3", "old"])
def test_cosign_bundles_register_and_verify(env: Env, make: Any) -> None:
    bundle = env.write("model.bundle", make(PUBLISHER, MODEL))
    result = env.register("--bundle", bundle, "--public-key", str(env.pub))
    assert_registered_and_verified(env, result, "cosign-blob")
    assert "were not checked" in result.stderr or "was not checked" in result.stderr


def test_cosign_bundle_key_found_among_a_policys_publishers(env: Env) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    policy = {
        "apiVersion": "modeltrust.io/v1alpha1",
        "kind": "ModelTrustPolicy",
        "metadata": {"name": "vendors"},
        "spec": {
            "publishers": [
                {"name": "other", "publicKey": public_key_pem(other.public_key()).decode()},
                {
                    "name": "cosign",
                    "publicKey": public_key_pem(PUBLISHER.public_key()).decode(),
                    "modelNamePatterns": ["resnet*"],
                },
            ],
            "ledger": {"url": env.thread.url, "verifierKey": env.keys.verifier_key},
        },
    }
    policy_file = env.write("policy.json", policy)
    bundle = env.write("model.bundle", sigstore_bundle(PUBLISHER, MODEL))
    args = ["register", "--bundle", bundle, "--model", str(env.model), "--policy", policy_file]
    args += ["--version", "1", "--trust-state", str(env.tmp / "t.json")]
    result = env.runner.invoke(main, [*args, "--name", "resnet"])
    assert_registered_and_verified(env, result, "cosign-blob")
    assert "warning" not in result.stderr
    other_name = env.runner.invoke(main, [*args, "--name", "bert"])
    assert other_name.exit_code == 0, other_name.output  # registered, but with a warning:
    assert "the policy lets cosign vouch only for resnet*: it will not count for 'bert'" in (
        other_name.stderr
    )


def test_cosign_refusals_name_the_failed_check(env: Env) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    stranger_pub = env.write("stranger.pub", public_key_pem(stranger.public_key()))
    good_sig = base64.b64encode(cosign_signature(PUBLISHER, MODEL))
    tampered = bytearray(cosign_signature(PUBLISHER, MODEL))
    tampered[-1] ^= 1
    cases = [
        # wrong key: the signature is the publisher's, the key given is a stranger's
        (["--signature", env.write("a.sig", good_sig), "--public-key", stranger_pub],
         "signature check failed: the cosign signature does not verify for sha256:"),
        # tampered signature
        (["--signature", env.write("b.sig", base64.b64encode(bytes(tampered))),
          "--public-key", str(env.pub)], "signature check failed"),
        # a signature of other bytes: fails the signature check for this model's digest
        (["--signature", env.write("c.sig", base64.b64encode(cosign_signature(PUBLISHER, b"x"))),
          "--public-key", str(env.pub)],
         f"does not verify for sha256:{hashlib.sha256(MODEL).hexdigest()}"),
        # a bundle of other bytes: its messageDigest is not the model's
        (["--bundle", env.write("d.bundle", sigstore_bundle(PUBLISHER, b"other")),
          "--public-key", str(env.pub)], "digest check failed: the cosign bundle"),
        # a bundle whose messageDigest was edited to the model's, signature of other bytes
        (["--bundle", env.write("e.bundle", sigstore_bundle(PUBLISHER, b"other", signed=MODEL)),
          "--public-key", str(env.pub)], "signature check failed"),
        # the old bundle names its key: a stranger's given key is refused by name
        (["--bundle", env.write("f.bundle", old_bundle(PUBLISHER, MODEL)),
          "--public-key", stranger_pub], "key check failed: the cosign bundle"),
        (["--signature", env.write("g.sig", b"{}"), "--public-key", str(env.pub)],
         "pass it as --bundle"),
    ]  # fmt: skip
    for args, message in cases:
        result = env.register(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    verdict = env.verify()
    assert verdict.exit_code == 1
    assert json.loads(verdict.stdout)["reason"] == "NotRegistered"  # nothing was appended


def test_keyless_bundles_are_refused_with_the_reason(env: Env) -> None:
    cert_pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    new = sigstore_bundle(PUBLISHER, MODEL)
    new["verificationMaterial"] = {"certificate": {"rawBytes": "MIIB"}, "tlogEntries": []}
    old = old_bundle(PUBLISHER, MODEL)
    old["cert"] = base64.b64encode(cert_pem).decode()
    for i, bundle in enumerate([new, old]):
        result = env.register(
            "--bundle", env.write(f"k{i}.bundle", bundle), "--public-key", str(env.pub)
        )
        assert result.exit_code == 1, result.output
        assert "keyless (certificate) signatures are not supported" in result.stderr
        assert "Fulcio" in result.stderr
        assert "trust root" in result.stderr


def test_register_usage_errors(env: Env) -> None:
    sig = env.write("model.sig", base64.b64encode(cosign_signature(PUBLISHER, MODEL)))
    no_key = env.register("--signature", sig)
    assert no_key.exit_code == 2
    assert "--public-key PEM or --policy FILE" in no_key.output
    both = env.runner.invoke(main, ["register", sig, "--signature", sig, *env.conn])
    assert both.exit_code == 2
    no_model = env.runner.invoke(
        main, ["register", "--signature", sig, "--name", "m", "--version", "1", *env.conn]
    )
    assert no_model.exit_code == 2
    assert "need --model" in no_model.output


# --- OpenSSF model-signing bundles ---------------------------------------------------------------


def oms_sign(model: Path, tmp: Path) -> bytes:
    key_path = tmp / "oms.key"
    key_path.write_bytes(private_key_pem(PUBLISHER))
    sig_path = tmp / f"{model.name}.sig"
    config = model_signing.signing.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_signer(private_key=key_path)
    hashing = model_signing.hashing.Config().use_file_serialization()  # type: ignore[no-untyped-call]
    config.set_hashing_config(hashing).sign(model, sig_path)
    return sig_path.read_bytes()


def test_model_signing_bundle_single_file_registers_and_verifies(env: Env) -> None:
    bundle = env.write("model.oms.json", oms_sign(env.model, env.tmp))
    result = env.register("--bundle", bundle, "--public-key", str(env.pub))
    assert_registered_and_verified(env, result, "oms-bundle")


def test_model_signing_bundle_of_a_directory_registers_its_onnx_file(env: Env) -> None:
    directory = env.tmp / "model-dir"
    directory.mkdir()
    (directory / "model.onnx").write_bytes(MODEL)
    (directory / "README.md").write_bytes(b"about the model")
    bundle = env.write("dir.oms.json", oms_sign(directory, env.tmp))
    result = env.register("--bundle", bundle, "--public-key", str(env.pub))
    assert_registered_and_verified(env, result, "oms-bundle")
    env.model.write_bytes(b"about the model")  # the README's bytes: signed, but not a .onnx file
    refused = env.register("--bundle", bundle, "--public-key", str(env.pub), name="readme")
    assert refused.exit_code == 1
    assert "none of its .onnx files (model.onnx) has the registered sha256:" in refused.stderr


def test_model_signing_refusals_name_the_failed_check(env: Env) -> None:
    raw = oms_sign(env.model, env.tmp)
    stranger = ec.generate_private_key(ec.SECP256R1())
    stranger_pub = env.write("stranger.pub", public_key_pem(stranger.public_key()))
    doc = json.loads(raw)
    sig = bytearray(base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"]))
    sig[-1] ^= 1
    doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    tampered = env.write("tampered.json", doc)
    no_hint = json.loads(raw)
    del no_hint["verificationMaterial"]["publicKey"]["hint"]
    good = env.write("model.oms.json", raw)
    attestation = json.loads(raw)
    statement = json.loads(base64.b64decode(attestation["dsseEnvelope"]["payload"]))
    statement["predicateType"] = "https://slsa.dev/provenance/v1"
    attestation["dsseEnvelope"]["payload"] = base64.b64encode(
        json.dumps(statement).encode()
    ).decode()
    cases = [
        (["--bundle", env.write("nohint.json", no_hint), "--public-key", stranger_pub],
         "oms bundle DSSE signature does not verify with key"),
        (["--bundle", good, "--public-key", stranger_pub], "names a different public key"),
        (["--bundle", tampered, "--public-key", str(env.pub)], "DSSE signature does not verify"),
        (["--bundle", env.write("att.json", attestation), "--public-key", str(env.pub)],
         "not a model-signing signature"),
    ]  # fmt: skip
    for args, message in cases:
        result = env.register(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    env.model.write_bytes(MODEL + b"!")  # digest mismatch: the bundle signs the old bytes
    result = env.register("--bundle", good, "--public-key", str(env.pub))
    assert result.exit_code == 1
    assert "oms bundle signs file digest" in result.stderr
    assert "not the registered sha256:" in result.stderr


# --- cosign's encrypted private keys -------------------------------------------------------------


def cosign_encrypted_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """A private key file as `cosign generate-key-pair` writes it (see modeltrust.cli.imports):
    PKCS#8 DER, NaCl secretbox under scrypt(password), in JSON, in a PEM block."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = hashlib.scrypt(password, salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=64 << 20)
    ciphertext = SecretBox(secret).encrypt(der, nonce).ciphertext

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    doc = {
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
        "ciphertext": b64(ciphertext),
    }
    body = base64.encodebytes(json.dumps(doc).encode()).decode()
    return (
        f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    ).encode()


@pytest.mark.parametrize("kind", ["cosign-blob", "modeltrust-v1"])
def test_sign_with_a_cosign_encrypted_key_then_register_and_verify(env: Env, kind: str) -> None:
    key_file = env.write("cosign.key", cosign_encrypted_key(PUBLISHER, b"s3cret"))
    reg_file = env.tmp / "reg.json"
    args = ["sign", str(env.model), "--key", key_file, "--name", "resnet", "--version", "1"]
    signed = env.runner.invoke(
        main, [*args, "--kind", kind, "--out", str(reg_file)], env={"COSIGN_PASSWORD": "s3cret"}
    )
    assert signed.exit_code == 0, signed.output
    reg = entry_from_json(json.loads(reg_file.read_text()))
    assert isinstance(reg, Registration)
    assert reg.signer_key_id == key_id(PUBLISHER.public_key())
    registered = env.runner.invoke(main, ["register", str(reg_file), *env.conn])
    assert registered.exit_code == 0, registered.output
    verdict = env.verify()
    assert verdict.exit_code == 0, verdict.output


def test_cosign_encrypted_key_refusals(env: Env) -> None:
    key_file = env.write("cosign.key", cosign_encrypted_key(PUBLISHER, b"s3cret"))
    args = ["sign", str(env.model), "--key", key_file, "--name", "m", "--version", "1"]
    args += ["--out", str(env.tmp / "reg.json")]
    wrong = env.runner.invoke(main, args, env={"COSIGN_PASSWORD": "guess"})
    assert wrong.exit_code == 3
    assert "wrong password (COSIGN_PASSWORD)" in wrong.stderr
    unset = env.runner.invoke(main, args, env={"COSIGN_PASSWORD": None})
    assert unset.exit_code == 3
    assert "encrypted cosign key: set COSIGN_PASSWORD" in unset.stderr
    text = Path(key_file).read_text().replace("SIGSTORE", "COSIGN")  # older cosign's PEM type
    old = env.runner.invoke(
        main, [*args[:3], env.write("old.key", text.encode()), *args[4:]],
        env={"COSIGN_PASSWORD": "s3cret"},
    )  # fmt: skip
    assert old.exit_code == 0, old.output
