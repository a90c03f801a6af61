"""A minimal kopf operator for the harness smoke test: each Widget gets a Deployment."""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = 0
    settings.watching.server_timeout = 60
    kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


@kopf.on.create("smoke.modeltrust.dev", "v1", "widgets")
def create_deployment(
    spec: kopf.Spec, name: str, namespace: str | None, body: kopf.Body, **_: Any
) -> None:
    labels = {"app.kubernetes.io/name": "widget", "smoke.modeltrust.dev/widget": name}
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"{name}-app", "labels": labels},
        "spec": {
            "replicas": int(spec.get("replicas", 1)),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }
    kopf.adopt(deployment, owner=body)
    apps = kubernetes.client.AppsV1Api()
    apps.create_namespaced_deployment(namespace, deployment)  # type: ignore[arg-type]
