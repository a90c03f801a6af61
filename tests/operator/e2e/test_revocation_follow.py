"""Revocations reach serving models through the ledger follower, not the timer.

The operator here runs its re-verification timer every 300 s (first tick after 300 s) and
the policy's reverifyInterval is 24 h, so the timer cannot be what acts: a revocation
appended to the ledger must scale the affected Deployment to 0 and flag its
ModelDeployment within seconds, audited as the timer would, while a model the revocation
does not concern keeps serving. A ledger stopped and started again under the follower
does not bring the operator down, is logged once, and is followed again afterwards.
"""

from __future__ import annotations

import time

import pytest

from harness.cluster import Cluster

from .conftest import (
    Ledger,
    Operator,
    OperatorFactory,
    PolicyFactory,
    Publisher,
    RolloutFactory,
    condition,
    deployment,
    get_md,
    wait_condition,
    wait_for,
)

# Seconds from the append returning to the Deployment at 0 replicas. The follower polls
# every second; the rest is the decision, the audit append and three API writes. Generous
# for a loaded shared machine: the timer would take 300 s.
WITHIN = 15.0
FOLLOW_SETTINGS = {
    "MODELTRUST_TIMER_INTERVAL": "300",
    "MODELTRUST_LEDGER_FOLLOW_INTERVAL": "1",
    "MODELTRUST_LEDGER_FOLLOW_MAX_BACKOFF": "2",  # a restarted ledger is followed at once
}


@pytest.fixture
def operator(start_operator: OperatorFactory) -> Operator:
    return start_operator(**FOLLOW_SETTINGS)


def replicas(cluster: Cluster, ns: str, name: str) -> int | None:
    found = deployment(cluster, ns, name)
    return None if found is None else int(found["spec"]["replicas"])


def revoke_and_time(
    cluster: Cluster, ns: str, ledger: Ledger, publisher: Publisher, name: str, digest: str
) -> float:
    """Append a digest revocation; seconds from the append returning until the Deployment
    asks for 0 replicas (polled every 0.1 s)."""
    ledger.revoke_digest(publisher, digest, "weights exfiltrated")
    appended = time.monotonic()
    wait_for(
        f"the Deployment {name} at 0 replicas",
        lambda: replicas(cluster, ns, name) == 0,
        timeout=WITHIN,
        every=0.1,
    )
    return time.monotonic() - appended


def assert_serving(cluster: Cluster, ns: str, name: str) -> None:
    md = get_md(cluster, ns, name)
    assert replicas(cluster, ns, name) == 1
    assert condition(md, "Revoked")["status"] == "False"
    assert condition(md, "Ready")["status"] == "True"


def test_a_revocation_scales_the_affected_model_to_zero_in_seconds(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
    operator: Operator,
) -> None:
    policy = make_policy(reverifyInterval="24h")
    victim = rolled_out("victim", policy, seed=71)
    rolled_out("bystander", policy, seed=72)

    took = revoke_and_time(crds, namespace, ledger, publishers["trusted"], "victim", victim.digest)
    md = wait_condition(crds, namespace, "victim", "Revoked", "True", "Revoked", timeout=10)
    print(f"revocation append -> Deployment at 0 replicas: {took:.2f} s")
    assert "weights exfiltrated" in condition(md, "Revoked")["message"]
    assert md["status"]["revocationAction"] == "ScaleToZero"
    # The same audit as the timer's: rollout, then revoke (decision scaletozero).
    entries = ledger.audits(victim.uid)
    assert [e.action for e in entries] == ["rollout", "revoke"]
    assert entries[-1].decision == "scaletozero"
    assert_serving(crds, namespace, "bystander")
    assert "victim re-verified after a revocation" in operator.log()


def test_the_follower_survives_a_ledger_restart(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    make_policy: PolicyFactory,
    rolled_out: RolloutFactory,
    operator: Operator,
) -> None:
    policy = make_policy(reverifyInterval="24h")
    first = rolled_out("first", policy, seed=81)
    rolled_out("second", policy, seed=82)

    ledger.stop()
    wait_for("the follower to notice", lambda: "no verified checkpoint" in operator.log())
    time.sleep(4)  # several failed polls with back-off
    assert operator.pid  # still running (raises with the log tail otherwise)
    assert operator.log().count("no verified checkpoint") == 1  # logged once
    assert_serving(crds, namespace, "first")  # an outage takes nothing down

    ledger.start()
    took = revoke_and_time(crds, namespace, ledger, publishers["trusted"], "first", first.digest)
    wait_condition(crds, namespace, "first", "Revoked", "True", "Revoked", timeout=10)
    print(f"after the ledger restart, revocation append -> 0 replicas: {took:.2f} s")
    assert "following again" in operator.log()
    assert_serving(crds, namespace, "second")
