"""Models behind credentials: a private HTTPS server with its own CA and a bearer token,
named by spec.model.credentials. The operator reads the Secret to fetch for its check, the
pods' fetch step gets it mounted (on a real node it really downloads with it), and the
token never shows in status, Events, logs or audit entries."""

from __future__ import annotations

import json
from typing import Any

from harness.cluster import Cluster
from harness.modeltrust_objects import source_secret
from harness.private_http import PrivateFileServer

from .conftest import (
    PRIVATE_TOKEN,
    Ledger,
    Models,
    Operator,
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


def secret(
    namespace: str, name: str, server: PrivateFileServer, *, hosts: str | None, token: bool = True
) -> dict[str, Any]:
    data = {"ca.crt": server.ca_pem, **({"token": TOKEN.encode()} if token else {})}
    return source_secret(namespace, name, hosts, data)


def with_credentials(body: dict[str, Any], secret_name: str) -> dict[str, Any]:
    body["spec"]["model"]["credentials"] = {"secretName": secret_name}
    return body


def test_a_model_behind_a_token_rolls_out_and_the_token_stays_secret(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    policy: str,
    publishers: dict[str, Publisher],
    models: Models,
    private_server: PrivateFileServer,
    operator: Operator,
) -> None:
    path, digest = models.make("private", seed=301)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    hosts = f"{private_server.host}:{private_server.port}"
    apply(crds, secret(namespace, "model-store", private_server, hosts=hosts))
    body = model_deployment(namespace, "private", policy, private_server.url(path.name), digest)
    apply(crds, with_credentials(body, "model-store"))

    md = wait_condition(crds, namespace, "private", "Ready", "True")
    assert condition(md, "Verified")["status"] == "True"
    assert md["status"]["credentialHosts"] == [hosts]
    assert any(h.get("Authorization") == f"Bearer {TOKEN}" for _, h in private_server.requests)
    dep = deployment(crds, namespace, "private")
    assert dep is not None
    pod = dep["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert any(m["name"] == "source-credentials" for m in fetch["volumeMounts"])
    assert all(m["name"] != "source-credentials" for m in server["volumeMounts"])
    if crds.real_pods:
        # Ready on a real node: the pod's fetch step downloaded with the mounted token and
        # CA (a second authorized GET besides the operator's), verified and served.
        authorized = [h for _, h in private_server.requests if "Authorization" in h]
        assert len(authorized) >= 2, private_server.requests

    assert_never_shown(crds, md, ledger, operator, TOKEN)


def test_credentials_that_cannot_be_used_are_refused_with_the_reason(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    policy: str,
    publishers: dict[str, Publisher],
    models: Models,
    private_server: PrivateFileServer,
    operator: Operator,
) -> None:
    path, digest = models.make("refused", seed=302)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    url = private_server.url(path.name)
    cases = {
        # Only the server's CA: the server wants a token too.
        "ca-only": ("ca-only", "needs credentials"),
        # A Secret that does not exist.
        "missing": ("absent", "does not exist"),
        # A Secret that does not say where its credentials may go.
        "unbound": ("unbound", "no modeltrust.dev/hosts annotation"),
        # A Secret for another host: never sent to this one.
        "elsewhere": ("elsewhere", "may not be sent to"),
    }
    hosts = f"{private_server.host}:{private_server.port}"
    apply(crds, secret(namespace, "ca-only", private_server, hosts=hosts, token=False))
    apply(crds, secret(namespace, "unbound", private_server, hosts=None))
    apply(crds, secret(namespace, "elsewhere", private_server, hosts="models.example.com"))
    for name, (secret_name, _) in cases.items():
        apply(
            crds,
            with_credentials(model_deployment(namespace, name, policy, url, digest), secret_name),
        )
    for name, (_, reason) in cases.items():
        md = wait_for(
            f"{name} refused",
            lambda name=name: _refused(crds, namespace, name),  # type: ignore[misc]
        )
        message = condition(md, "Verified")["message"]
        assert reason in message, message
        assert TOKEN not in json.dumps(md["status"])
        assert deployment(crds, namespace, name) is None
    # Only the CA-only one reached the server, and without a token.
    assert all("Authorization" not in h for _, h in private_server.requests)


def _refused(crds: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    md = crds.kubectl_json("get", "modeldeployment", "-n", namespace, name)
    status: Any = md.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("type") == "Verified" and c.get("status") == "False":
            return md
    return None
