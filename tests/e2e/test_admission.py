"""The chart's admission policies on a real API server (docs/install.md, "What admission
enforces"): nobody but the operator changes what serves a verified model.

The policies, the operator's ServiceAccount and its RBAC are rendered from the chart
(`helm template --show-only`) and applied, bound only to the namespaces these tests label,
so other tests sharing the cluster are untouched. A namespace user ("alice", with the
built-in `edit` role) tries each forbidden change and is refused with the rule's message;
the operator (its service account, impersonated), the Deployment and ReplicaSet
controllers, the garbage collector and the namespace controller still do their work: pods
come up Running (on kwok's node, or for real on a real node: the modeltrust image there,
fetching a real model from a store on the host address), and deleting a ModelDeployment or
a namespace completes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chart.chartlib import CHART, LedgerKey, documents, helm, install_values, merge, write_values
from harness.cluster import Cluster
from harness.file_server import serve_files
from harness.image import build_image, image_on_node
from harness.modeltrust_objects import install_crds, model_deployment
from harness.onnx_models import mnist_mlp
from harness.waiting import wait_for
from modeltrust.operator import builders
from modeltrust.operator.types import parse_model_deployment

SCOPE_LABEL = "modeltrust.dev/e2e-admission"
OPERATOR_SA = "model-operator"  # not the chart's default name: the policy must follow the value
ALICE = ("--as=alice", "--as-group=modeltrust-e2e-users")
DIGEST = "sha256:" + "ab" * 32
IMAGE = "registry.example/modeltrust:e2e"

OBJECTS_RULE = "may create, change or delete {kind}s serving a ModelDeployment"
REPLICASET_RULE = "only the Deployment controller"
POD_RULE = "only the ReplicaSet controller"
DEBUG_RULE = "nobody may add ephemeral containers to a model server pod"


@dataclass(frozen=True)
class PodSource:
    """What the model server pods run and fetch: `image`, then `other_image` for the
    operator's changed template, and the model at `uri` with `digest` and `size`."""

    image: str
    other_image: str
    uri: str
    digest: str
    size: int


@pytest.fixture(scope="module")
def pod_source(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodSource]:
    """kwok's pods run nothing: names do. On a real node the pods really start: the
    modeltrust image imported into it (under its two names) and a real model served where
    pods reach the host."""
    if not (cluster.real_pods and cluster.local):
        yield PodSource(IMAGE, IMAGE + "-2", "https://models.example/m.onnx", DIGEST, 1024)
        return
    image = image_on_node(cluster)  # localhost/modeltrust:ctx-<hash>, also modeltrust:<tag>
    root = tmp_path_factory.mktemp("admission-models")
    data = mnist_mlp(root / "m.onnx", seed=3).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with serve_files(root, host=cluster.host_address) as base:
        yield PodSource(image, build_image().reference, f"{base}/m.onnx", digest, len(data))


@dataclass(frozen=True)
class Admission:
    """The chart's policies as installed for this module, who the operator is, and what
    the model server pods run."""

    scope: str
    operator_namespace: str
    manifest: str
    pods: PodSource

    @property
    def operator(self) -> str:
        return f"system:serviceaccount:{self.operator_namespace}:{OPERATOR_SA}"

    @property
    def as_operator(self) -> tuple[str, ...]:
        return (f"--as={self.operator}",)

    def objects_rule(self, kind: str) -> str:
        return f"modeltrust: only the operator ({self.operator}) " + OBJECTS_RULE.format(kind=kind)


def render(
    cluster: Cluster, release: str, namespace: str, values: dict[str, Any], tmp: Path
) -> str:
    shown = [
        "templates/serviceaccounts.yaml",
        "templates/rbac.yaml",
        "templates/admission.yaml",
    ]
    rendered = helm(
        "template", release, str(CHART), "--namespace", namespace,
        "--kube-version", cluster.server_version, "-f", str(write_values(tmp / "v.yaml", values)),
        *[arg for path in shown for arg in ("--show-only", path)],
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    docs = documents(rendered.stdout)
    kinds = sorted(d["kind"] for d in docs if "AdmissionPolicy" in d["kind"])
    assert kinds == ["ValidatingAdmissionPolicy"] * 3 + ["ValidatingAdmissionPolicyBinding"] * 3
    return "\n---\n".join(json.dumps(d) for d in docs)


def labelled_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "registry.example/impostor:1"}]},
    }


