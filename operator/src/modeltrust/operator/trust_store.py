"""The last verified ledger checkpoint, kept in a ConfigMap and moved forward only by
compare-and-swap on its resourceVersion (DESIGN section 3).

One ConfigMap per ledger (named after a hash of its verifier key) in the operator's
namespace. The process also keeps a high-water mark: if the ConfigMap is deleted or set
back while the operator runs, it keeps trusting the newer checkpoint it already verified,
so resetting trust after a rollback takes a deliberate act (edit the ConfigMap AND restart
the operator), documented in docs/operator.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from modeltrust.chain.trust_state import LedgerTrustError, TrustedCheckpoint
from modeltrust.operator.kube import Conflict, Kube

log = logging.getLogger("modeltrust.operator.trust")

DATA_KEY = "trusted-checkpoint.json"


def config_map_name(verifier_key: str, witnesses: str = "") -> str:
    """One record per ledger key; a policy requiring witness cosignatures gets its own
    record (keyed on the witness set and quorum too), holding only witnessed checkpoints."""
    identity = verifier_key if not witnesses else f"{verifier_key}\n{witnesses}"
    return "modeltrust-ledger-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


class ConfigMapTrustStore:
    """An AsyncTrustStateStore for modeltrust.chain's AsyncLedgerClient."""

    def __init__(self, kube: Kube, namespace: str, verifier_key: str, witnesses: str = "") -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = config_map_name(verifier_key, witnesses)
        self.verifier_key = verifier_key
        self._high_water: TrustedCheckpoint | None = None
        self._resource_version: str | None = None

    async def _read(self) -> TrustedCheckpoint | None:
        cm = await self.kube.get_config_map(self.namespace, self.name)
        if cm is None:
            self._resource_version = None
            return None
        self._resource_version = cm["metadata"].get("resourceVersion")
        raw = (cm.get("data") or {}).get(DATA_KEY)
        if raw is None:
            return None
        try:
            return TrustedCheckpoint.from_json(json.loads(raw))
        except ValueError as exc:
            # A damaged record must not silently reset trust to "first use".
            raise LedgerTrustError(
                f"ConfigMap {self.namespace}/{self.name} holds an unreadable trusted checkpoint: "
                f"{exc}; repair or delete it and restart the operator"
            ) from exc

    def _view(self, stored: TrustedCheckpoint | None) -> TrustedCheckpoint | None:
        high = self._high_water
        if high is None or (stored is not None and stored.size > high.size):
            # What the ConfigMap holds is what this process trusts from now on.
            self._high_water = stored
            return stored
        if stored is None or stored.size < high.size:
            log.warning(
                "trusted checkpoint in ConfigMap %s/%s is %s, older than size %d verified by "
                "this process; keeping the newer one",
                self.namespace, self.name,
                "missing" if stored is None else f"size {stored.size}", high.size,
            )  # fmt: skip
            return high
        return stored

    async def load(self) -> TrustedCheckpoint | None:
        return self._view(await self._read())

    async def compare_and_swap(
        self, expected: TrustedCheckpoint | None, new: TrustedCheckpoint
    ) -> bool:
        current = self._view(await self._read())
        if not (
            current is expected is None or (expected is not None and expected.same_tree(current))
        ):
            return False
        if current is not None and new.size < current.size:
            return False
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/part-of": "modeltrust"},
                "annotations": {"modeltrust.dev/ledger-origin": new.origin},
            },
            "data": {DATA_KEY: json.dumps(new.to_json(), indent=1)},
        }
        try:
            if self._resource_version is None:
                await self.kube.create_config_map(self.namespace, body)
            else:
                body["metadata"]["resourceVersion"] = self._resource_version
                if await self.kube.replace_config_map(self.namespace, self.name, body) is None:
                    return False  # deleted meanwhile: reload and retry
        except Conflict:
            return False
        if self._high_water is None or new.size >= self._high_water.size:
            self._high_water = new
        return True
