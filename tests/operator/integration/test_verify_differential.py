"""One ledger, one policy, three verifiers: the operator's decision, `modeltrust verify
--policy` and `modeltrust verify --publisher/--threshold` must give the same verdict and
the same reason codes.

Each case builds a real ledger (LedgerService on loopback, SQLite, real Ed25519
signatures), appends real entries, and writes the policy as the ModelTrustPolicy a
cluster would hold. The operator reads it through LedgerAccess (the complete-log
revocation index) and `decide`; the CLI runs through click's CliRunner with --json.
The cases are the ones the three former rule sets disagreed on: a revocation by another
trusted publisher, and a revocation hidden by deleting its row from the ledger's lookup
table (the operator read the log; the CLI trusted the lookup and said "verified").
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.config_maps import ConfigMaps
from harness.ledger import TOKEN, LedgerKeys, LedgerThread, make_keys, service_config
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import Entry
from modeltrust.chain.signatures import key_id, public_key_pem, sign_registration, sign_revocation
from modeltrust.cli.main import main
from modeltrust.operator.decisions import ArtifactResult, Evidence, LoadResult, Verdict, decide
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.types import parse_trust_policy

pytestmark = pytest.mark.integration

MODEL = b"differential model bytes " * 64
DIGEST = "sha256:" + hashlib.sha256(MODEL).hexdigest()
NAME, VERSION = "resnet", "1.0"


@dataclass
class World:
    """Publishers a and b are in the policy; c is known to the ledger only."""

    keys: LedgerKeys
    a: Ed25519PrivateKey
    b: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    c: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def kid(self, key: Ed25519PrivateKey) -> str:
        return key_id(key.public_key())

    def registration(self, key: Ed25519PrivateKey) -> Entry:
        return sign_registration(key, name=NAME, version=VERSION, digest=DIGEST, size=len(MODEL))

    def revocation(self, key: Ed25519PrivateKey, kind: str, target: str) -> Entry:
        return sign_revocation(key, target_kind=kind, target=target, reason=f"{kind} withdrawn")


@dataclass(frozen=True)
class Case:
    entries: Callable[[World], list[Entry]]
    threshold: int = 1
    patterns: tuple[str, ...] = ()  # publisher a's modelNamePatterns
    hide_revocation_lookups: bool = False
    expected: tuple[str, ...] = ()  # reason codes, most severe first; () = Verified


CASES = {
    "clean": Case(lambda w: [w.registration(w.a)]),
    "digest revoked by its signer": Case(
        lambda w: [w.registration(w.a), w.revocation(w.a, "digest", DIGEST)],
        expected=("Revoked", "BelowThreshold"),
    ),
    "revocations by another trusted publisher": Case(
        lambda w: [
            w.registration(w.a),
            w.revocation(w.b, "digest", DIGEST),
            w.revocation(w.b, "key", w.kid(w.a)),
        ],
    ),
    "signer key revoked": Case(
        lambda w: [w.registration(w.a), w.revocation(w.a, "key", w.kid(w.a))],
        expected=("Revoked", "BelowThreshold"),
    ),
    "revocation hidden from the lookup table": Case(
        lambda w: [w.registration(w.a), w.revocation(w.a, "digest", DIGEST)],
        hide_revocation_lookups=True,
        expected=("Revoked", "BelowThreshold"),
    ),
    "threshold 2 with one signature": Case(
        lambda w: [w.registration(w.a)], threshold=2, expected=("BelowThreshold",)
    ),
    "threshold 2 with two signatures": Case(
        lambda w: [w.registration(w.a), w.registration(w.b)], threshold=2
    ),
    "model name outside the publisher's patterns": Case(
        lambda w: [w.registration(w.a)],
        patterns=("vision-*",),
        expected=("PublisherNotAllowed", "BelowThreshold"),
    ),
    "untrusted signer": Case(
        lambda w: [w.registration(w.c)], expected=("UntrustedKey", "BelowThreshold")
    ),
    "not registered": Case(lambda w: [], expected=("NotRegistered",)),
}


def policy_doc(world: World, url: str, case: Case) -> dict[str, Any]:
    publishers: list[dict[str, Any]] = [
        {"name": "a", "publicKey": public_key_pem(world.a.public_key()).decode()},
        {"name": "b", "publicKey": public_key_pem(world.b.public_key()).decode()},
    ]
    if case.patterns:
        publishers[0]["modelNamePatterns"] = list(case.patterns)
    return {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelTrustPolicy",
        "metadata": {"name": "differential", "generation": 1},
        "spec": {
            "ledger": {"url": url, "verifierKey": world.keys.verifier_key},
            "publishers": publishers,
            "threshold": case.threshold,
        },
    }


def hide_revocation_lookup_rows(db: Path) -> None:
    """What an attacker with write access to the ledger's database does: delete the rows
    of the `lookup` table (storage.py) that find revocations. The log itself is intact."""
    with sqlite3.connect(db) as conn:
        deleted = conn.execute("DELETE FROM lookup WHERE kind LIKE 'revocation%'").rowcount
    assert deleted > 0


async def operator_verdict(doc: dict[str, Any]) -> tuple[bool, list[str], str]:
    policy = parse_trust_policy(doc)
    la = LedgerAccess(cast(Kube, ConfigMaps()), "modeltrust-system", lambda: TOKEN, timeout=10)
    try:
        ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, NAME)
    finally:
        await la.close()
    decision = decide(
        Evidence(
            DIGEST, NAME, VERSION, ArtifactResult(DIGEST, len(MODEL)), LoadResult(ok=True),
            ev.registrations, ev.revocations, ev.error, ev.unwitnessed, ev.inconsistent,
        ),
        policy,
    )  # fmt: skip
    return (
        decision.verdict is Verdict.ALLOWED,
        [f.reason.value for f in decision.findings],
        (decision.message),
    )


def cli_verdict(args: list[str]) -> tuple[bool, list[str], str, int]:
    argv = ["verify", *args, "--name", NAME, "--version", VERSION, "--json"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code in (0, 1), result.output
    doc = json.loads(result.stdout)
    messages = "; ".join(f["message"] for f in doc["findings"])
    return doc["verified"], [f["reason"] for f in doc["findings"]], messages, result.exit_code


@pytest.mark.parametrize("name", list(CASES))
async def test_operator_and_cli_agree(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    keys = make_keys(tmp_path / "keys")
    world = World(keys, keys.publisher)
    for label, key in (("b", world.b), ("c", world.c)):
        (keys.publishers_dir / f"{label}.pem").write_bytes(public_key_pem(key.public_key()))
    db = tmp_path / "ledger.db"
    with (
        LedgerThread(service_config(keys, db)) as ledger,
        LedgerClient(ledger.url, verifier_key=keys.verifier_key, token=TOKEN) as client,
    ):
        for entry in case.entries(world):
            client.append(entry)
    if case.hide_revocation_lookups:
        hide_revocation_lookup_rows(db)
    model = tmp_path / "model.onnx"
    model.write_bytes(MODEL)

    with LedgerThread(service_config(keys, db)) as ledger:
        if case.hide_revocation_lookups:  # the lookup really hides it now
            with LedgerClient(ledger.url, verifier_key=keys.verifier_key) as client:
                assert client.revocations_for(digest=DIGEST) == []
        doc = policy_doc(world, ledger.url, case)
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(doc))
        pem_a, pem_b = tmp_path / "a.pem", tmp_path / "b.pem"
        pem_a.write_bytes(public_key_pem(world.a.public_key()))
        pem_b.write_bytes(public_key_pem(world.b.public_key()))
        a_arg = f"{pem_a}={','.join(case.patterns)}" if case.patterns else str(pem_a)
        conn = ["--ledger", ledger.url, "--ledger-key", keys.verifier_key]

        op_ok, op_reasons, op_message = await operator_verdict(doc)
        by_policy = cli_verdict([str(model), "--policy", str(policy_file)])
        by_flags = cli_verdict(
            [str(model), "--publisher", a_arg, "--publisher", str(pem_b),
             "--threshold", str(case.threshold), *conn]
        )  # fmt: skip

    assert op_reasons == list(case.expected), op_message
    assert op_ok is (not case.expected)
    for ok, reasons, message, code in (by_policy, by_flags):
        assert (ok, reasons) == (op_ok, op_reasons), message
        assert code == (0 if op_ok else 1)
    if case.hide_revocation_lookups:
        assert "withdrawn" in by_policy[2]  # the CLI names the revocation it found
