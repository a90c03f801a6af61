"""Fixtures for operator e2e tests: the CRDs on the API server, a ledger
(`modeltrust ledger serve` with a SQLite file), the operator (`python -m
modeltrust.operator`), publisher keys, ONNX models and where pods fetch them, the image
the operator's pods run, and a trust policy.

On kwok (pods run nothing) the ledger listens on 127.0.0.1, the models are named by their
file paths and the pods' image is a name nothing pulls. On a real node
(`cluster.real_pods`) the pods' fetch step really downloads and re-verifies the model:
the ledger and a model store listen on `cluster.host_address`, model URIs are
http://<host_address>:<port>/..., and the pods run the modeltrust image imported into
the node.

The processes and objects themselves are in tests/harness/; the tests here import
them from this module under their e2e names (Ledger, Operator, Models)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from harness.cluster import Cluster
from harness.file_server import serve_files
from harness.image import image_on_node
from harness.ledger import MODELTRUST, free_port
from harness.ledger import LedgerProcess as Ledger
from harness.modeltrust_objects import (
    TOKEN,
    Publisher,
    apply,
    install_crds,
    model_deployment,
    trust_policy,
)
from harness.onnx_models import MnistModels as Models
from harness.operator_process import OperatorProcess as Operator
from harness.private_http import PrivateFileServer
from harness.waiting import wait_for

__all__ = [
    "MODELTRUST",
    "Ledger",
    "ModelUri",
    "Models",
    "Operator",
    "PolicyFactory",
    "Publisher",
    "RolledOut",
    "RolloutFactory",
    "apply",
    "assert_never_shown",
    "condition",
    "deployment",
    "free_port",
    "get_md",
    "model_deployment",
    "trust_policy_body",
    "wait_condition",
    "wait_for",
    "wait_replicas",
]


def get_md(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", "md", name, "-n", ns)


def deployment(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    """The Deployment `name`, or None while it does not exist."""
    got = cluster.kubectl("get", "deployment", name, "-n", ns, "-o", "json", check=False)
    return json.loads(got.stdout) if got.returncode == 0 else None


def wait_replicas(cluster: Cluster, ns: str, name: str, replicas: int) -> None:
    """Wait until the Deployment `name` asks for exactly `replicas` replicas."""
    wait_for(
        f"the Deployment {name} at {replicas} replicas",
        lambda: (deployment(cluster, ns, name) or {}).get("spec", {}).get("replicas") == replicas,
    )


def condition(md: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in md.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def wait_condition(
    cluster: Cluster,
    ns: str,
    name: str,
    type_: str,
    status: str,
    reason: str | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def check() -> dict[str, Any] | None:
        md = get_md(cluster, ns, name)
        seen[:] = [md]
        c = condition(md, type_)
        if c.get("status") == status and (reason is None or c.get("reason") == reason):
            return md
        return None

    try:
        result: dict[str, Any] = wait_for(
            f"{name} {type_}={status} {reason or ''}", check, timeout=timeout
        )
    except AssertionError as exc:
        # What a user would look at next: the conditions as they stood at the end.
        conditions = (seen[0].get("status") or {}).get("conditions", []) if seen else []
        shown = "\n".join(
            f"  {c.get('type')}={c.get('status')} {c.get('reason')}: {c.get('message')}"
            for c in conditions
        )
        raise AssertionError(f"{exc}\nconditions:\n{shown}") from None
    return result


# The pods' image on kwok, whose pods run nothing: a name nothing ever pulls, pinned by
# digest as every runtime image must be (make_policy allows the cluster's pod image).
KWOK_IMAGE = "registry.example/modeltrust@sha256:" + "e2" * 32

# The timer every second and the drift check every 2 s: the tests wait on them.
# MODELTRUST_IMAGE is kwok's; the `operator_settings` fixture has the one for the cluster.
OPERATOR_SETTINGS = {
    "MODELTRUST_TIMER_INTERVAL": "1",
    "MODELTRUST_IMAGE": KWOK_IMAGE,
    "MODELTRUST_ACTOR": "e2e-operator",
    # The timer also looks at each owned Deployment (drift the watch cannot see).
    "MODELTRUST_DRIFT_CHECK_INTERVAL": "2",
    # Decisions kept while a ledger is down are appended within a second of its return.
    "MODELTRUST_OUTBOX_INTERVAL": "1",
}


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    install_crds(cluster)
    return cluster


@pytest.fixture(scope="session")
def pod_image(cluster: Cluster) -> str:
    """The image of the operator's pods: on a real node the modeltrust image, imported into
    its containerd (nothing can be pulled), so the fetch step really runs; on kwok a name."""
    return image_on_node(cluster) if cluster.real_pods else KWOK_IMAGE


@pytest.fixture
def operator_settings(pod_image: str, tmp_path: Path) -> dict[str, str]:
    """OPERATOR_SETTINGS with this cluster's pod image; the tests' models are files under
    the test's directory (Models.root), which the operator may read."""
    return {
        **OPERATOR_SETTINGS,
        "MODELTRUST_IMAGE": pod_image,
        "MODELTRUST_LOCAL_MODEL_ROOT": str(tmp_path),
    }


