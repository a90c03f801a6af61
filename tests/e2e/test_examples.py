"""examples/ against the real API server: the CRDs' schemas and CEL rules accept the
commented ModelTrustPolicy and the ModelDeployment (server-side dry run: nothing is kept),
and refuse the policy once a rule is broken, so the dry run really validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.cluster import Cluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRD_NAMES = ("modeldeployments.modeltrust.dev", "modeltrustpolicies.modeltrust.dev")


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    # The quick start's step (docs/install.md): the CRDs from crds/, with kubectl.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for name in CRD_NAMES:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def test_the_api_server_accepts_the_examples(cluster: Cluster, crds: None) -> None:
    policy = cluster.kubectl(
        "apply", "--dry-run=server", "-f", str(EXAMPLES / "modeltrustpolicy.yaml"), check=False
    )
    assert policy.returncode == 0, policy.stderr
    # The ModelDeployment's namespace must exist, as for any namespaced object.
    body = yaml.safe_load((EXAMPLES / "modeldeployment.yaml").read_text())
    namespace = body["metadata"]["namespace"]
    created = cluster.kubectl("create", "namespace", namespace, check=False)
    try:
        deployment = cluster.kubectl(
            "apply", "--dry-run=server", "-f", str(EXAMPLES / "modeldeployment.yaml"), check=False
        )
        assert deployment.returncode == 0, deployment.stderr
    finally:
        if created.returncode == 0:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_dry_run_enforces_the_policys_rules(cluster: Cluster, crds: None) -> None:
    body = yaml.safe_load((EXAMPLES / "modeltrustpolicy.yaml").read_text())
    body["spec"]["threshold"] = len(body["spec"]["publishers"]) + 1
    body["spec"]["ledger"]["witnessQuorum"] = 5
    refused = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False
    )
    assert refused.returncode != 0
    assert "threshold must not exceed the number of publishers" in refused.stderr
    assert "witnessQuorum must not exceed the number of ledger.witnesses" in refused.stderr
