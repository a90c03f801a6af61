"""An in-memory stand-in for the ConfigMap API calls the operator's trust store makes."""

from __future__ import annotations

import copy
from typing import Any


class ConfigMaps:
    """Just the ConfigMap calls ConfigMapTrustStore makes, with resourceVersion checks."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.items.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def create_config_map(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = "1"
        self.items[(namespace, body["metadata"]["name"])] = body
        return body

    async def replace_config_map(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        current = self.items.get((namespace, name))
        if current is None:
            return None
        assert current["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]
        body = copy.deepcopy(body)
        body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
        self.items[(namespace, name)] = body
        return body
