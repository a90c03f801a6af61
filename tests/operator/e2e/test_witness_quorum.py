"""A policy that requires witness cosignatures refuses a ledger whose checkpoints lack them."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    PolicyFactory,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    deployment,
    free_port,
    model_deployment,
    wait_condition,
    wait_for,
)
from .test_policy_status import wait_policy

pytestmark = pytest.mark.usefixtures("operator")


def test_a_checkpoint_without_enough_cosignatures_blocks_rollout(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
) -> None:
    witness = NoteSigner.generate("witness.e2e.modeltrust.dev", alg=ALG_COSIGNATURE_V1)
    policy = make_policy(
        ledger={
            "url": ledger.url,
            "verifierKey": ledger.verifier_key,
            "witnesses": [witness.verifier_key()],
            "witnessQuorum": 1,
        }
    )
    path, digest = models.make("m", seed=51)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")  # registered and signed
    apply(crds, model_deployment(namespace, "w", policy, model_uri(path), digest))

    md = wait_condition(crds, namespace, "w", "Verified", "False", "WitnessQuorumNotMet")
    message = condition(md, "Verified")["message"]
    assert "not cosigned by 1 of the policy's 1 witness" in message
    assert deployment(crds, namespace, "w") is None
    assert condition(md, "Ready")["status"] == "False"
    mtp = wait_policy(crds, policy, "LedgerReachable", "False", "WitnessQuorumNotMet")
    assert condition(mtp, "Valid")["status"] == "True"


@pytest.fixture
def witness(ledger: Ledger, tmp_path: Path) -> Iterator[tuple[NoteSigner, str]]:
    """A cosigning witness process in front of the ledger; yields (its key, its URL)."""
    signer = NoteSigner.generate("witness.e2e.modeltrust.dev", alg=ALG_COSIGNATURE_V1)
    key_file = tmp_path / "witness.key"
    key_file.write_text(signer.signer_key() + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("witness_proxy.py")),
         "--upstream", ledger.url, "--log-key", ledger.verifier_key,
         "--witness-key", str(key_file), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "witness.log").open("wb"),
    )  # fmt: skip

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/v1/checkpoint", timeout=2) as r:  # noqa: S310
                return signer.name in r.read().decode()
        except OSError:
            return False

    try:
        wait_for("the witness to serve cosigned checkpoints", up, timeout=30)
        yield signer, url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_witnessed_ledger_rolls_out(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    witness: tuple[NoteSigner, str],
    rolled_out: RolloutFactory,
) -> None:
    signer, url = witness
    other = NoteSigner.generate("absent-witness", alg=ALG_COSIGNATURE_V1)
    policy = make_policy(
        ledger={
            "url": url,
            "verifierKey": ledger.verifier_key,
            "witnesses": [signer.verifier_key(), other.verifier_key()],
            "witnessQuorum": 1,
        }
    )
    md = rolled_out("ok", policy, seed=52).md
    assert condition(md, "Verified")["reason"] == "Verified"
    assert [a.action for a in ledger.audits(md["metadata"]["uid"])] == ["rollout"]
    wait_policy(crds, policy, "LedgerReachable", "True", "CheckpointVerified")
    # The pod's offline proof carries the cosigned checkpoint the operator verified.
    cm = crds.kubectl_json(
        "get", "configmap", md["status"]["provenance"]["configMap"], "-n", namespace
    )
    data = cm["data"]
    assert isinstance(data, dict)
    assert f"\u2014 {signer.name} " in data["checkpoint.note"]
