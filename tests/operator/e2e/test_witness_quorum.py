"""Witnessed ledgers on a real API server: `modeltrust ledger serve --witness` with two real
`modeltrust ledger witness` processes, and policies that require their cosignatures.

A policy asking 2 of 2 rolls a model out while both witnesses cosign; with one witness
stopped, a new rollout waits (Verified=False, WitnessQuorumNotMet, the message naming the
witness that did not cosign, no Deployment) and proceeds once the witness is back and has
caught up; with maxCosignatureAge, cosignatures that aged past it refuse the rollout, the
message naming each witness and the age of its cosignature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.witness import WitnessProcess, WitnessSetup
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.note import ALG_COSIGNATURE_V1, NoteSigner
from modeltrust.operator.trust_store import config_map_name

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    Operator,
    PolicyFactory,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    deployment,
    model_deployment,
    wait_condition,
    wait_for,
)
from .test_policy_status import wait_policy

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def witness_setups(tmp_path: Path) -> dict[str, WitnessSetup]:
    return {n: WitnessSetup(f"witness-{n}.e2e.modeltrust.dev", tmp_path / f"w-{n}") for n in "ab"}


@pytest.fixture
def witnesses(ledger: Ledger, witness_setups: dict[str, WitnessSetup]) -> Iterator[
    dict[str, WitnessProcess]
]:  # fmt: skip
    """The two witness processes, copying the ledger; stop()/start() them in a test."""
    procs = {
        n: WitnessProcess(s, ledger.url, ledger.verifier_key) for n, s in witness_setups.items()
    }
    try:
        for p in procs.values():
            p.start()
        yield procs
    finally:
        for p in procs.values():
            p.stop()


@pytest.fixture
def ledger(
    cluster: Cluster,
    tmp_path: Path,
    publishers: dict[str, Publisher],
    witness_setups: dict[str, WitnessSetup],
) -> Iterator[Ledger]:
    """This module's ledger sends its checkpoints to the two witnesses (a refresh of 1 s,
    so cosignatures stay seconds old while the witnesses run)."""
    args: list[str] = ["--witness-refresh", "1", "--witness-timeout", "2"]
    for s in witness_setups.values():
        args += ["--witness", s.url, s.verifier_key]
    led = Ledger(
        tmp_path / "ledger",
        list(publishers.values()),
        host=cluster.host_address,
        extra_args=tuple(args),
    )
    led.start()
    try:
        yield led
    finally:
        led.stop()


def witnessed_ledger(ledger: Ledger, setups: dict[str, WitnessSetup], **extra: object) -> dict[
    str, object
]:  # fmt: skip
    return {
        "url": ledger.url,
        "verifierKey": ledger.verifier_key,
        "witnesses": [s.verifier_key for s in setups.values()],
        "witnessQuorum": 2,
        **extra,
    }


def cosigned_by_both(ledger: Ledger, setups: dict[str, WitnessSetup]) -> bool:
    with ledger.client() as c:
        note = c.checkpoint().note
    return all(f"\u2014 {s.name} " in note for s in setups.values())


def test_a_checkpoint_without_enough_cosignatures_blocks_rollout(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
) -> None:
    # A witness the ledger does not know: nothing it serves is cosigned by it.
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
    assert "witness.e2e.modeltrust.dev did not cosign it" in message
    assert deployment(crds, namespace, "w") is None
    assert condition(md, "Ready")["status"] == "False"
    mtp = wait_policy(crds, policy, "LedgerReachable", "False", "WitnessQuorumNotMet")
    assert condition(mtp, "Valid")["status"] == "True"


def test_a_ledger_cosigned_by_both_witnesses_rolls_out(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    witness_setups: dict[str, WitnessSetup],
    witnesses: dict[str, WitnessProcess],
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    policy = make_policy(ledger=witnessed_ledger(ledger, witness_setups, maxCosignatureAge="1m"))
    md = rolled_out("ok", policy, seed=52).md
    assert condition(md, "Verified")["reason"] == "Verified"
    assert [a.action for a in ledger.audits(md["metadata"]["uid"])] == ["rollout"]
    wait_policy(crds, policy, "LedgerReachable", "True", "CheckpointVerified")
    # The pod's offline proof carries the checkpoint the operator verified: both
    # witnesses' cosignatures on it.
    cm = crds.kubectl_json(
        "get", "configmap", md["status"]["provenance"]["configMap"], "-n", namespace
    )
    data = cm["data"]
    assert isinstance(data, dict)
    for s in witness_setups.values():
        assert f"\u2014 {s.name} " in data["checkpoint.note"]


def test_with_a_witness_down_a_rollout_waits_says_why_and_proceeds_when_it_is_back(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    witness_setups: dict[str, WitnessSetup],
    witnesses: dict[str, WitnessProcess],
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
) -> None:
    wait_for("both witnesses to cosign", lambda: cosigned_by_both(ledger, witness_setups), 30)
    policy = make_policy(ledger=witnessed_ledger(ledger, witness_setups))
    witnesses["b"].stop()
    path, digest = models.make("m", seed=53)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")  # a checkpoint b never saw
    apply(crds, model_deployment(namespace, "w", policy, model_uri(path), digest))

    md = wait_condition(crds, namespace, "w", "Verified", "False", "WitnessQuorumNotMet")
    message = condition(md, "Verified")["message"]
    assert "not cosigned by 2 of the policy's 2 witness(es)" in message
    assert "witness-a.e2e.modeltrust.dev cosigned it" in message
    assert "witness-b.e2e.modeltrust.dev did not cosign it" in message
    assert condition(md, "Ready")["status"] == "False"
    assert deployment(crds, namespace, "w") is None  # fail closed: nothing runs meanwhile

    witnesses["b"].start()  # it copies the blocks it missed, verifies them and cosigns
    wait_for("b to cosign again", lambda: cosigned_by_both(ledger, witness_setups), 30)
    md = wait_condition(crds, namespace, "w", "Ready", "True")
    assert condition(md, "Verified")["reason"] == "Verified"
    assert deployment(crds, namespace, "w") is not None


def test_cosignatures_older_than_max_cosignature_age_refuse_a_rollout(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    witness_setups: dict[str, WitnessSetup],
    witnesses: dict[str, WitnessProcess],
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
) -> None:
    policy = make_policy(ledger=witnessed_ledger(ledger, witness_setups, maxCosignatureAge="3s"))
    # The operator's first read of the ledger records its trust on first use (an audit
    # entry, appended by its outbox): let that happen, and the witnesses cosign what
    # follows, before stopping b.
    record = config_map_name(ledger.verifier_key)
    wait_for("the trust-on-first-use audit entry", lambda: ledger.audits(record), 60)
    path, digest = models.make("m", seed=54)
    index = ledger.register(publishers["trusted"], path, "mnist", "1.0.0")

    def latest_cosigned_by_both() -> bool:
        with ledger.client() as c:
            size = c.checkpoint().size
        return size > index and cosigned_by_both(ledger, witness_setups)

    wait_for("both witnesses to cosign the registration", latest_cosigned_by_both, 30)
    # b stops: the ledger keeps serving its last cosignature, which only ages.
    witnesses["b"].stop()
    time.sleep(4)
    apply(crds, model_deployment(namespace, "w", policy, model_uri(path), digest))

    md = wait_condition(crds, namespace, "w", "Verified", "False", "WitnessQuorumNotMet")
    message = condition(md, "Verified")["message"]
    assert "within maxCosignatureAge 3s" in message
    assert "witness-b.e2e.modeltrust.dev cosigned it" in message
    assert "(too old)" in message
    assert deployment(crds, namespace, "w") is None


def served_cosigned_by_both(url: str, ledger: Ledger, setups: dict[str, WitnessSetup]) -> bool:
    """Whether the server at `url` (a witness) serves the ledger's current tree with both
    witnesses' cosignatures, as a reader of that copy needs for a quorum of 2."""
    with ledger.client() as c:
        size = c.checkpoint().size
    with LedgerClient(url, verifier_key=ledger.verifier_key) as w:
        served = w.checkpoint()
    return served.size == size and all(f"\u2014 {s.name} " in served.note for s in setups.values())


