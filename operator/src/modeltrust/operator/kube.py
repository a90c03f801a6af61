"""The few Kubernetes API calls the operator makes, as async functions returning plain dicts.

The official client is synchronous; calls run in worker threads (a pool of their own)
and return raw JSON (no model classes), so builders, decisions and status code all speak
plain dicts with the API's own camelCase field names.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from modeltrust.operator.errors import Conflict
from modeltrust.operator.types import GROUP, MODEL_DEPLOYMENT_PLURAL, POLICY_PLURAL, VERSION

JSON = dict[str, Any]


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


class Kube:
    """`threads`: the API calls get their own pool of that many threads and the client a
    connection pool of the same size (sized to the kopf worker limit, so concurrent
    handlers do not queue behind asyncio's small default executor); None uses asyncio's
    default executor and the client's defaults."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient | None = None, *, threads: int | None = None
    ) -> None:
        if api_client is None:
            config = kubernetes.client.Configuration.get_default_copy()
            if threads:
                config.connection_pool_maxsize = threads
            api_client = kubernetes.client.ApiClient(config)
        self.api_client = api_client
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.apps = kubernetes.client.AppsV1Api(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self._executor = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube-api")
            if threads
            else None
        )

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON | None:
        """Run one API call; None for 404, Conflict for 409, ApiException otherwise."""
        call = functools.partial(fn, *args, _preload_content=False, **kwargs)
        try:
            resp = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except ApiException as exc:
            if exc.status == 404:
                return None
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            raise
        return _raw(resp)

    def close(self) -> None:
        """Stop the thread pool (calls in flight finish) and the client's connections."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()  # type: ignore[no-untyped-call]

    # --- custom resources ------------------------------------------------------------------

    async def get_policy(self, name: str) -> JSON | None:
        return await self._call(
            self.custom.get_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL, name
        )

    async def patch_policy_status(self, name: str, status: Mapping[str, Any]) -> None:
        await self._call(
            self.custom.patch_cluster_custom_object_status,
            GROUP, VERSION, POLICY_PLURAL, name, {"status": dict(status)},
        )  # fmt: skip

    async def list_policies(self) -> list[JSON]:
        listed = await self._call(
            self.custom.list_cluster_custom_object, GROUP, VERSION, POLICY_PLURAL
        )
        return list((listed or {}).get("items") or [])

    async def list_model_deployments(self, namespace: str | None) -> list[JSON]:
        """ModelDeployments in `namespace`, or in every namespace when None."""
        if namespace is None:
            listed = await self._call(
                self.custom.list_cluster_custom_object, GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL
            )
        else:
            listed = await self._call(
                self.custom.list_namespaced_custom_object,
                GROUP, VERSION, namespace, MODEL_DEPLOYMENT_PLURAL,
            )  # fmt: skip
        return list((listed or {}).get("items") or [])

    async def get_model_deployment(self, namespace: str, name: str) -> JSON | None:
        return await self._call(
            self.custom.get_namespaced_custom_object,
            GROUP, VERSION, namespace, MODEL_DEPLOYMENT_PLURAL, name,
        )  # fmt: skip

    async def patch_model_deployment_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> JSON | None:
        """Merge-patch status (lists such as conditions are replaced whole, as intended)."""
        return await self._call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, namespace, MODEL_DEPLOYMENT_PLURAL, name, {"status": dict(status)},
        )  # fmt: skip

    async def get_namespace(self, name: str) -> JSON | None:
        """A namespace (for its labels: a policy's namespaceSelector), None if it is gone."""
        return await self._call(self.core.read_namespace, name)

    # --- owned workloads -------------------------------------------------------------------

    async def get_deployment(self, namespace: str, name: str) -> JSON | None:
        return await self._call(self.apps.read_namespaced_deployment, name, namespace)

    async def create_deployment(self, namespace: str, body: JSON) -> JSON:
        created = await self._call(self.apps.create_namespaced_deployment, namespace, body)
        assert created is not None
        return created

    async def replace_deployment(self, namespace: str, name: str, body: JSON) -> JSON | None:
        return await self._call(self.apps.replace_namespaced_deployment, name, namespace, body)

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> JSON | None:
        return await self._call(
            self.apps.patch_namespaced_deployment, name, namespace, {"spec": {"replicas": replicas}}
        )

    async def get_service(self, namespace: str, name: str) -> JSON | None:
        return await self._call(self.core.read_namespaced_service, name, namespace)

    async def create_service(self, namespace: str, body: JSON) -> JSON:
        created = await self._call(self.core.create_namespaced_service, namespace, body)
        assert created is not None
        return created

    async def patch_service(self, namespace: str, name: str, body: JSON) -> JSON | None:
        return await self._call(self.core.patch_namespaced_service, name, namespace, body)

    async def replace_service(self, namespace: str, name: str, body: JSON) -> JSON | None:
        return await self._call(self.core.replace_namespaced_service, name, namespace, body)

    # --- config maps (trusted checkpoint) --------------------------------------------------

    async def create_event(
        self, involved: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
    ) -> None:
        """A core/v1 Event about `involved` (an object as the API returned it)."""
        meta = involved.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "modeltrust-operator"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        await self._call(self.core.create_namespaced_event, namespace, body)

    async def get_secret(self, namespace: str, name: str) -> JSON | None:
        return await self._call(self.core.read_namespaced_secret, name, namespace)

    async def get_service_account(self, namespace: str, name: str) -> JSON | None:
        return await self._call(self.core.read_namespaced_service_account, name, namespace)

    async def get_config_map(self, namespace: str, name: str) -> JSON | None:
        return await self._call(self.core.read_namespaced_config_map, name, namespace)

    async def create_config_map(self, namespace: str, body: JSON) -> JSON:
        created = await self._call(self.core.create_namespaced_config_map, namespace, body)
        assert created is not None
        return created

    async def replace_config_map(self, namespace: str, name: str, body: JSON) -> JSON | None:
        return await self._call(self.core.replace_namespaced_config_map, name, namespace, body)
