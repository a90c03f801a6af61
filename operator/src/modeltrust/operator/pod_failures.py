"""A model server pod whose `fetch` init step refused the model, said on its ModelDeployment.

The operator verified the bytes at rollout; each pod's init container downloads and checks
them again (digest, and the inclusion proof of the registration). When that check fails,
for example because the bytes at the model's URL were swapped after verification, the pod
never starts, and without this the only trace would be in the pod's own status. So the
operator watches its model server pods (by their `app.kubernetes.io/name` label; their
`app.kubernetes.io/instance` names the owned Deployment, whose controlling owner is the
ModelDeployment) and, when a pod's `fetch`
container exited non-zero, sets the condition `PodsVerified=False/FetchRefused` with the
pod's reason (the container's last log lines: the fetch container's
terminationMessagePolicy is FallbackToLogsOnError) and posts a Warning Event
`FetchRefused`; a pod whose `fetch` exited 0 sets `PodsVerified=True/FetchVerified` again.
Only changes are written, so a crash-looping pod posts one Event, not one per restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modeltrust.operator.builders import FETCH_CONTAINER, LABEL_INSTANCE
from modeltrust.operator.conditions import get_condition, set_condition
from modeltrust.operator.deps import Deps

PODS_VERIFIED = "PodsVerified"
FETCH_REFUSED = "FetchRefused"
FETCH_VERIFIED = "FetchVerified"
_MESSAGE_LIMIT = 1024


def fetch_outcome(pod: Mapping[str, Any]) -> tuple[bool, str] | None:
    """(True, "") if the pod's fetch container exited 0, (False, why) if it exited non-zero
    (now or before its current restart), None while it has not finished."""
    name = (pod.get("metadata") or {}).get("name", "?")
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") != FETCH_CONTAINER:
            continue
        for key in ("state", "lastState"):
            done = (status.get(key) or {}).get("terminated")
            if not done:
                continue
            code = done.get("exitCode")
            if code == 0:
                return (True, "") if key == "state" else None
            detail = str(done.get("message") or done.get("reason") or "").strip()
            lines = [line for line in detail.splitlines() if line.strip()]
            why = lines[-1] if lines else "no message"
            return False, f"pod {name}: init container fetch exited {code}: {why}"[:_MESSAGE_LIMIT]
    return None


def _controlling_model_deployment(deployment: Mapping[str, Any] | None) -> str | None:
    for ref in ((deployment or {}).get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "ModelDeployment" and ref.get("controller") and ref.get("name"):
            return str(ref["name"])
    return None


async def on_pod_change(deps: Deps, pod: Mapping[str, Any]) -> None:
    """Record a model server pod's fetch outcome on its ModelDeployment (only changes)."""
    meta = pod.get("metadata") or {}
    deployment_name = (meta.get("labels") or {}).get(LABEL_INSTANCE)
    namespace = meta.get("namespace")
    outcome = fetch_outcome(pod)
    if not deployment_name or not namespace or outcome is None:
        return
    ok, why = outcome
    deployment = await deps.kube.get_deployment(namespace, deployment_name)
    owner_name = _controlling_model_deployment(deployment)
    if owner_name is None:
        return
    md = await deps.kube.get_model_deployment(namespace, owner_name)
    if md is None:
        return
    uid = str((md.get("metadata") or {}).get("uid") or "")
    async with deps.lock(uid):
        fresh = await deps.kube.get_model_deployment(namespace, owner_name)
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
            return
        status = fresh.get("status") or {}
        conditions = status.get("conditions") or []
        current = get_condition(conditions, PODS_VERIFIED) or {}
        if ok:
            if current.get("status") in (None, "True"):
                return
            new = set_condition(
                conditions, PODS_VERIFIED, "True", FETCH_VERIFIED,
                f"pod {meta.get('name')}: init container fetch verified the model",
                int(status.get("observedGeneration") or 0), deps.clock(),
            )  # fmt: skip
        else:
            if current.get("status") == "False" and current.get("message") == why:
                return
            new = set_condition(
                conditions, PODS_VERIFIED, "False", FETCH_REFUSED, why,
                int(status.get("observedGeneration") or 0), deps.clock(),
            )  # fmt: skip
            deps.events(fresh, "Warning", FETCH_REFUSED, why)
        await deps.kube.patch_model_deployment_status(namespace, owner_name, {"conditions": new})
