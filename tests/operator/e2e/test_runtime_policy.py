"""The runtime is part of what is verified (issue "Close the trust boundary", item 1).

Attacks found by a user with ordinary namespace rights, each reproduced on the real API
server: a model server image of the author's choosing, one that is not pinned by digest,
and environment variables that change what code runs. Each is refused with its own
reason in the Verified condition and an audit entry, the last verified version keeps
serving, and a rollout records the image and the pod template digest it applied.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.cluster import Cluster

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    PolicyFactory,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    deployment,
    get_md,
    model_deployment,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator")

EVIL = "evil.example/backdoor@sha256:" + "66" * 32
OTHER = "registry.example/modeltrust-gpu@sha256:" + "0c" * 32


def with_runtime(body: dict[str, Any], **runtime: Any) -> dict[str, Any]:
    body["spec"]["runtime"] = runtime
    return body


def images(dep: dict[str, Any]) -> list[str]:
    spec = dep["spec"]["template"]["spec"]
    return [c["image"] for c in (*spec["initContainers"], *spec["containers"])]


def refused_audit(ledger: Ledger, uid: str) -> Any:
    audits = wait_for(
        "the refusal on the ledger",
        lambda: [a for a in ledger.audits(uid) if a.action == "refuse"],
    )
    return audits[0]


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (EVIL, "RuntimeImageNotAllowed"),  # pinned, but not one the policy allows
        ("evil.example/backdoor", "RuntimeImageNotPinned"),
        ("registry.example/modeltrust:e2e", "RuntimeImageNotPinned"),  # a tag can move
    ],
)
def test_an_image_the_policy_does_not_allow_is_refused_and_audited(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    image: str,
    reason: str,
    model_uri: ModelUri,
) -> None:
    # Even under Audit: the runtime is not what Audit relaxes.
    policy = make_policy(enforcement="Audit")
    path, digest = models.make("m", seed=61)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    body = model_deployment(namespace, "m", policy, model_uri(path), digest)
    apply(crds, with_runtime(body, image=image))

    md = wait_condition(crds, namespace, "m", "Verified", "False", reason)
    assert image in condition(md, "Verified")["message"]
    assert deployment(crds, namespace, "m") is None
    audit = refused_audit(ledger, md["metadata"]["uid"])
    assert audit.decision == "refused"
    assert audit.reasons[0].startswith(f"{reason}: ")
    assert f"runtime image: {image}" in audit.reasons
    assert "pod template: none applied" in audit.reasons


def test_the_last_verified_version_keeps_serving_when_a_new_image_is_refused(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    policy: str,
    rolled_out: RolloutFactory,
    pod_image: str,
    model_uri: ModelUri,
) -> None:
    first = rolled_out("s", policy, seed=62)
    body = model_deployment(namespace, "s", policy, model_uri(first.path), first.digest)
    apply(crds, with_runtime(body, image=EVIL))
    md = wait_condition(crds, namespace, "s", "Verified", "False", "RuntimeImageNotAllowed")
    assert md["status"]["servingDigest"] == first.digest
    assert md["status"]["runtimeImage"] == pod_image
    assert condition(md, "Ready")["status"] == "True"
    dep = deployment(crds, namespace, "s")
    assert dep is not None
    assert set(images(dep)) == {pod_image}
    audit = refused_audit(ledger, first.uid)
    assert f"runtime image: {EVIL}" in audit.reasons


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PYTHONPATH"])
def test_environment_that_changes_what_code_runs_is_refused(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    name: str,
    pod_image: str,
    model_uri: ModelUri,
) -> None:
    # A wildcard in the policy does not let them through: they must be named literally.
    policy = make_policy(runtime={"allowedImages": [pod_image], "allowedEnv": ["*"]})
    path, digest = models.make("e", seed=63)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    env = [{"name": name, "value": "/models/evil"}, {"name": "APP_MODE", "value": "fast"}]
    body = model_deployment(namespace, "e", policy, model_uri(path), digest)
    apply(crds, with_runtime(body, env=env))

    md = wait_condition(crds, namespace, "e", "Verified", "False", "RuntimeEnvNotAllowed")
    assert name in condition(md, "Verified")["message"]
    assert deployment(crds, namespace, "e") is None
    audit = refused_audit(ledger, md["metadata"]["uid"])
    assert audit.reasons[0].startswith("RuntimeEnvNotAllowed: ")


def test_a_rollout_records_the_runtime_image_and_the_pod_template_digest(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    make_policy: PolicyFactory,
    pod_image: str,
    model_uri: ModelUri,
) -> None:
    policy = make_policy(
        runtime={"allowedImages": [pod_image, OTHER], "allowedEnv": ["OMP_NUM_THREADS"]}
    )
    path, digest = models.make("g", seed=64)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    body = with_runtime(
        model_deployment(namespace, "g", policy, model_uri(path), digest),
        image=OTHER, env=[{"name": "OMP_NUM_THREADS", "value": "2"}],
    )  # fmt: skip
    apply(crds, body)

    # What the rollout recorded (OTHER exists on no node: where pods really run, they never
    # become Ready, and that is not what this test is about).
    def rolled_out() -> dict[str, Any] | None:
        md = get_md(crds, namespace, "g")
        return md if md.get("status", {}).get("runtimeImage") else None

    md = wait_for("g rolled out", rolled_out)
    status = md["status"]
    assert condition(md, "Verified")["reason"] == "Verified"
    assert status["runtimeImage"] == OTHER
    assert status["mode"] == "Enforced"
    assert status["podTemplateDigest"].startswith("sha256:")
    assert status["artifactReadTime"]
    dep = deployment(crds, namespace, "g")
    assert dep is not None
    assert set(images(dep)) == {OTHER}
    (audit,) = ledger.audits(md["metadata"]["uid"])
    assert (audit.action, audit.decision) == ("rollout", "allowed")
    assert f"runtime image: {OTHER}" in audit.reasons
    assert f"pod template: {status['podTemplateDigest']}" in audit.reasons
    assert f"artifact read: {status['artifactReadTime']}" in audit.reasons
