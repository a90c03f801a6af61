"""A model server pod's refusing `fetch` init step, reported on its ModelDeployment."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modeltrust.operator.artifact import ArtifactChecker
from modeltrust.operator.deps import Deps
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.pod_failures import fetch_outcome, on_pod_change

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MISMATCH = (
    "error: DigestMismatch: digest check failed for http://h/m.onnx: expected sha256:aa, "
    "got sha256:bb; the artifact is not the one that was verified, refusing to use it"
)


def pod(state: dict[str, Any], last: dict[str, Any] | None = None, name: str = "p1") -> Any:
    return {
        "metadata": {
            "name": name, "namespace": "ml",
            "labels": {"app.kubernetes.io/instance": "r"},
        },
        "status": {"initContainerStatuses": [
            {"name": "fetch", "state": state, "lastState": last or {}},
        ]},
    }  # fmt: skip


REFUSED = {"terminated": {"exitCode": 3, "message": f"downloading\n{MISMATCH}\n"}}
OK = {"terminated": {"exitCode": 0, "reason": "Completed"}}
BACKING_OFF = {"waiting": {"reason": "CrashLoopBackOff"}}


def test_fetch_outcome_reads_the_current_and_the_last_state() -> None:
    assert fetch_outcome(pod({"running": {}})) is None
    assert fetch_outcome(pod(OK)) == (True, "")
    assert fetch_outcome(pod(REFUSED)) == (
        False,
        f"pod p1: init container fetch exited 3: {MISMATCH}",
    )
    assert fetch_outcome(pod(BACKING_OFF, REFUSED)) == fetch_outcome(pod(REFUSED))
    assert fetch_outcome({"metadata": {}, "status": {}}) is None


@dataclass
class FakeKube:
    md: dict[str, Any]
    patches: list[dict[str, Any]] = field(default_factory=list)

    async def get_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        owner = {"kind": "ModelDeployment", "name": "r", "uid": "u1", "controller": True}
        return {"metadata": {"name": name, "ownerReferences": [owner]}} if name == "r" else None

    async def get_model_deployment(self, ns: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.md) if name == "r" else None

    async def patch_model_deployment_status(
        self, ns: str, name: str, status: dict[str, Any]
    ) -> None:
        self.patches.append(copy.deepcopy(status))
        self.md.setdefault("status", {}).update(copy.deepcopy(status))


class NoArtifacts(ArtifactChecker):
    async def check(self, uri: str, digest: str, *, max_size: int, **_: Any) -> Any:
        raise AssertionError("not used")


async def test_a_refusal_sets_the_condition_and_posts_one_event() -> None:
    kube = FakeKube({"metadata": {"name": "r", "namespace": "ml", "uid": "u1"}, "status": {
        "observedGeneration": 1,
        "conditions": [{"type": "Verified", "status": "True", "reason": "Verified"}],
    }})  # fmt: skip
    events: list[tuple[str, str, str]] = []
    deps = Deps(
        kube=kube,  # type: ignore[arg-type]
        ledger=None,  # type: ignore[arg-type]
        artifacts=NoArtifacts(),
        metrics=Metrics(),
        events=lambda body, kind, reason, message: events.append((kind, reason, message)),
        clock=lambda: NOW,
    )
    await on_pod_change(deps, pod(REFUSED))
    await on_pod_change(deps, pod(BACKING_OFF, REFUSED))  # the same refusal: nothing new
    conds = {c["type"]: c for c in kube.md["status"]["conditions"]}
    assert conds["Verified"]["status"] == "True", "other conditions are kept"
    assert conds["PodsVerified"]["status"] == "False"
    assert conds["PodsVerified"]["reason"] == "FetchRefused"
    assert "DigestMismatch" in conds["PodsVerified"]["message"]
    assert len(kube.patches) == 1
    assert [(k, r) for k, r, _ in events] == [("Warning", "FetchRefused")]

    await on_pod_change(deps, pod(OK, name="p2"))
    conds = {c["type"]: c for c in kube.md["status"]["conditions"]}
    assert (conds["PodsVerified"]["status"], conds["PodsVerified"]["reason"]) == (
        "True",
        "FetchVerified",
    )
    await on_pod_change(deps, pod(OK, name="p3"))
    assert len(kube.patches) == 2, "a pod that verified changes nothing when all is well"
    await on_pod_change(deps, {**pod(REFUSED), "metadata": {"name": "x", "namespace": "ml"}})
    assert len(kube.patches) == 2, "a pod without the instance label is ignored"
    other = pod(REFUSED)
    other["metadata"]["labels"]["app.kubernetes.io/instance"] = "not-ours"
    await on_pod_change(deps, other)
    assert len(kube.patches) == 2, "a pod whose Deployment no ModelDeployment controls is ignored"