@pytest.fixture(scope="module")
def admission(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory, pod_source: PodSource
) -> Iterator[Admission]:
    install_crds(cluster)
    run = uuid.uuid4().hex[:8]
    operator_ns = f"mt-adm-op-{run}"
    values = merge(
        install_values(LedgerKey.generate("admission.ledger.test")),
        {
            "operator": {"serviceAccount": {"name": OPERATOR_SA}},
            "admission": {"namespaceSelector": {"matchLabels": {SCOPE_LABEL: run}}},
        },
    )
    manifest = render(cluster, f"adm{run}", operator_ns, values, tmp_path_factory.mktemp("adm"))
    cluster.create_namespace(operator_ns)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    installed = Admission(run, operator_ns, manifest, pod_source)
    # Policies take effect once the API server has compiled them: probe with a dry run.
    probe_ns = f"mt-adm-probe-{run}"
    cluster.create_namespace(probe_ns)
    cluster.kubectl("label", "namespace", probe_ns, f"{SCOPE_LABEL}={run}")
    probe = json.dumps(labelled_pod("probe", {builders.LABEL_NAME: builders.APP_NAME}))

    def denied() -> str:
        attempt = cluster.kubectl(
            "create", "--dry-run=server", "-n", probe_ns, "-f", "-", input=probe, check=False
        )
        return attempt.stderr if attempt.returncode != 0 else ""

    try:
        assert POD_RULE in wait_for("the admission policies to take effect", denied, timeout=60)
        yield installed
    finally:
        cluster.kubectl("delete", "-f", "-", "--wait=false", input=manifest, check=False)
        for ns in (operator_ns, probe_ns):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@dataclass
class Served:
    """A ModelDeployment whose Deployment and Service the operator (impersonated) created."""

    namespace: str
    md: dict[str, Any]
    name: str


def scoped(cluster: Cluster, admission: Admission, namespace: str) -> None:
    """Put `namespace` under the policies and give alice the built-in `edit` role there."""
    cluster.kubectl("label", "namespace", namespace, f"{SCOPE_LABEL}={admission.scope}")
    cluster.kubectl(
        "create", "rolebinding", "alice-edit", "-n", namespace, "--clusterrole=edit",
        "--user=alice",
    )  # fmt: skip
    # `edit` does not include debugging with ephemeral containers; grant it, so it is the
    # policy, not RBAC, that refuses alice.
    cluster.kubectl(
        "create", "role", "debugger", "-n", namespace, "--verb=get,patch,update",
        "--resource=pods/ephemeralcontainers",
    )  # fmt: skip
    cluster.kubectl(
        "create", "rolebinding", "alice-debug", "-n", namespace, "--role=debugger", "--user=alice"
    )


def serve(
    cluster: Cluster, admission: Admission, namespace: str, name: str = "mnist", replicas: int = 2
) -> Served:
    """What the operator does after verifying: create the owned Deployment and Service."""
    pods = admission.pods
    body = model_deployment(namespace, name, "default", pods.uri, pods.digest)
    body["spec"]["replicas"] = replicas
    cluster.kubectl("create", "-f", "-", input=json.dumps(body))
    md = cluster.kubectl_json("get", "modeldeployment", name, "-n", namespace)
    parsed = parse_model_deployment(md)
    verified = builders.VerifiedModel(digest=pods.digest, size=pods.size, generation=1)
    settings = builders.BuildSettings(default_image=pods.image)
    for obj in (
        builders.build_deployment(parsed, verified, settings),
        builders.build_service(parsed),
    ):
        cluster.kubectl("create", *admission.as_operator, "-f", "-", input=json.dumps(obj))
    return Served(namespace, md, builders.resource_name(name))


def model_pods(cluster: Cluster, served: Served) -> list[dict[str, Any]]:
    selector = f"{builders.LABEL_NAME}={builders.APP_NAME},{builders.LABEL_INSTANCE}={served.name}"
    listed: Any = cluster.kubectl_json("get", "pods", "-n", served.namespace, "-l", selector)
    return list(listed["items"])