def test_with_the_ledger_down_a_rollout_is_verified_from_a_mirror_and_waits_for_its_audit(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    witness_setups: dict[str, WitnessSetup],
    witnesses: dict[str, WitnessProcess],
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
) -> None:
    """spec.ledger.mirrors: the witnesses serve the read API from their verified copies, so
    the checks (2 of 2 cosignatures, proofs) are made while the ledger is down; the rollout
    itself still waits for its audit entry, which only the ledger takes."""
    mirror = witness_setups["a"].url
    policy = make_policy(ledger=witnessed_ledger(ledger, witness_setups, mirrors=[mirror]))
    wait_policy(crds, policy, "LedgerReachable", "True", "CheckpointVerified")
    path, digest = models.make("m", seed=57)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    wait_for(
        "witness a to serve the registration's tree cosigned by both",
        lambda: served_cosigned_by_both(mirror, ledger, witness_setups),
        30,
    )

    ledger.stop()
    apply(crds, model_deployment(namespace, "m", policy, model_uri(path), digest))
    md = wait_condition(crds, namespace, "m", "Verified", "False", "AuditPending")
    assert (
        "verified, but the audit entry could not be recorded"
        in condition(md, "Verified")["message"]
    )
    assert deployment(crds, namespace, "m") is None

    ledger.start()
    md = wait_condition(crds, namespace, "m", "Ready", "True")
    assert [a.action for a in ledger.audits(md["metadata"]["uid"])] == ["rollout"]


