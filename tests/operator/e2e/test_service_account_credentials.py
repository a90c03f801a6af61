"""Credentials from the pods' ServiceAccount, as KServe takes them: the ModelDeployment names
no Secret, its spec.runtime.serviceAccountName lists some, and the operator (allowed to read
them: MODELTRUST_READ_SOURCE_CREDENTIALS, the chart's operator.readSourceCredentials) uses
the one whose modeltrust.dev/hosts covers the model's host, and refuses two."""

from __future__ import annotations

from typing import Any

from harness.cluster import Cluster
from harness.modeltrust_objects import source_secret
from harness.private_http import PrivateFileServer

from .conftest import (
    PRIVATE_TOKEN,
    Ledger,
    Models,
    OperatorFactory,
    Publisher,
    apply,
    assert_never_shown,
    condition,
    deployment,
    model_deployment,
    wait_condition,
    wait_for,
)

TOKEN = PRIVATE_TOKEN  # looked for everywhere it must not be


def service_account(namespace: str, name: str, *secrets: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace},
        "secrets": [{"name": s} for s in secrets],
    }


def running_as(body: dict[str, Any], account: str) -> dict[str, Any]:
    body["spec"].setdefault("runtime", {})["serviceAccountName"] = account
    return body


def test_the_service_accounts_secret_for_the_host_is_used_and_two_are_refused(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    policy: str,
    publishers: dict[str, Publisher],
    models: Models,
    private_server: PrivateFileServer,
    start_operator: OperatorFactory,
) -> None:
    operator = start_operator(MODELTRUST_READ_SOURCE_CREDENTIALS="true")
    path, digest = models.make("via-sa", seed=311)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    hosts = f"{private_server.host}:{private_server.port}"
    data = {"ca.crt": private_server.ca_pem, "token": TOKEN.encode()}
    apply(crds, source_secret(namespace, "model-store", hosts, data))
    apply(crds, source_secret(namespace, "model-store-2", hosts, data))
    apply(crds, source_secret(namespace, "unrelated", None, {"token": b"not-for-models"}))
    apply(crds, source_secret(namespace, "elsewhere", "models.example.com", data))
    # One Secret covers the host (the others have no annotation or another host).
    apply(crds, service_account(namespace, "ml-runner", "unrelated", "elsewhere", "model-store"))
    # Two cover it: the operator must not guess.
    apply(crds, service_account(namespace, "two-keys", "model-store", "model-store-2"))
    url = private_server.url(path.name)
    apply(crds, running_as(model_deployment(namespace, "via-sa", policy, url, digest), "ml-runner"))
    apply(
        crds, running_as(model_deployment(namespace, "ambiguous", policy, url, digest), "two-keys")
    )

    md = wait_condition(crds, namespace, "via-sa", "Ready", "True")
    assert md["status"]["credentialSecret"] == "model-store"
    assert md["status"]["credentialHosts"] == [hosts]
    assert any(h.get("Authorization") == f"Bearer {TOKEN}" for _, h in private_server.requests)
    dep = deployment(crds, namespace, "via-sa")
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ml-runner"
    assert pod["automountServiceAccountToken"] is False
    (fetch,) = pod["initContainers"]
    (server,) = pod["containers"]
    volume = next(v for v in pod["volumes"] if v["name"] == "source-credentials")
    assert volume["secret"]["secretName"] == "model-store"
    assert any(m["name"] == "source-credentials" for m in fetch["volumeMounts"])
    assert all(m["name"] != "source-credentials" for m in server["volumeMounts"])
    assert_never_shown(crds, md, ledger, operator, TOKEN)

    refused = wait_for("ambiguous refused", lambda: _refused(crds, namespace, "ambiguous"))
    message = condition(refused, "Verified")["message"]
    assert "lists 2 Secrets" in message, message
    assert "model-store, model-store-2" in message, message
    assert deployment(crds, namespace, "ambiguous") is None


def _refused(crds: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    md: dict[str, Any] = crds.kubectl_json("get", "modeldeployment", "-n", namespace, name)
    status: Any = md.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "Verified" and c.get("status") == "False":
            return dict(md)
    return None