def live_pods(cluster: Cluster, served: Served) -> list[dict[str, Any]]:
    return [p for p in model_pods(cluster, served) if not p["metadata"].get("deletionTimestamp")]


def running_pods(cluster: Cluster, served: Served, count: int) -> list[dict[str, Any]]:
    def running() -> list[dict[str, Any]] | None:
        pods = live_pods(cluster, served)
        ready = [p for p in pods if p["status"].get("phase") == "Running"]
        return pods if len(pods) == len(ready) == count else None

    return wait_for(f"{count} model server pods Running", running, timeout=90)


def refused(cluster: Cluster, who: tuple[str, ...], *args: str, input: str | None = None) -> str:
    """Run kubectl as `who`; it must fail by admission. Returns the error."""
    result = cluster.kubectl(*args, *who, input=input, check=False)
    assert result.returncode != 0, f"kubectl {' '.join(args)} was allowed:\n{result.stdout}"
    assert "denied request" in result.stderr, result.stderr
    return result.stderr


def allowed(
    cluster: Cluster, who: tuple[str, ...], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = cluster.kubectl(*args, *who, input=input, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)} was refused:\n{result.stderr}"
    return result


def test_nobody_but_the_operator_changes_what_serves_a_model(
    cluster: Cluster, admission: Admission, namespace: str
) -> None:
    scoped(cluster, admission, namespace)
    served = serve(cluster, admission, namespace)
    ns = ("-n", namespace)
    deployment = f"deployment/{served.name}"
    deployment_rule = admission.objects_rule("Deployment")
    service_rule = admission.objects_rule("Service")
    before: Any = cluster.kubectl_json("get", deployment, *ns)
    pods = running_pods(cluster, served, 2)
    pod = pods[0]["metadata"]["name"]

    # The owned Deployment: no new image, no unowning, no unlabelling, no deleting.
    swap = f"{builders.SERVER_CONTAINER}=registry.example/impostor:1"
    assert deployment_rule in refused(cluster, ALICE, "set", "image", deployment, swap, *ns)
    unown = '[{"op": "remove", "path": "/metadata/ownerReferences"}]'
    assert deployment_rule in refused(
        cluster, ALICE, "patch", deployment, *ns, "--type=json", "-p", unown
    )
    unlabel = json.dumps(
        [
            {"op": "remove", "path": "/metadata/labels/" + key.replace("/", "~1")}
            for key in builders.object_labels(parse_model_deployment(served.md))
        ]
    )
    assert deployment_rule in refused(
        cluster, ALICE, "patch", deployment, *ns, "--type=json", "-p", unlabel
    )
    assert deployment_rule in refused(cluster, ALICE, "delete", deployment, *ns)
    # A cluster admin (the test's own credentials) is bound by the rule too.
    assert deployment_rule in refused(cluster, (), "set", "image", deployment, swap, *ns)

    # A hand-made Deployment whose pods would carry the model server labels (only its pod
    # template has them), and a hand-made ReplicaSet and Pod with them.
    selector = {builders.LABEL_NAME: builders.APP_NAME, builders.LABEL_INSTANCE: served.name}
    template = {"metadata": {"labels": selector}, "spec": labelled_pod("x", {})["spec"]}
    hand_made = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "impostor"},
        "spec": {"replicas": 2, "selector": {"matchLabels": selector}, "template": template},
    }
    assert deployment_rule in refused(
        cluster, ALICE, "create", *ns, "-f", "-", input=json.dumps(hand_made)
    )
    hand_made_rs = {**hand_made, "kind": "ReplicaSet"}
    assert REPLICASET_RULE in refused(
        cluster, ALICE, "create", *ns, "-f", "-", input=json.dumps(hand_made_rs)
    )
    impostor = json.dumps(labelled_pod("impostor", selector))
    assert POD_RULE in refused(cluster, ALICE, "create", *ns, "-f", "-", input=impostor)

    # The Service: its selector stays.
    retarget = '{"spec": {"selector": {"app.kubernetes.io/instance": "impostor"}}}'
    assert service_rule in refused(
        cluster, ALICE, "patch", f"service/{served.name}", *ns, "-p", retarget
    )

    # The model server pods: no new image, no label changes, no debugging.
    image = json.dumps(
        {"spec": {"containers": [{"name": builders.SERVER_CONTAINER, "image": "x/impostor:1"}]}}
    )
    assert POD_RULE in refused(cluster, ALICE, "patch", f"pod/{pod}", *ns, "-p", image)
    assert POD_RULE in refused(
        cluster, ALICE, "label", f"pod/{pod}", *ns, f"{builders.LABEL_INSTANCE}-"
    )
    assert POD_RULE in refused(
        cluster,
        ALICE,
        "annotate",
        f"pod/{pod}",
        *ns,
        "--overwrite",
        f"{builders.ANN_DIGEST}=sha256:00",
    )
    assert DEBUG_RULE in refused(
        cluster, ALICE, "debug", f"pod/{pod}", *ns, "--image=registry.example/debug:1",
        "--profile=restricted", "-c", "dbg",
    )  # fmt: skip
    # Not even the kubelet's status path may relabel a pod (the admin writes it here).
    relabel = json.dumps({"metadata": {"labels": {builders.LABEL_INSTANCE: "impostor"}}})
    assert POD_RULE in refused(
        cluster, (), "patch", f"pod/{pod}", *ns, "--subresource=status", "-p", relabel
    )

    # Nothing changed.
    after: Any = cluster.kubectl_json("get", deployment, *ns)
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["metadata"]["ownerReferences"] == before["metadata"]["ownerReferences"]
    assert not cluster.kubectl("get", "pod", "impostor", *ns, check=False).stdout
    assert {p["metadata"]["name"] for p in model_pods(cluster, served)} == {
        p["metadata"]["name"] for p in pods
    }


