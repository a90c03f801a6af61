"""The few Kubernetes API calls the operator makes, as async functions returning plain dicts.

The official client is synchronous; calls run in worker threads and return raw JSON
(no model classes), so builders, decisions and status code all speak plain dicts with
the API's own camelCase field names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from modeltrust.operator.types import GROUP, MODEL_DEPLOYMENT_PLURAL, POLICY_PLURAL, VERSION

JSON = dict[str, Any]


class Conflict(Exception):
    """409: the object changed since it was read (or already exists)."""


def load_config() -> None:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


def _raw(resp: Any) -> JSON:
    data = resp.data
    parsed: JSON = json.loads(data) if data else {}
    return parsed


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON | None:
    """Run one API call; None for 404, Conflict for 409, ApiException otherwise."""
    try:
        resp = await asyncio.to_thread(fn, *args, _preload_content=False, **kwargs)
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 409:
            raise Conflict(str(exc.reason)) from exc
        raise
    return _raw(resp)


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient | None = None) -> None:
        self.api_client = api_client or kubernetes.client.ApiClient()
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)

    # --- custom resources ------------------------------------------------------------------

    async def get_policy(self, name: str) -> JSON | None:
        return await _call(
            self.custom.get_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL, name
        )

    async def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        await _call(
            self.custom.patch_cluster_custom_object_status,
            GROUP, VERSION, POLICY_PLURAL, name, {"status": dict(status)},
        )  # fmt: skip

    async def list_policies(self) -> list[JSON]:
        listed = await _call(self.custom.list_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL)
        return list((listed or {}).get("items") or [])

    async def list_model_deployments(self, namespace: str | None) -> list[JSON]:
        """ModelDeployments in `namespace`, or in every namespace when None."""
        if namespace is None:
            listed = await _call(
                self.custom.list_cluster_custom_object, GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL
            )
        else:
            listed = await _call(
                self.custom.list_namespaced_custom_object,
                GROUP, VERSION, namespace, MODEL_DEPLOYMENT_PLURAL,
            )  # fmt: skip
        return list((listed or {}).get("items") or [])

    async def get_model_deployment(self, namespace: str, name: str) -> JSON | None:
        return await _call(
            self.custom.get_namespaced_custom_object,
            GROUP, VERSION, namespace, MODEL_DEPLOYMENT_PLURAL, name,
        )  # fmt: skip

    async def patch_model_deployment_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> JSON | None:
        """Merge-patch status (lists such as conditions are replaced whole, as intended)."""
        return await _call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, MODEL_DEPLOYMENT_PLURAL, name, {"status": dict(status)},
        )  # fmt: skip

    # --- owned workloads -------------------------------------------------------------------

    async def get_deployment(self, namespace: str, name: str) -> JSON | None:
        return await _call(self.apps.read_namespaced_deployment, name, namespace)

    async def create_deployment(self, namespace: str, body: JSON) -> JSON:
        created = await _call(self.apps.create_namespaced_deployment, namespace, body)
        assert created is not None
        return created

    async def replace_deployment(self, namespace: str, name: str, body: JSON) -> JSON | None:
        return await _call(self.apps.replace_namespaced_deployment, name, namespace, body)

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> JSON | None:
        return await _call(
            self.apps.patch_namespaced_deployment, name, namespace, {"spec": {"replicas": replicas}}
        )

    async def get_service(self, namespace: str, name: str) -> JSON | None:
        return await _call(self.core.read_namespaced_service, name, namespace)

    async def create_service(self, namespace: str, body: JSON) -> JSON:
        created = await _call(self.core.create_namespaced_service, namespace, body)
        assert created is not None
        return created

    async def patch_service(self, namespace: str, name: str, body: JSON) -> JSON | None:
        return await _call(self.core.patch_namespaced_service, name, namespace, body)

    # --- config maps (trusted checkpoint) --------------------------------------------------

    async def get_config_map(self, namespace: str, name: str) -> JSON | None:
        return await _call(self.core.read_namespaced_config_map, name, namespace)

    async def create_config_map(self, namespace: str, body: JSON) -> JSON:
        created = await _call(self.core.create_namespaced_config_map, namespace, body)
        assert created is not None
        return created

    async def replace_config_map(self, namespace: str, name: str, body: JSON) -> JSON | None:
        return await _call(self.core.replace_namespaced_config_map, name, namespace, body)
