"""Drift of an owned Deployment on a real API server (any edit of the pod template, not
only a few fields that look security-relevant, changes what runs): what
decides what runs is restored and audited, whatever field was touched, replicas included,
and even when the label the Deployment watch selects on was removed first."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.cluster import Cluster

from .conftest import (
    Ledger,
    Models,
    Publisher,
    RolloutFactory,
    deployment,
    wait_condition,
    wait_for,
    wait_replicas,
)

pytestmark = pytest.mark.usefixtures("operator")


def patch(cluster: Cluster, ns: str, name: str, body: dict[str, Any], kind: str) -> None:
    cluster.kubectl("patch", "deployment", name, "-n", ns, "--type", kind, "-p", json.dumps(body))


def server(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = next(c for c in containers if c["name"] == "model-server")
    return found


def drift_audits(ledger: Ledger, uid: str) -> list[str]:
    return [r for a in ledger.audits(uid) if a.action == "drift" for r in a.reasons]


EDITS: list[tuple[str, dict[str, Any], str]] = [
    (
        "livenessProbe.exec",
        {"spec": {"template": {"spec": {"containers": [
            {"name": "model-server",
             "livenessProbe": {"exec": {"command": ["sh", "-c", "true"]}, "httpGet": None}}]}}}},
        "livenessProbe.exec was added",
    ),
    ("hostNetwork", {"spec": {"template": {"spec": {"hostNetwork": True}}}},
     "spec.hostNetwork was added"),
    (
        "envFrom",
        {"spec": {"template": {"spec": {"containers": [
            {"name": "model-server", "envFrom": [{"configMapRef": {"name": "attacker"}}]}]}}}},
        "envFrom was added",
    ),
]  # fmt: skip


def test_changes_anywhere_in_the_pod_template_are_reverted_and_audited(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    uid = rolled_out("d", policy, seed=51).uid
    verified = deployment(crds, namespace, "d")
    assert verified is not None
    assert drift_audits(ledger, uid) == []  # the API server's defaults are not drift
    for what, body, words in EDITS:
        patch(crds, namespace, "d", body, "strategic")

        def restored() -> bool:
            dep = deployment(crds, namespace, "d") or {}
            pod = dep.get("spec", {}).get("template", {}).get("spec", {})
            return bool(server(dep) == server(verified) and not pod.get("hostNetwork"))

        wait_for(f"{what} to be reverted", restored)
        wait_for(
            f"a drift audit entry naming {what}",
            lambda: [r for r in drift_audits(ledger, uid) if words in r],  # noqa: B023
        )


def test_a_deployment_without_its_label_is_still_checked(
    crds: Cluster,
    pod_image: str,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    uid = rolled_out("l", policy, seed=52).uid
    # First the label the operator's Deployment watch selects on, then the image: no watch
    # event reaches the operator for the second change; its timer finds it.
    crds.kubectl("label", "deployment", "l", "-n", namespace, "app.kubernetes.io/managed-by-")
    crds.kubectl("set", "image", "deployment/l", "-n", namespace, "model-server=evil:1")

    def restored() -> bool:
        dep = deployment(crds, namespace, "l") or {}
        labels = dep.get("metadata", {}).get("labels", {})
        return bool(
            server(dep)["image"] == pod_image
            and labels.get("app.kubernetes.io/managed-by") == "modeltrust-operator"
        )

    wait_for("the label and the image to be restored", restored)
    reasons = wait_for(
        "a drift audit entry naming the image",
        lambda: [r for r in drift_audits(ledger, uid) if "image" in r],
    )
    assert any("containers[model-server].image differs" in r for r in reasons)


def test_replicas_of_a_revoked_model_stay_at_zero(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    rolled_out: RolloutFactory,
) -> None:
    r = rolled_out("r", policy, seed=53)
    uid, digest = r.uid, r.digest
    ledger.revoke_digest(publishers["trusted"], digest, "poisoned")
    wait_condition(crds, namespace, "r", "Revoked", "True", timeout=60)
    wait_replicas(crds, namespace, "r", 0)
    crds.kubectl("scale", "deployment", "r", "-n", namespace, "--replicas=3")
    wait_for(
        "a drift audit entry naming replicas",
        lambda: [r for r in drift_audits(ledger, uid) if "spec.replicas differs" in r],
    )
    assert (deployment(crds, namespace, "r") or {})["spec"]["replicas"] == 0