def test_the_operator_and_the_controllers_still_do_their_work(
    cluster: Cluster, admission: Admission, namespace: str
) -> None:
    scoped(cluster, admission, namespace)
    served = serve(cluster, admission, namespace)
    ns = ("-n", namespace)
    # The Deployment controller made a ReplicaSet from the operator's template, and the
    # ReplicaSet controller made its pods, which run on the kwok node.
    pods = running_pods(cluster, served, 2)
    replica_sets: Any = cluster.kubectl_json("get", "replicasets", *ns)
    (replica_set,) = replica_sets["items"]
    assert replica_set["metadata"]["ownerReferences"][0]["name"] == served.name
    for pod in pods:
        assert pod["metadata"]["ownerReferences"][0]["name"] == replica_set["metadata"]["name"]
        assert pod["spec"]["nodeName"]

    # The operator changes its Deployment (a new verified template) and Service: a new
    # ReplicaSet and new pods follow.
    parsed = parse_model_deployment(served.md)
    source = admission.pods
    verified = builders.VerifiedModel(digest=source.digest, size=source.size, generation=2)
    updated = builders.build_deployment(
        parsed, verified, builders.BuildSettings(default_image=source.other_image), replicas=3
    )
    allowed(cluster, admission.as_operator, "replace", "-f", "-", input=json.dumps(updated))
    allowed(
        cluster, admission.as_operator, "patch", f"service/{served.name}", *ns,
        "-p", '{"metadata": {"annotations": {"example.com/touched": "yes"}}}',
    )  # fmt: skip

    def rolled() -> bool:
        pods = live_pods(cluster, served)
        images = [p["spec"]["containers"][0]["image"] for p in pods]
        return images == [source.other_image] * 3 and all(
            p["status"].get("phase") == "Running" for p in pods
        )

    wait_for("the operator's new template to roll out", rolled, timeout=120)

    # The controllers' status writes (and the Deployment controller's revision annotation,
    # written through the status subresource) still land.
    def reported() -> Any:
        found: Any = cluster.kubectl_json("get", f"deployment/{served.name}", *ns)
        status = found["status"]
        done = (
            status.get("observedGeneration") == found["metadata"]["generation"]
            and status.get("updatedReplicas") == status.get("availableReplicas") == 3
        )
        return found if done else None

    deployment = wait_for("the Deployment's status", reported, timeout=60)
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert deployment["metadata"]["annotations"][builders.ANN_GENERATION] == "2"

    # Annotations outside modeltrust.dev/ stay open on model pods (CNI plugins write them);
    # objects without the model server labels are not the policies' business.
    pod = model_pods(cluster, served)[0]["metadata"]["name"]
    allowed(cluster, ALICE, "annotate", f"pod/{pod}", *ns, "example.com/note=fine")
    plain = labelled_pod("plain", {"app": "plain"})
    allowed(cluster, ALICE, "create", *ns, "-f", "-", input=json.dumps(plain))
    allowed(cluster, ALICE, "label", "pod/plain", *ns, "tier=web")
    allowed(cluster, ALICE, "create", "deployment", "plain", "--image=registry.example/p:1", *ns)
    allowed(cluster, ALICE, "set", "image", "deployment/plain", "p=registry.example/p:2", *ns)
    allowed(cluster, ALICE, "delete", "deployment/plain", *ns)