@pytest.fixture
def publishers() -> dict[str, Publisher]:
    # "trusted" is in the policy; "outsider" may write to the ledger but the policy ignores it.
    return {"trusted": Publisher("trusted"), "outsider": Publisher("outsider")}


@pytest.fixture
def ledger(cluster: Cluster, tmp_path: Path, publishers: dict[str, Publisher]) -> Iterator[Ledger]:
    # Loopback on kwok; where pods reach the host on a real node.
    led = Ledger(tmp_path / "ledger", list(publishers.values()), host=cluster.host_address)
    led.start()
    try:
        yield led
    finally:
        led.stop()


OperatorFactory = Callable[..., Operator]


@pytest.fixture
def start_operator(
    crds: Cluster,
    namespace: str,
    tmp_path: Path,
    operator_settings: dict[str, str],
    request: pytest.FixtureRequest,
) -> Iterator[OperatorFactory]:
    """Start the test's operator with `operator_settings` plus `extra` settings (the only way
    tests start one, so every operator runs with this cluster's pod image); stopped at the
    end, after its ModelDeployments were released while it still ran."""
    if "ledger" in request.fixturenames:
        # Set the ledger up first, so it is torn down after the operator: the deletions
        # below are audited on it.
        request.getfixturevalue("ledger")
    started: list[Operator] = []

    def start(no_passwd: bool = False, **extra: str) -> Operator:
        settings = {**operator_settings, **extra}
        op = Operator(crds.env, namespace, tmp_path, TOKEN, settings, no_passwd=no_passwd)
        op.start()
        started.append(op)
        return op

    try:
        yield start
    finally:
        for op in started:
            ledger = request.getfixturevalue("ledger") if "ledger" in request.fixturenames else None
            if ledger is not None and ledger.proc is None:
                ledger.start()  # a test that stopped it: deletions are audited
            release_model_deployments(crds, namespace, op.proc)
            op.stop()
            if os.environ.get("MODELTRUST_E2E_SHOW_LOGS"):
                print(op.log()[-20000:])


@pytest.fixture
def operator(start_operator: OperatorFactory) -> Operator:
    return start_operator()


def release_model_deployments(
    cluster: Cluster, ns: str, operator: subprocess.Popen[bytes] | None
) -> None:
    """Delete the test's ModelDeployments while its operator still runs, so their finalizer
    is honoured and the namespace can go. On a long-lived cluster (kind, a real node) a
    ModelDeployment left behind keeps its namespace Terminating forever once the operator
    that owns the finalizer is gone. Where the operator cannot finish (it was killed, or its
    ledger is already stopped), the finalizer is removed by hand: nobody else will."""
    if operator is not None and operator.poll() is None:
        cluster.kubectl(
            "delete", "md", "--all", "-n", ns, "--wait=true", "--timeout=20s",
            check=False, timeout=40,
        )  # fmt: skip
    left = cluster.kubectl("get", "md", "-n", ns, "-o", "name", check=False).stdout.split()
    for name in left:
        cluster.kubectl(
            "patch", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
            check=False,
        )  # fmt: skip


@pytest.fixture
def models(tmp_path: Path) -> Models:
    return Models(tmp_path / "models")


ModelUri = Callable[[Path], str]


@pytest.fixture
def model_uri(cluster: Cluster, models: Models) -> Iterator[ModelUri]:
    """The URI a ModelDeployment names a model file under Models.root by. On kwok its path
    (the operator reads it under MODELTRUST_LOCAL_MODEL_ROOT; pods run nothing). On a real
    node the pod's fetch step downloads it too, and a pod can read neither the host's files
    nor its loopback: the directory is served over HTTP on `cluster.host_address`, which
    the operator (on the host) reaches as well."""
    if not cluster.real_pods:
        yield str
        return
    models.root.mkdir(parents=True, exist_ok=True)
    with serve_files(models.root, host=cluster.host_address) as base:

        def uri(path: Path) -> str:
            return f"{base}/{path.relative_to(models.root)}"

        yield uri