def test_a_revocation_is_enforced_from_a_mirror_while_the_ledger_is_down(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    witness_setups: dict[str, WitnessSetup],
    witnesses: dict[str, WitnessProcess],
    operator: Operator,
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
) -> None:
    """The revocation reached the log, then the ledger went down before the operator read
    it (the operator is stopped meanwhile, so it cannot have): it reads the log from the
    mirror and scales the model to zero all the same."""
    mirror = witness_setups["a"].url
    policy = make_policy(ledger=witnessed_ledger(ledger, witness_setups, mirrors=[mirror]))
    served = rolled_out("r", policy, seed=58)
    operator.stop()
    ledger.revoke_digest(publishers["trusted"], served.digest, "poisoned")
    wait_for(
        "witness a to serve the revocation's tree cosigned by both",
        lambda: served_cosigned_by_both(mirror, ledger, witness_setups),
        30,
    )
    ledger.stop()
    operator.start()
    wait_condition(crds, namespace, "r", "Revoked", "True", timeout=90)
    mtp = wait_policy(crds, policy, "LedgerReachable", "False", "ReadFromMirror")
    assert f"read from mirror {mirror}" in condition(mtp, "LedgerReachable")["message"]
    wait_for(
        "the revoked model's replicas to go to zero",
        lambda: (deployment(crds, namespace, "r") or {}).get("spec", {}).get("replicas") == 0,
    )
    ledger.start()  # for the fixtures' clean-up: the operator's audits reach it


def test_a_mirror_that_is_no_url_is_refused_by_the_api_server(
    crds: Cluster, ledger: Ledger
) -> None:
    body = {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelTrustPolicy",
        "metadata": {"name": "bad-mirror"},
        "spec": {
            "ledger": {"url": ledger.url, "verifierKey": ledger.verifier_key,
                       "mirrors": ["witness-a:8080"]},
            "publishers": [],
        },
    }  # fmt: skip
    refused = crds.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False
    )
    assert refused.returncode != 0
    assert "each ledger mirror must be an https:// or http:// URL with a host" in refused.stderr
