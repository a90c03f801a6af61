"""The harness is real: CRD, custom object, watch, a kopf operator, a Deployment on a
kwok node, and garbage collection through owner references."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.processes import stop_process
from harness.waiting import wait_for

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.smoke.modeltrust.dev"},
    "spec": {
        "group": "smoke.modeltrust.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"replicas": {"type": "integer", "minimum": 0}},
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def widget_crd(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/widgets.smoke.modeltrust.dev", "--timeout=60s"
    )


@pytest.fixture
def smoke_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[None]:
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "kopf", "run", "--standalone", "--namespace", namespace,
            str(Path(__file__).with_name("smoke_operator.py")),
        ],
        env=cluster.env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield
    finally:
        stop_process(proc, timeout=20)
        log.close()


def test_server_is_real(cluster: Cluster) -> None:
    print(f"\nkube-apiserver {cluster.server_version}")
    version = cluster.kubectl_json("version")["serverVersion"]
    assert isinstance(version, dict)
    assert str(version["gitVersion"]).startswith("v1.")
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    assert isinstance(nodes, list)
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]
    assert ready, f"no Ready node among {[n['metadata']['name'] for n in nodes]}"


@pytest.mark.usefixtures("widget_crd", "smoke_operator")
def test_operator_deployment_becomes_available_and_is_collected(
    cluster: Cluster, namespace: str
) -> None:
    # Watch the custom resource while creating it: the API server streams the ADDED event.
    watch = subprocess.Popen(
        ["kubectl", "get", "widgets", "-n", namespace, "--watch", "-o", "name"],
        env=cluster.env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    widget = {
        "apiVersion": "smoke.modeltrust.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": namespace},
        "spec": {"replicas": 2},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(widget))
    assert watch.stdout is not None
    assert watch.stdout.readline().strip() == "widget.smoke.modeltrust.dev/w1"
    watch.terminate()
    watch.wait()

    def available() -> bool:
        got = cluster.kubectl(
            "get", "deployment", "w1-app", "-n", namespace, "-o", "json", check=False
        )
        if got.returncode != 0:
            return False
        status = json.loads(got.stdout).get("status", {})
        return bool(status.get("availableReplicas") == 2 == status.get("replicas"))

    wait_for("the operator's Deployment to have 2 available replicas", available)
    pods = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
    assert isinstance(pods, list)
    assert all(p["spec"].get("nodeName") for p in pods), "every pod is bound to a node"
    assert all(p["status"]["phase"] == "Running" for p in pods)

    cluster.kubectl("delete", "widget", "w1", "-n", namespace)

    def collected() -> bool:
        got = cluster.kubectl("get", "deployment", "w1-app", "-n", namespace, check=False)
        return got.returncode != 0 and "NotFound" in got.stderr

    wait_for("garbage collection of the owned Deployment", collected)
