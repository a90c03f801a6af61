"""Drift of an owned Deployment on a real API server (any edit of the pod template, not
only a few fields that look security-relevant, changes what runs): what
decides what runs is restored and audited, whatever field was touched, replicas included,
and even when the label the Deployment watch selects on was removed first."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from harness.cluster import Cluster

from .conftest import (
    Ledger,
    Models,
    Operator,
    Publisher,
    RolloutFactory,
    deployment,
    get_md,
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


def test_a_deployment_that_lost_its_owner_reference_is_taken_back_and_audited(
    crds: Cluster, pod_image: str, namespace: str, ledger: Ledger, policy: str,
    rolled_out: RolloutFactory,
) -> None:  # fmt: skip
    served = rolled_out("o", policy, seed=53)
    made = deployment(crds, namespace, "o")
    assert made is not None
    # The attack: orphan the Deployment (no controller reference, no managed-by label), then
    # swap its image. Kubernetes' garbage collector no longer ties it to the ModelDeployment.
    patch(
        crds, namespace, "o",
        {"metadata": {"ownerReferences": None,
                      "labels": {"app.kubernetes.io/managed-by": None}}},
        "merge",
    )  # fmt: skip
    crds.kubectl("set", "image", "deployment/o", "-n", namespace, "model-server=evil:1")

    def taken_back() -> dict[str, Any] | None:
        dep = deployment(crds, namespace, "o") or {}
        refs = dep.get("metadata", {}).get("ownerReferences") or []
        ours = any(r.get("uid") == served.uid and r.get("controller") for r in refs)
        return dep if ours and server(dep)["image"] == pod_image else None

    back = wait_for("the orphaned Deployment taken back, image restored", taken_back)
    assert back["metadata"]["uid"] == made["metadata"]["uid"]  # the same object, restored
    reasons = wait_for(
        "a drift audit entry naming the removed controller reference",
        lambda: [r for r in drift_audits(ledger, served.uid) if "ownerReferences" in r],
    )
    assert any("controller reference to ModelDeployment o was removed" in r for r in reasons)
    wait_condition(crds, namespace, "o", "Ready", "True")


def test_another_deployment_at_its_name_is_never_served_from(
    crds: Cluster, namespace: str, ledger: Ledger, policy: str, rolled_out: RolloutFactory,
    operator: Operator,
) -> None:  # fmt: skip
    served = rolled_out("h", policy, seed=54)
    made = deployment(crds, namespace, "h")
    assert made is not None
    # While the operator is away, its Deployment is replaced by a hand-made one at the same
    # name, with the model-server labels and the ready replicas a real one would report.
    operator.stop()
    crds.kubectl("delete", "deployment", "h", "-n", namespace, "--wait=true")
    forged = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "h", "namespace": namespace, "labels": made["metadata"]["labels"]},
        "spec": {
            "replicas": 1,
            "selector": made["spec"]["selector"],
            "template": {
                "metadata": {"labels": made["spec"]["template"]["metadata"]["labels"]},
                "spec": {"containers": [{"name": "model-server", "image": "evil:1"}]},
            },
        },
    }  # fmt: skip
    crds.kubectl("apply", "-f", "-", input=json.dumps(forged))
    forged_uid = (deployment(crds, namespace, "h") or {})["metadata"]["uid"]
    operator.start()

    md = wait_condition(crds, namespace, "h", "Ready", "False", "NotControlled")
    ready = next(c for c in md["status"]["conditions"] if c["type"] == "Ready")
    assert "not controlled by this ModelDeployment" in ready["message"]
    not_corrected = wait_for(
        "the not-corrected drift audit entry",
        lambda: [a for a in ledger.audits(served.uid) if a.decision == "not-corrected"],
    )
    assert not_corrected[0].reasons[0].startswith("NotControlled: ")
    # Not taken over, not deleted: it is not the operator's object.
    still = deployment(crds, namespace, "h") or {}
    assert still["metadata"]["uid"] == forged_uid
    assert not still["metadata"].get("ownerReferences")
    # Reported once, not at every timer tick (the drift check runs every 2 s here).
    time.sleep(5)
    assert len([a for a in ledger.audits(served.uid) if a.decision == "not-corrected"]) == 1
    crds.kubectl("delete", "deployment", "h", "-n", namespace)


def test_who_receives_the_traffic_is_restored_on_the_service_and_audited(
    crds: Cluster, namespace: str, ledger: Ledger, policy: str, rolled_out: RolloutFactory
) -> None:
    served = rolled_out("svc", policy, seed=55)
    # Exposed outside the cluster and pointed at pods of someone else's choosing.
    crds.kubectl(
        "patch", "service", "svc", "-n", namespace, "--type", "merge", "-p",
        json.dumps({"spec": {"type": "NodePort", "externalIPs": ["203.0.113.9"],
                             "selector": {"pick": "mine"}}}),
    )  # fmt: skip

    def restored() -> dict[str, Any] | None:
        svc = crds.kubectl_json("get", "service", "svc", "-n", namespace)
        spec: dict[str, Any] = svc["spec"]  # type: ignore[assignment]
        ok = spec["type"] == "ClusterIP" and not spec.get("externalIPs")
        return spec if ok and "pick" not in spec["selector"] else None

    wait_for("the Service restored", restored)
    reasons = wait_for(
        "a drift audit entry for the Service",
        lambda: [r for r in drift_audits(ledger, served.uid) if r.startswith("Service ")],
    )
    assert any("spec.type differs" in r for r in reasons), reasons
    assert any("spec.externalIPs was added" in r for r in reasons), reasons
    md = wait_for(
        "serviceUID recorded",
        lambda: (m := get_md(crds, namespace, "svc"))["status"].get("serviceUID") and m,
    )
    svc = crds.kubectl_json("get", "service", "svc", "-n", namespace)
    assert md["status"]["serviceUID"] == svc["metadata"]["uid"]  # type: ignore[index]