PolicyFactory = Callable[..., str]


def trust_policy_body(
    name: str, ledger: Ledger, publisher: Publisher, spec: dict[str, Any]
) -> dict[str, Any]:
    """A ModelTrustPolicy on `ledger` trusting `publisher`, with `spec` fields added."""
    return trust_policy(name, ledger.url, ledger.verifier_key, [publisher], spec)


@pytest.fixture
def make_policy(
    crds: Cluster,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    namespace: str,
    pod_image: str,
) -> Iterator[PolicyFactory]:
    """Apply a cluster-scoped ModelTrustPolicy trusting only the "trusted" publisher, scoped
    to the test's namespace and allowing the operator's default image (pod_image); keyword
    arguments replace spec fields (enforcement, revocationAction, ledger, namespaces,
    runtime, ...)."""
    created: list[str] = []

    def make(suffix: str = "", **spec: Any) -> str:
        name = f"policy-{namespace}" + (f"-{suffix}" if suffix else "")
        spec = {
            "reverifyInterval": "10s",
            "namespaces": [namespace],
            "runtime": {"allowedImages": [pod_image]},
            **spec,
        }
        spec = {k: v for k, v in spec.items() if v is not None}  # None: leave the field out
        apply(crds, trust_policy_body(name, ledger, publishers["trusted"], spec))
        if name not in created:
            created.append(name)
        return name

    try:
        yield make
    finally:
        for name in created:
            crds.kubectl("delete", "mtp", name, "--wait=false", check=False)


@pytest.fixture
def policy(make_policy: PolicyFactory) -> str:
    """The default policy of these tests: Enforce, ScaleToZero, no witnesses."""
    return make_policy()


@dataclass(frozen=True)
class RolledOut:
    """A ModelDeployment that became Ready: the object as read then, its model file,
    the model's pinned digest and the ledger index of its registration."""

    md: dict[str, Any]
    path: Path
    digest: str
    index: int

    @property
    def uid(self) -> str:
        return str(self.md["metadata"]["uid"])


class RolloutFactory(Protocol):
    def __call__(
        self,
        name: str,
        policy: str,
        *,
        seed: int,
        publisher: str = "trusted",
        version: str = "1.0.0",
        replicas: int = 1,
    ) -> RolledOut: ...


@pytest.fixture
def rolled_out(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
) -> RolloutFactory:
    """Roll out a registered model the ordinary way: write models/<name>.onnx, register it
    on the ledger signed by `publisher`, apply the ModelDeployment <name> pinning it under
    `policy`, and wait for Ready=True."""

    def roll_out(
        name: str,
        policy: str,
        *,
        seed: int,
        publisher: str = "trusted",
        version: str = "1.0.0",
        replicas: int = 1,
    ) -> RolledOut:
        path, digest = models.make(name, seed=seed)
        index = ledger.register(publishers[publisher], path, "mnist", version)
        body = model_deployment(
            namespace, name, policy, model_uri(path), digest, version=version, replicas=replicas
        )
        apply(crds, body)
        md = wait_condition(crds, namespace, name, "Ready", "True")
        return RolledOut(md, path, digest, index)

    return roll_out


def assert_never_shown(
    cluster: Cluster, md: dict[str, Any], ledger: Ledger, operator: Operator, secret: str
) -> None:
    """A rolled-out ModelDeployment's `secret` appears in none of the places a user reads:
    status, Events, its audit entries, the operator's log."""
    namespace = md["metadata"]["namespace"]
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    audits = ledger.audits(md["metadata"]["uid"])
    assert [(a.action, a.decision) for a in audits] == [("rollout", "allowed")]
    for where, text in (
        ("status", json.dumps(md["status"])),
        ("events", events),
        ("audit entries", json.dumps([a.reasons for a in audits])),
        ("operator log", operator.log()),
    ):
        assert secret not in text, f"the secret appears in the {where}"


# The private model server's bearer token: tests look for it everywhere it must not be.
PRIVATE_TOKEN = "e2e-model-token-5b0c9a7f"


@pytest.fixture
def private_server(cluster: Cluster, models: Models, tmp_path: Path) -> Iterator[PrivateFileServer]:
    """An HTTPS model server with its own CA, serving models.root only with PRIVATE_TOKEN.
    On a real node the pods fetch too: it listens where they reach (the host address)."""
    models.root.mkdir(parents=True, exist_ok=True)
    host = cluster.host_address if cluster.real_pods else "127.0.0.1"
    with PrivateFileServer(models.root, tmp_path, token=PRIVATE_TOKEN, host=host) as server:
        yield server
