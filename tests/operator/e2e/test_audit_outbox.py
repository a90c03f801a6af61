"""Every decision reaches the ledger exactly once, eventually: the audit outbox on a real API
server, with the ledger down across two refusals, a drift correction, a deletion and an
operator restart."""

from __future__ import annotations

import json
import urllib.request

import pytest

from harness.cluster import Cluster
from modeltrust.chain.entries import AuditEntry
from modeltrust.operator.audit_outbox import CONFIG_MAP, DATA_KEY

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    Operator,
    OperatorFactory,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    free_port,
    get_md,
    model_deployment,
    wait_condition,
    wait_for,
    wait_replicas,
)


@pytest.fixture
def metered(start_operator: OperatorFactory) -> tuple[Operator, int]:
    """The operator with its Prometheus endpoint on."""
    port = free_port()
    op = start_operator(MODELTRUST_METRICS_PORT=str(port), MODELTRUST_METRICS_ADDR="127.0.0.1")
    return op, port


def metric(port: int, name: str, ledger_url: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") and f'ledger="{ledger_url}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def outbox_keys(cluster: Cluster, ns: str) -> list[str]:
    got = cluster.kubectl("get", "configmap", CONFIG_MAP, "-n", ns, "-o", "json", check=False)
    if got.returncode != 0:
        return []
    data = (json.loads(got.stdout).get("data") or {}).get(DATA_KEY)
    items = json.loads(data)["items"] if data else []
    return [i["entry"]["idempotency_key"] for i in sorted(items, key=lambda i: i["seq"])]


def ledger_entries(ledger: Ledger, uids: list[str]) -> dict[str, list[tuple[int, AuditEntry]]]:
    """Every audit entry on the ledger about these objects, by idempotency key."""
    by_key: dict[str, list[tuple[int, AuditEntry]]] = {}
    with ledger.client() as c:
        for uid in uids:
            for ve in c.audit_trail(uid=uid):
                if isinstance(ve.entry, AuditEntry):
                    by_key.setdefault(ve.entry.idempotency_key, []).append((ve.index, ve.entry))
    return by_key


def test_decisions_during_an_outage_are_recorded_once_in_order(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    metered: tuple[Operator, int],
    rolled_out: RolloutFactory,
    model_uri: ModelUri,
) -> None:
    operator, port = metered
    served = rolled_out("served", policy, seed=51)
    doomed = rolled_out("doomed", policy, seed=52)
    p1, d1 = models.make("r1", seed=53)
    ledger.register(publishers["trusted"], p1, "mnist", "1.0.0")
    p2, d2 = models.make("r2", seed=54)
    ledger.register(publishers["trusted"], p2, "mnist", "1.0.0")

    ledger.stop()
    # Two refusals (no verified ledger answer), kept.
    apply(crds, model_deployment(namespace, "r1", policy, model_uri(p1), d1))
    wait_condition(crds, namespace, "r1", "Verified", "False", "LedgerUnavailable")
    wait_for("r1's refusal in the outbox", lambda: len(outbox_keys(crds, namespace)) == 1)
    apply(crds, model_deployment(namespace, "r2", policy, model_uri(p2), d2))
    wait_condition(crds, namespace, "r2", "Verified", "False", "LedgerUnavailable")
    wait_for("r2's refusal in the outbox", lambda: len(outbox_keys(crds, namespace)) == 2)
    # A drift correction, kept.
    crds.kubectl("scale", "deployment", "served", "-n", namespace, "--replicas=4")
    wait_for("the drift audit in the outbox", lambda: len(outbox_keys(crds, namespace)) == 3)
    wait_replicas(crds, namespace, "served", 1)

    # Visible while pending: the condition on the objects and the metrics.
    md = wait_condition(crds, namespace, "r1", "AuditPending", "True")
    assert "refuse" in condition(md, "AuditPending")["message"]
    wait_condition(crds, namespace, "served", "AuditPending", "True")
    wait_for(
        "the pending metric",
        lambda: metric(port, "modeltrust_operator_audit_outbox_pending", ledger.url) == 3,
    )
    wait_for(
        "the oldest age",
        lambda: (metric(port, "modeltrust_operator_audit_outbox_oldest_age_seconds", ledger.url)
                 or 0) >= 1,
    )  # fmt: skip

    # An operator restart during the outage: nothing lost, nothing kept twice (the refusals
    # are decided again on resume, under the same idempotency keys).
    operator.stop()
    operator.start()
    wait_for(
        "the operator to resume", lambda: operator.log().count("modeltrust operator started") == 2
    )
    # A deletion during the outage completes; its audit is kept.
    crds.kubectl("delete", "md", "doomed", "-n", namespace, "--timeout=60s")

    def four_kept() -> list[str] | None:
        keys = outbox_keys(crds, namespace)
        return keys if len(keys) == 4 else None

    kept = wait_for("the deletion in the outbox", four_kept)
    assert len(set(kept)) == 4
    assert [k.split("/")[2] for k in kept] == ["refuse", "refuse", "drift", "delete"]

    ledger.start()
    wait_for("the outbox to drain", lambda: outbox_keys(crds, namespace) == [], timeout=120)
    uids = [get_md(crds, namespace, n)["metadata"]["uid"] for n in ("r1", "r2", "served")] + [
        doomed.uid
    ]
    recorded = ledger_entries(ledger, uids)
    indices = []
    for key in kept:
        assert len(recorded.get(key, [])) == 1, (key, recorded.get(key))
        indices.append(recorded[key][0][0])
    assert indices == sorted(indices), "kept decisions must be appended in the order decided"
    assert [e.action for _, e in recorded[kept[0]]] == ["refuse"]
    wait_condition(crds, namespace, "served", "AuditPending", "False")
    wait_for(
        "the pending metric back to 0",
        lambda: metric(port, "modeltrust_operator_audit_outbox_pending", ledger.url) == 0,
    )
    # The refused models roll out now, after their refusal, each decision once.
    wait_condition(crds, namespace, "r1", "Ready", "True", timeout=240)
    with ledger.client() as c:
        r1 = [ve.entry.action for ve in c.audit_trail(uid=uids[0])]  # type: ignore[union-attr]
    assert r1 == ["refuse", "rollout"]
    del served
