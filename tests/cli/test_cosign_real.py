"""Real cosign output through `modeltrust register` and `modeltrust sign`, and back.

cosign (tests/cluster/versions.env COSIGN_VERSION) is built from its Go module by
tests/cluster/build-tools.sh (`make tools`, which CI runs before the tests; alone:
`bash tests/cluster/build-tools.sh --cosign`) and cached under the tools directory. A
missing binary fails these tests: they never skip. Signing runs offline (no signing
config, no transparency log upload).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from harness.cluster import BUILD_SCRIPT, tools_dir
from harness.ledger import LedgerKeys, LedgerThread, make_keys, service_config
from modeltrust.chain.entries import Registration, entry_from_json
from modeltrust.cli.main import main

pytestmark = pytest.mark.integration

PASSWORD = "correct horse"
MODEL = b"real cosign, real bytes " * 400


def cosign_binary() -> Path:
    versions = (BUILD_SCRIPT.parent / "versions.env").read_text()
    version = next(
        line.split("=", 1)[1].strip()
        for line in versions.splitlines()
        if line.startswith("COSIGN_VERSION=")
    )
    path = tools_dir() / f"cosign-{version}" / "cosign"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"cosign {version} is not built ({path} missing): run `make tools` or "
            f"`bash {BUILD_SCRIPT.relative_to(BUILD_SCRIPT.parents[2])} --cosign`"
        )
    return path


class Cosign:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary, self.workdir = binary, workdir

    def run(self, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "COSIGN_PASSWORD": password, "HOME": str(self.workdir)}
        return subprocess.run(
            [str(self.binary), *args],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def key_pair(self, prefix: str) -> tuple[Path, Path]:
        self.ok("generate-key-pair", "--output-key-prefix", prefix)
        return self.workdir / f"{prefix}.key", self.workdir / f"{prefix}.pub"

    def sign_blob(self, key: Path, blob: Path, *out: str) -> None:
        offline = ["--use-signing-config=false", "--tlog-upload=false", "--yes"]
        self.ok("sign-blob", "--key", str(key), *offline, *out, str(blob))


class Env:
    def __init__(self, tmp: Path, thread: LedgerThread, keys: LedgerKeys, cosign: Cosign) -> None:
        self.tmp, self.thread, self.keys, self.cosign = tmp, thread, keys, cosign
        self.runner = CliRunner()
        self.model = tmp / "model.onnx"
        self.model.write_bytes(MODEL)

    @property
    def conn(self) -> list[str]:
        return [
            *["--ledger", self.thread.url, "--ledger-key", self.keys.verifier_key],
            *["--trust-state", str(self.tmp / "trusted.json")],
        ]

    def register(self, *args: str, version: str = "1") -> Any:
        return self.runner.invoke(
            main,
            [
                *["register", *args, "--model", str(self.model)],
                *["--name", "resnet", "--version", version, *self.conn],
            ],
        )

    def verify(self, pub: Path) -> Any:
        args = ["verify", str(self.model), "--publisher", str(pub), "--json", *self.conn]
        return self.runner.invoke(main, args)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    cosign = Cosign(cosign_binary(), tmp_path)
    _, pub = cosign.key_pair("cosign")
    keys = make_keys(tmp_path / "keys")
    (keys.publishers_dir / "cosign.pem").write_bytes(pub.read_bytes())
    with LedgerThread(service_config(keys, tmp_path / "ledger.db")) as thread:
        yield Env(tmp_path, thread, keys, cosign)


def verified(env: Env, pub: Path) -> dict[str, Any]:
    result = env.verify(pub)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_cosign_signature_and_bundles_register_and_verify(env: Env) -> None:
    key, pub = env.tmp / "cosign.key", env.tmp / "cosign.pub"
    env.cosign.sign_blob(key, env.model, "--bundle", "model.bundle")  # cosign v3's default
    bundle = json.loads((env.tmp / "model.bundle").read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert "messageSignature" in bundle
    legacy = ["--new-bundle-format=false", "--output-signature", "model.sig"]
    env.cosign.sign_blob(key, env.model, *legacy, "--bundle", "model.old.bundle")
    assert "base64Signature" in json.loads((env.tmp / "model.old.bundle").read_text())

    for version, args in [
        ("1", ["--bundle", str(env.tmp / "model.bundle")]),
        ("2", ["--signature", str(env.tmp / "model.sig")]),
        ("3", ["--bundle", str(env.tmp / "model.old.bundle")]),
    ]:
        result = env.register(*args, "--public-key", str(pub), version=version)
        assert result.exit_code == 0, (args, result.output)
        assert "as cosign-blob, signed by cosign" in result.stderr
    doc = verified(env, pub)
    assert [r["version"] for r in doc["registrations"]] == ["1", "2", "3"]
    assert {r["signature_kind"] for r in doc["registrations"]} == {"cosign-blob"}


def test_real_cosign_refusals_name_the_failed_check(env: Env) -> None:
    key, pub = env.tmp / "cosign.key", env.tmp / "cosign.pub"
    _, other_pub = env.cosign.key_pair("other")
    env.cosign.sign_blob(key, env.model, "--bundle", "model.bundle")
    other_file = env.tmp / "other.onnx"
    other_file.write_bytes(b"other bytes")
    env.cosign.sign_blob(key, other_file, "--bundle", "other.bundle")
    doc = json.loads((env.tmp / "model.bundle").read_text())
    sig = bytearray(base64.b64decode(doc["messageSignature"]["signature"]))
    sig[-3] ^= 1
    doc["messageSignature"]["signature"] = base64.b64encode(bytes(sig)).decode()
    (env.tmp / "tampered.bundle").write_text(json.dumps(doc))
    cases = [
        (["--bundle", "model.bundle", "--public-key", str(other_pub)], "signature check failed"),
        (["--bundle", "other.bundle", "--public-key", str(pub)], "digest check failed"),
        (["--bundle", "tampered.bundle", "--public-key", str(pub)], "signature check failed"),
    ]
    for args, message in cases:
        args[1] = str(env.tmp / args[1])
        result = env.register(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    assert env.verify(pub).exit_code == 1  # nothing was appended


def test_modeltrust_sign_with_cosigns_encrypted_key_and_cosign_accepts_it(env: Env) -> None:
    key, pub = env.tmp / "cosign.key", env.tmp / "cosign.pub"
    assert key.read_text().startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    reg_file = env.tmp / "reg.json"
    args = ["sign", str(env.model), "--key", str(key), "--name", "resnet", "--version", "1"]
    args += ["--kind", "cosign-blob", "--out", str(reg_file)]
    wrong = env.runner.invoke(main, args, env={"COSIGN_PASSWORD": "wrong"})
    assert wrong.exit_code == 3
    assert "wrong password (COSIGN_PASSWORD)" in wrong.stderr
    signed = env.runner.invoke(main, args, env={"COSIGN_PASSWORD": PASSWORD})
    assert signed.exit_code == 0, signed.output
    reg = entry_from_json(json.loads(reg_file.read_text()))
    assert isinstance(reg, Registration)
    # cosign itself accepts the signature modeltrust made with cosign's key
    (env.tmp / "ours.sig").write_text(reg.signature)
    check = env.cosign.run(
        *["verify-blob", "--key", str(pub), "--signature", "ours.sig"],
        *["--insecure-ignore-tlog=true", str(env.model)],
    )
    assert check.returncode == 0, check.stderr
    assert "Verified OK" in check.stderr + check.stdout
    assert env.runner.invoke(main, ["register", str(reg_file), *env.conn]).exit_code == 0
    assert verified(env, pub)["verified"] is True