def refusals_in_control_plane_logs(cluster: Cluster) -> list[str]:
    """Lines of the local cluster's logs (controllers, scheduler, kwok or the kubelet) where
    one of the policies refused a request: the controllers must never be refused. A cluster
    named by KUBECONFIG keeps its logs elsewhere; there the tests' own assertions have to do.
    The policies' messages start with "modeltrust: " (image names like modeltrust:0.1.0 in
    the kubelet's and containerd's logs have no space)."""
    if cluster.logs_dir is None:
        return []
    logs = cluster.logs_dir
    assert logs.is_dir(), logs
    return [
        line
        for log in sorted(logs.glob("*.log"))
        if log.name != "audit.log"
        for line in log.read_text(errors="replace").splitlines()
        if "modeltrust: " in line
    ]


@pytest.fixture(autouse=True)
def controllers_never_refused(cluster: Cluster) -> Iterator[None]:
    before = len(refusals_in_control_plane_logs(cluster))
    yield
    assert refusals_in_control_plane_logs(cluster)[before:] == []


def gone(cluster: Cluster, namespace: str, *kinds: str) -> bool:
    for kind in kinds:
        listed: Any = cluster.kubectl_json("get", kind, "-n", namespace)
        if listed["items"]:
            return False
    return True


def test_deleting_a_model_deployment_still_collects_what_it_owned(
    cluster: Cluster, admission: Admission, namespace: str
) -> None:
    """Foreground deletion makes the garbage collector delete the Deployment, its
    ReplicaSets and pods, and then edit the Deployment's finalizers; orphaning makes it
    remove the owner references. Both are allowed to it, and only that."""
    scoped(cluster, admission, namespace)
    ns = ("-n", namespace)
    foreground = serve(cluster, admission, namespace, name="fg")
    running_pods(cluster, foreground, 2)
    allowed(
        cluster, (), "delete", "modeldeployment", "fg", *ns, "--cascade=foreground",
        "--timeout=90s",
    )  # fmt: skip
    kinds = ("deployments", "services", "replicasets", "pods")
    wait_for("garbage collection of fg", lambda: gone(cluster, namespace, *kinds), timeout=90)

    orphaned = serve(cluster, admission, namespace, name="orphan", replicas=1)
    running_pods(cluster, orphaned, 1)
    allowed(
        cluster, (), "delete", "modeldeployment", "orphan", *ns, "--cascade=orphan",
        "--timeout=90s",
    )  # fmt: skip

    def unowned() -> bool:
        deployment: Any = cluster.kubectl_json("get", "deployment/orphan", *ns)
        return not deployment["metadata"].get("ownerReferences")

    wait_for("the garbage collector to orphan the Deployment", unowned, timeout=60)
    # Still labelled as the operator's: still only the operator's to change or delete.
    rule = admission.objects_rule("Deployment")
    assert rule in refused(cluster, ALICE, "delete", "deployment/orphan", *ns)


def test_deleting_a_namespace_completes(cluster: Cluster, admission: Admission) -> None:
    namespace = f"mt-adm-ns-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(namespace)
    try:
        scoped(cluster, admission, namespace)
        served = serve(cluster, admission, namespace)
        running_pods(cluster, served, 2)
        deleted = cluster.kubectl(
            "delete", "namespace", namespace, "--timeout=120s", check=False, timeout=150
        )
        assert deleted.returncode == 0, deleted.stderr
        left = cluster.kubectl("get", "namespace", namespace, check=False)
        assert left.returncode != 0
        assert "NotFound" in left.stderr
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
