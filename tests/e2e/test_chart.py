"""The Helm chart against a real API server: lint, server-side dry run, install, upgrade,
uninstall in the documented order.

Pods on kwok's fake nodes run nothing, so "Ready" there is what kwok reports once the
scheduler bound the pod (and, for the ledger, once its PersistentVolumeClaim is bound to a
PersistentVolume the test creates, as a cluster without a provisioner needs). Where pods
really run (the real-node mode, kind) the chart runs the modeltrust image loaded into the
node and a provisioner makes the ledger's volume; ledgers and model stores the tests run
here listen on `cluster.host_address`, where pods reach them. Everything the API server
decides is real: schemas, defaults, CEL rules, RBAC objects, Pod Security admission (each
namespace here enforces the "restricted" standard), PVC binding, and garbage collection.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chart.chartlib import (
    CHART,
    LedgerKey,
    documents,
    helm,
    install_values,
    merge,
    witness_secret,
    witness_values,
    write_values,
)
from harness.cluster import Cluster, ClusterError, LocalControlPlane
from harness.image import chart_image_values, image_on_node
from harness.ledger import audit, free_port
from harness.onnx_models import mnist_mlp
from harness.postgres import PostgresServer
from harness.waiting import wait_for
from modeltrust.chain.checkpoint import witness_cosignatures
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import AuditEntry, entry_to_json
from modeltrust.chain.note import NoteVerifier
from modeltrust.chain.signatures import public_key_pem, sign_registration

pytestmark = pytest.mark.slow

KEY_SECRET = "modeltrust-ledger-key"
CRD_NAMES = ("modeldeployments.modeltrust.dev", "modeltrustpolicies.modeltrust.dev")


def apply_crds(cluster: Cluster) -> None:
    """What `helm install` does with crds/ on a cluster that has none yet."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    for name in CRD_NAMES:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


@pytest.fixture(scope="module")
def crds(cluster: Cluster) -> None:
    apply_crds(cluster)


class Release:
    """One chart release in a test namespace, with its key Secret and a PV for the ledger."""

    def __init__(self, cluster: Cluster, namespace: str, tmp_path: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = f"r{uuid.uuid4().hex[:8]}"
        self.fullname = f"{self.name}-modeltrust"
        self.key = LedgerKey.generate(f"{self.name}.ledger.test")
        self.tmp_path = tmp_path
        self.values = install_values(self.key, secret=KEY_SECRET, policy_name=f"{self.name}-policy")
        # The image of the pods an operator makes (kwok's pods run nothing: any name).
        self.pod_image = "registry.example/modeltrust@sha256:" + "e2" * 32
        if not cluster.real_pods:
            # No provisioner with kwok: bind the claim to a PV the test creates. Where pods
            # run (the real node, kind) one is provisioned from the default StorageClass.
            self.values = merge(self.values, {"ledger": {"persistence": {"storageClassName": "-"}}})
        else:
            # Pods really run there: use the modeltrust image the node has (imported into the
            # real node here; built and loaded by the kind script), and keep this release's
            # operator from acting on other tests' namespaces.
            image = image_on_node(cluster)
            pull = "Never" if cluster.local else "IfNotPresent"
            self.pod_image = image
            self.values = merge(
                self.values,
                {
                    "image": chart_image_values(image, pull),
                    "operator": {"watchNamespaces": [f"{self.name}-inert"]},
                },
            )
        self.pv_name = f"{self.name}-ledger-data"

    @property
    def claim(self) -> str:
        return f"data-{self.fullname}-ledger-0"

    def values_file(self, override: dict[str, Any] | None = None) -> Path:
        return write_values(
            self.tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml",
            merge(self.values, override or {}),
        )

    def helm(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--namespace", self.namespace, env=self.cluster.env, timeout=timeout)

    def create_key_secret(self, signer_key: str | None = None) -> None:
        self.cluster.kubectl(
            "create", "secret", "generic", KEY_SECRET, "-n", self.namespace,
            f"--from-literal=signing-key={signer_key or self.key.signer_key}",
        )  # fmt: skip

    def create_volume(self) -> None:
        if self.cluster.real_pods:
            return  # the cluster's provisioner makes it
        # Pre-bound to the StatefulSet's claim, so no other claim can take it.
        pv = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": self.pv_name, "labels": {"modeltrust.dev/test": self.name}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"/tmp/modeltrust-e2e/{self.pv_name}"},
                "claimRef": {"namespace": self.namespace, "name": self.claim},
            },
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))

    def install(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.helm(
            "install", self.name, str(CHART), "-f", str(self.values_file()),
            "--wait", "--timeout", "180s", *extra,
        )  # fmt: skip

    def cleanup(self) -> None:
        self.helm("uninstall", self.name, "--wait", "--timeout", "60s")
        self.cluster.kubectl("delete", "pv", self.pv_name, "--wait=false", check=False)


@pytest.fixture
def release(cluster: Cluster, namespace: str, tmp_path: Path, crds: None) -> Iterator[Release]:
    # Every pod the chart makes must pass the "restricted" Pod Security Standard.
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    made = Release(cluster, namespace, tmp_path)
    try:
        yield made
    finally:
        made.cleanup()


def get(cluster: Cluster, *args: str) -> Any:
    """`kubectl get -o json` as plain JSON (tests index into it freely)."""
    return cluster.kubectl_json("get", *args)


def test_lint_and_server_side_dry_run(cluster: Cluster, release: Release) -> None:
    lint = helm("lint", "--strict", str(CHART), "-f", str(release.values_file()))
    assert lint.returncode == 0, lint.stdout + lint.stderr

    rendered = release.helm(
        "template", release.name, str(CHART), "-f", str(release.values_file()),
        "--kube-version", cluster.server_version,
        "--set", "networkPolicy.enabled=true",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    kinds = sorted({d["kind"] for d in documents(rendered.stdout)})
    assert "ModelTrustPolicy" in kinds
    assert "NetworkPolicy" in kinds
    assert "ValidatingAdmissionPolicy" in kinds
    assert "ValidatingAdmissionPolicyBinding" in kinds
    dry = release.cluster.kubectl(
        "apply", "--dry-run=server", "-n", release.namespace, "-f", "-",
        input=rendered.stdout, check=False,
    )  # fmt: skip
    assert dry.returncode == 0, f"the API server refused the chart's objects:\n{dry.stderr}"
    assert "created (server dry run)" in dry.stdout


def test_install_refuses_a_missing_or_mismatched_key(release: Release) -> None:
    missing = release.install()
    assert missing.returncode != 0
    assert f'Secret "{KEY_SECRET}" (ledger.signingKey.existingSecret) does not exist' in (
        missing.stderr
    )

    other = LedgerKey.generate(f"{release.name}.ledger.test")
    release.create_key_secret(other.signer_key)
    mismatched = release.install()
    assert mismatched.returncode != 0
    assert "is not the public half of the signing key" in mismatched.stderr
    listed = release.helm("list", "--all", "-q")
    assert release.name not in listed.stdout.split(), "a refused install left a release behind"


def ready_replicas(cluster: Cluster, kind: str, name: str, namespace: str) -> int:
    return int(get(cluster, kind, name, "-n", namespace).get("status", {}).get("readyReplicas", 0))


def test_install_is_ready_and_upgrade_keeps_the_ledger_key_and_volume(
    cluster: Cluster, release: Release
) -> None:
    release.create_key_secret()
    release.create_volume()
    installed = release.install()
    assert installed.returncode == 0, installed.stderr
    assert "Uninstall in this order" in installed.stdout, "NOTES.txt is shown"

    # Every object of the release exists (helm --wait returned, but check what a user sees).
    manifest = release.helm("get", "manifest", release.name)
    assert manifest.returncode == 0, manifest.stderr
    objects = documents(manifest.stdout)
    assert objects
    for obj in objects:
        scope = ["-n", release.namespace] if obj["metadata"].get("namespace") else []
        found = cluster.kubectl("get", obj["kind"], obj["metadata"]["name"], *scope, check=False)
        assert found.returncode == 0, f"{obj['kind']}/{obj['metadata']['name']} is missing"

    ns = release.namespace
    ledger, operator = f"{release.fullname}-ledger", f"{release.fullname}-operator"
    assert ready_replicas(cluster, "statefulset", ledger, ns) == 1
    assert ready_replicas(cluster, "deployment", operator, ns) == 1
    claim = get(cluster, "pvc", release.claim, "-n", ns)
    assert claim["status"]["phase"] == "Bound"
    if not cluster.real_pods:
        assert claim["spec"]["volumeName"] == release.pv_name
    spec = get(cluster, "modeltrustpolicy", f"{release.name}-policy")["spec"]
    assert spec["ledger"]["verifierKey"] == release.key.verifier_key
    assert spec["ledger"]["url"] == f"http://{ledger}.{ns}.svc:8080"
    assert spec["enforcement"] == "Enforce", "the API server applied the CRD's defaults"

    # The API server's own RBAC decisions for the installed service accounts.
    operator_sa = f"system:serviceaccount:{ns}:{operator}"
    ledger_sa = f"system:serviceaccount:{ns}:{ledger}"
    for who, verb, resource, where, allowed in [
        (operator_sa, "watch", "modeldeployments.modeltrust.dev", "-A", "yes"),
        (operator_sa, "patch", "modeldeployments.modeltrust.dev/status", "-A", "yes"),
        (operator_sa, "create", "deployments.apps", "-A", "yes"),
        (operator_sa, "update", "configmaps", f"-n={ns}", "yes"),
        # The pods' proof ConfigMap, written into each ModelDeployment's namespace.
        (operator_sa, "create", "configmaps", "-n=default", "yes"),
        (operator_sa, "update", "configmaps", "-n=default", "no"),
        (operator_sa, "delete", "configmaps", "-n=default", "no"),
        (operator_sa, "delete", "deployments.apps", "-A", "no"),
        (operator_sa, "get", "secrets", f"-n={ns}", "no"),
        (ledger_sa, "create", "tokenreviews.authentication.k8s.io", "", "yes"),
        (ledger_sa, "list", "pods", f"-n={ns}", "no"),
    ]:
        args = ["auth", "can-i", verb, resource, f"--as={who}", *([where] if where else [])]
        answer = cluster.kubectl(*args, check=False).stdout.strip()
        assert answer == allowed, f"kubectl {' '.join(args)} -> {answer!r}, expected {allowed}"

    secret_before = get(cluster, "secret", KEY_SECRET, "-n", ns)
    claim_uid = claim["metadata"]["uid"]
    revision_before = get(cluster, "statefulset", ledger, "-n", ns)["status"]["updateRevision"]

    upgraded = release.helm(
        "upgrade", release.name, str(CHART), "-f", str(release.values_file()),
        "--set", "ledger.resources.requests.cpu=150m", "--wait", "--timeout", "180s",
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr

    secret_after = get(cluster, "secret", KEY_SECRET, "-n", ns)
    assert secret_after["data"] == secret_before["data"], "helm upgrade changed the ledger key"
    assert (
        secret_after["metadata"]["resourceVersion"] == secret_before["metadata"]["resourceVersion"]
    )
    stored = base64.b64decode(secret_after["data"]["signing-key"]).decode()
    assert stored == release.key.signer_key
    claim_after = get(cluster, "pvc", release.claim, "-n", ns)
    assert claim_after["metadata"]["uid"] == claim_uid, "the ledger's volume was replaced"
    sts = get(cluster, "statefulset", ledger, "-n", ns)
    assert sts["status"]["updateRevision"] != revision_before, "the upgrade rolled the ledger"

    def rolled() -> bool:
        status = get(cluster, "statefulset", ledger, "-n", ns)["status"]
        done = status.get("currentRevision") == status["updateRevision"]
        return bool(done and status.get("readyReplicas") == 1)

    wait_for("the upgraded ledger to be Ready", rolled, timeout=120)
    (pod,) = get(
        cluster,
        "pods",
        "-n",
        ns,
        "-l",
        f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=ledger",
    )["items"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [release.claim], "the new ledger pod mounts the same claim"


# --- Storage, checked at template time against the cluster -----------------------------------


def history(release: Release) -> list[dict[str, Any]]:
    listed = release.helm("history", release.name, "-o", "json")
    assert listed.returncode == 0, listed.stderr
    revisions: list[dict[str, Any]] = json.loads(listed.stdout)
    return revisions


def test_upgrade_changing_the_ledgers_storage_is_refused_and_leaves_no_failed_revision(
    cluster: Cluster, release: Release
) -> None:
    """A StatefulSet's volumeClaimTemplates are immutable: without the chart's check such an
    upgrade fails half-way (helm records a failed revision). Then the documented way to give
    the ledger a new size works: orphan-delete the StatefulSet and upgrade."""
    release.create_key_secret()
    release.create_volume()
    installed = release.install("--set", "networkPolicy.enabled=true")
    assert installed.returncode == 0, installed.stderr
    assert "Resizing the ledger's volume" in installed.stdout, "NOTES.txt says how to resize"
    ns, sts = release.namespace, f"{release.fullname}-ledger"

    # The ledger's egress: the API server's addresses as this cluster has them.
    endpoints = get(cluster, "endpointslice", "kubernetes", "-n", "default")
    service = get(cluster, "service", "kubernetes", "-n", "default")
    (rule,) = get(cluster, "networkpolicy", sts, "-n", ns)["spec"]["egress"]
    cidrs = {peer["ipBlock"]["cidr"] for peer in rule["to"]}
    for address in [a for e in endpoints["endpoints"] for a in e["addresses"]]:
        assert f"{address}/32" in cidrs or f"{address}/128" in cidrs
    assert f"{service['spec']['clusterIP']}/32" in cidrs
    ports = {p["port"] for p in rule["ports"]}
    assert {p["port"] for p in endpoints["ports"]} <= ports
    assert 443 in ports

    before = get(cluster, "statefulset", sts, "-n", ns)["metadata"]["resourceVersion"]
    for change, shown in [
        (["--set", "ledger.persistence.size=2Gi"], "size 1Gi -> 2Gi"),
        (["--set", "ledger.persistence.storageClassName=fast"], '-> "fast"'),
        (["--set", "ledger.persistence.accessModes={ReadWriteOncePod}"], "accessModes"),
    ]:
        refused = release.helm(
            "upgrade", release.name, str(CHART), "-f", str(release.values_file()),
            "--set", "networkPolicy.enabled=true", *change, "--wait", "--timeout", "60s",
        )  # fmt: skip
        assert refused.returncode != 0, f"{change} was accepted"
        assert "ledger.persistence cannot change with helm upgrade" in refused.stderr
        assert shown in refused.stderr, refused.stderr
        assert "--cascade=orphan" in refused.stderr, "the message says how to resize"
    assert [r["status"] for r in history(release)] == ["deployed"], (
        "a refused upgrade left a revision"
    )
    assert get(cluster, "statefulset", sts, "-n", ns)["metadata"]["resourceVersion"] == before

    # The same size spelled differently is no change (the API server stores "1Gi").
    same = release.helm(
        "upgrade", release.name, str(CHART), "-f", str(release.values_file()),
        "--set", "networkPolicy.enabled=true", "--set", "ledger.persistence.size=1024Mi",
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    assert same.returncode == 0, same.stderr

    # docs/install.md, "Resizing the ledger's volume": (the claim is expanded first where its
    # StorageClass allows it; kwok's hand-made PV has no class) orphan-delete, then upgrade.
    claim_uid = get(cluster, "pvc", release.claim, "-n", ns)["metadata"]["uid"]
    cluster.kubectl("delete", "statefulset", sts, "-n", ns, "--cascade=orphan")
    resized = release.helm(
        "upgrade", release.name, str(CHART), "-f", str(release.values_file()),
        "--set", "networkPolicy.enabled=true", "--set", "ledger.persistence.size=2Gi",
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    assert resized.returncode == 0, resized.stderr
    (template,) = get(cluster, "statefulset", sts, "-n", ns)["spec"]["volumeClaimTemplates"]
    assert template["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert get(cluster, "pvc", release.claim, "-n", ns)["metadata"]["uid"] == claim_uid
    wait_for(
        "the ledger to be Ready again",
        lambda: ready_replicas(cluster, "statefulset", sts, ns) == 1,
        120,
    )
    statuses = [r["status"] for r in history(release)]
    assert "failed" not in statuses, statuses


def default_storage_classes(cluster: Cluster) -> list[str]:
    classes = get(cluster, "storageclass")["items"]
    flag = "storageclass.kubernetes.io/is-default-class"
    return [
        c["metadata"]["name"]
        for c in classes
        if (c["metadata"].get("annotations") or {}).get(flag) == "true"
    ]


def test_install_without_a_default_storage_class_is_refused_up_front(
    cluster: Cluster, release: Release
) -> None:
    """With no storageClassName the ledger's claim needs the cluster's default StorageClass;
    without one `helm install --wait` used to wait out its whole timeout on a Pending claim."""
    release.create_key_secret()
    release.values = merge(release.values, {"ledger": {"persistence": {"storageClassName": ""}}})
    values = str(release.values_file())

    def install_dry_run() -> subprocess.CompletedProcess[str]:
        # --dry-run=server: lookups see the cluster, nothing is created.
        return release.helm(
            "install", release.name, str(CHART), "-f", values, "--dry-run=server",
            "--timeout", "60s",
        )  # fmt: skip

    if default_storage_classes(cluster):
        # A cluster with a default class (kind, the real-node mode): nothing to refuse.
        accepted = install_dry_run()
        assert accepted.returncode == 0, accepted.stderr
        return
    name = f"{release.name}-class"
    storage_class = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "example.com/none",
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(storage_class))
    try:
        refused = install_dry_run()
        assert refused.returncode != 0
        assert "this cluster has no default StorageClass" in refused.stderr, refused.stderr
        assert "ledger.persistence.storageClassName" in refused.stderr
        assert name in refused.stderr, "the message names the classes there are"
        started = time.monotonic()
        real = release.install()  # --wait: refused at once, not after its timeout
        assert real.returncode != 0
        assert "this cluster has no default StorageClass" in real.stderr
        assert time.monotonic() - started < 60
        listed = release.helm("list", "--all", "-q")
        assert release.name not in listed.stdout.split(), "a refused install left a release"
        # Naming a class, or making one the default, is what the message says to do.
        named = release.helm(
            "install", release.name, str(CHART), "-f", values, "--dry-run=server",
            "--set", f"ledger.persistence.storageClassName={name}",
        )  # fmt: skip
        assert named.returncode == 0, named.stderr
        cluster.kubectl(
            "annotate", "storageclass", name, "storageclass.kubernetes.io/is-default-class=true"
        )
        accepted = install_dry_run()
        assert accepted.returncode == 0, accepted.stderr
    finally:
        cluster.kubectl("delete", "storageclass", name, "--wait=false", check=False)


# --- Uninstall in the documented order ------------------------------------------------------
# The CRDs are cluster-wide and deleting them removes every ModelDeployment, so this runs on
# a private control plane of its own when the session's cluster is the local one; on a cluster
# KUBECONFIG names (kind) it uses that cluster and puts the CRDs back afterwards.

AUDIT_TOKEN = "chart-e2e-audit-token"
MODELTRUST = Path(sys.executable).with_name("modeltrust")


@pytest.fixture
def uninstall_cluster(cluster: Cluster) -> Iterator[Cluster]:
    if not cluster.local:
        yield cluster
        apply_crds(cluster)  # what the test deleted, for the tests after it
        return
    plane = LocalControlPlane(
        name=f"chart-{os.getpid()}", workdir=Path(tempfile.mkdtemp(prefix="modeltrust-chart-"))
    )
    try:
        started = plane.up()
    except ClusterError as exc:
        pytest.fail(f"the private control plane did not start: {exc}", pytrace=False)
    try:
        apply_crds(started)
        yield started
    finally:
        plane.down()
        shutil.rmtree(plane.workdir, ignore_errors=True)


class LocalProcess:
    """A process of ours (ledger, operator) with its log, stopped with SIGTERM then SIGKILL."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def start_ledger(release: Release, port: int, auth: list[str] | None = None) -> LocalProcess:
    """`modeltrust ledger serve` with the release's key, as the chart's StatefulSet runs it,
    on the cluster's host address (pods reach it there); audit writers authenticate with
    `auth` arguments, else with a static token."""
    host = release.cluster.host_address
    work = release.tmp_path / "ledger"
    work.mkdir()
    (work / "signer.key").write_text(release.key.signer_key + "\n")
    (work / "publishers.pem").write_text(release.values["policy"]["publishers"][0]["publicKey"])
    (work / "tokens").write_text(AUDIT_TOKEN + "\n")
    ledger = LocalProcess(
        [str(MODELTRUST), "ledger", "serve", "--db", str(work / "ledger.db"),
         "--key", str(work / "signer.key"), "--origin", release.key.verifier_key.split("+")[0],
         "--publishers", str(work / "publishers.pem"), "--listen", f"{host}:{port}",
         *(auth if auth is not None else ["--static-tokens", str(work / "tokens")])],
        work / "ledger.log",
    )  # fmt: skip

    def serving() -> bool:
        if ledger.proc.poll() is not None:
            raise AssertionError(f"the ledger exited:\n{ledger.tail()}")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for("the ledger to serve", serving, timeout=30)
    return ledger


def test_uninstall_in_the_documented_order_leaves_nothing_stuck(
    uninstall_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = uninstall_cluster
    namespace = f"mt-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(namespace)
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    release = Release(cluster, namespace, tmp_path)
    host = cluster.host_address
    port = free_port(host)
    # Pods on fake nodes run nothing: the ledger and the operator run here, as local processes
    # the in-cluster objects stand for, and the policy points at the local ledger.
    release.values = merge(release.values, {"policy": {"ledgerUrl": f"http://{host}:{port}"}})
    release.create_key_secret()
    release.create_volume()
    ledger = start_ledger(release, port)
    operator: LocalProcess | None = None
    try:
        installed = release.install()
        assert installed.returncode == 0, installed.stderr
        manifest = documents(release.helm("get", "manifest", release.name).stdout)

        operator = LocalProcess(
            [sys.executable, "-m", "modeltrust.operator", "-n", namespace, "--log-format", "plain"],
            tmp_path / "operator.log",
            env={**cluster.env, "MODELTRUST_NAMESPACE": namespace,
                 "MODELTRUST_LEDGER_TOKEN": AUDIT_TOKEN, "MODELTRUST_DELETE_AUDIT_RETRIES": "2"},
        )  # fmt: skip
        model = {
            "apiVersion": "modeltrust.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "unsigned-model", "namespace": namespace},
            "spec": {
                "model": {"name": "mnist", "version": "1", "digest": "sha256:" + "0" * 64,
                          "uri": f"http://127.0.0.1:{free_port()}/mnist.onnx"},
                "policy": f"{release.name}-policy",
            },
        }  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(model))

        def handled() -> bool:
            md = get(cluster, "modeldeployment", "unsigned-model", "-n", namespace)
            conditions = md.get("status", {}).get("conditions", [])
            return "modeltrust.dev/finalizer" in md["metadata"].get("finalizers", []) and bool(
                conditions
            )

        wait_for(f"the operator to take the ModelDeployment\n{operator.tail()}", handled, 90)
        uid = get(cluster, "modeldeployment", "unsigned-model", "-n", namespace)["metadata"]["uid"]

        # a. ModelDeployments first, while the operator runs: it audits and lets go.
        deleted = cluster.kubectl(
            "delete", "modeldeployments", "--all", "-n", namespace, "--wait", "--timeout=90s",
            check=False, timeout=120,
        )  # fmt: skip
        assert deleted.returncode == 0, f"{deleted.stderr}\n{operator.tail()}"
        with LedgerClient(f"http://{host}:{port}", verifier_key=release.key.verifier_key) as client:
            trail = [e.entry for e in client.audit_trail(uid=uid)]
        actions = [e.action for e in trail if isinstance(e, AuditEntry)]
        assert "delete" in actions, f"the deletion was not audited: {actions}"

        # b. The release (in a real cluster this stops the operator; here we stop it).
        uninstalled = release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
        assert uninstalled.returncode == 0, uninstalled.stderr
        operator.stop()
        for obj in manifest:
            scope = ["-n", namespace] if obj["metadata"].get("namespace") else []
            left = cluster.kubectl("get", obj["kind"], obj["metadata"]["name"], *scope, check=False)
            assert left.returncode != 0, (
                f"{obj['kind']}/{obj['metadata']['name']} outlived uninstall"
            )
        assert get(cluster, "pvc", release.claim, "-n", namespace)["status"]["phase"] == "Bound", (
            "the ledger's volume (the audit record) is kept"
        )
        assert get(cluster, "secret", KEY_SECRET, "-n", namespace)["data"], "the key is kept"

        # c. The CRDs: nothing holds them.
        crd = cluster.kubectl(
            "delete", "crd", *CRD_NAMES, "--wait", "--timeout=60s", check=False, timeout=90
        )
        assert crd.returncode == 0, crd.stderr
        assert cluster.kubectl("get", "crd", CRD_NAMES[0], check=False).returncode != 0
    finally:
        if operator is not None:
            operator.stop()
        ledger.stop()
        release.cleanup()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- The operator's ledger token, reviewed by the real API server ---------------------------


def rendered(release: Release, kind: str, suffix: str) -> dict[str, Any]:
    """One object of the installed release's manifest (what helm sent to the API server)."""
    manifest = release.helm("get", "manifest", release.name)
    assert manifest.returncode == 0, manifest.stderr
    (found,) = [
        d
        for d in documents(manifest.stdout)
        if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)
    ]
    return found


def service_account_token(cluster: Cluster, namespace: str, account: str, *args: str) -> str:
    """A token the API server issues for `account` (`kubectl create token`), as a pod gets."""
    return cluster.kubectl("create", "token", account, "-n", namespace, *args).stdout.strip()


def api_endpoint(cluster: Cluster, workdir: Path) -> tuple[str, Path]:
    """The API server's URL and a file with its CA bundle, from the current kubeconfig."""
    config: Any = cluster.kubectl_json("config", "view", "--raw", "--minify")
    (entry,) = config["clusters"]
    server: dict[str, str] = entry["cluster"]
    ca = workdir / "apiserver-ca.crt"
    if "certificate-authority-data" in server:
        ca.write_bytes(base64.b64decode(server["certificate-authority-data"]))
    else:
        shutil.copy(server["certificate-authority"], ca)
    return server["server"], ca


def tokenreview_args(release: Release, cluster: Cluster) -> list[str]:
    """The chart's own TokenReview arguments for the ledger, plus what a pod would have
    in-cluster (API URL, CA, the ledger service account's token) for a local process."""
    (container,) = rendered(release, "StatefulSet", "-ledger")["spec"]["template"]["spec"][
        "containers"
    ]
    chart_args = [a for a in container["args"] if a.startswith("--tokenreview-")]
    url, ca = api_endpoint(cluster, release.tmp_path)
    credentials = release.tmp_path / "ledger-sa-token"
    ledger_sa = f"{release.fullname}-ledger"
    credentials.write_text(service_account_token(cluster, release.namespace, ledger_sa))
    return [
        *chart_args,
        f"--tokenreview-url={url}",
        f"--tokenreview-ca={ca}",
        f"--tokenreview-credentials={credentials}",
    ]


def operator_ledger_token(release: Release) -> str:
    """What the kubelet projects into the operator pod for the ledger (audience, lifetime)."""
    pod = rendered(release, "Deployment", "-operator")["spec"]["template"]["spec"]
    (source,) = next(v for v in pod["volumes"] if v["name"] == "ledger-token")["projected"][
        "sources"
    ]
    projected = source["serviceAccountToken"]
    return service_account_token(
        release.cluster, release.namespace, f"{release.fullname}-operator",
        "--audience", projected["audience"], "--duration", f"{projected['expirationSeconds']}s",
    )  # fmt: skip


def post_audit(url: str, token: str, uid: str) -> tuple[int, str]:
    entry = audit(1, uid=uid, key=uid)
    request = urllib.request.Request(  # noqa: S310 -- loopback
        url + "/v1/entries",
        data=json.dumps(entry_to_json(entry)).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 -- loopback
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_ledger_accepts_the_operators_ledger_token_and_never_its_api_token(
    cluster: Cluster, release: Release
) -> None:
    url = f"http://{cluster.host_address}:{free_port(cluster.host_address)}"
    port = int(url.rsplit(":", 1)[1])
    release.values = merge(release.values, {"policy": {"ledgerUrl": url}})
    release.create_key_secret()
    release.create_volume()
    installed = release.install()
    assert installed.returncode == 0, installed.stderr
    ledger = start_ledger(release, port, tokenreview_args(release, cluster))
    try:
        operator_sa = f"{release.fullname}-operator"
        api_token = service_account_token(cluster, release.namespace, operator_sa)
        status, body = post_audit(url, api_token, "api-token")
        assert status == 401, f"the operator's API token was accepted: {status} {body}"
        status, body = post_audit(url, operator_ledger_token(release), "ledger-token")
        assert status == 201, f"{status} {body}\n{ledger.tail()}"
        # Another account's token for the same audience authenticates but may not write.
        ledger_sa_token = service_account_token(
            cluster, release.namespace, f"{release.fullname}-ledger",
            "--audience", "modeltrust-ledger",
        )  # fmt: skip
        status, body = post_audit(url, ledger_sa_token, "other-account")
        assert status == 403, f"{status} {body}"
    finally:
        ledger.stop()


# --- The operator with the chart's own account, through a verified rollout ------------------


def service_account_kubeconfig(cluster: Cluster, token: str, workdir: Path) -> Path:
    """A kubeconfig that authenticates as a service account, as the pod's automounted token."""
    server, ca = api_endpoint(cluster, workdir)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}],
        "current-context": "sa",
    }
    path = workdir / "operator-sa.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def model_files(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP (the model store) where pods reach it, and its URL."""
    root = tmp_path / "models"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((cluster.host_address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://{cluster.host_address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in md.get("status", {}).get("conditions", []) if c.get("type") == kind]
    return found[0] if found else {}


def test_operator_with_the_charts_account_rolls_out_a_verified_model(
    cluster: Cluster, release: Release, model_files: tuple[Path, str]
) -> None:
    """The chart's RBAC and ledger token, exercised by the real operator: an Enforce rollout
    into another namespace writes the pods' proof ConfigMap there, and the audit entries
    reach the ledger only through the audience-bound token."""
    publisher = Ed25519PrivateKey.generate()
    ledger_url = f"http://{cluster.host_address}:{free_port(cluster.host_address)}"
    port = int(ledger_url.rsplit(":", 1)[1])
    models_ns = f"{release.namespace}-models"
    release.values = merge(
        release.values,
        {
            "policy": {
                "ledgerUrl": ledger_url,
                "publishers": [{"name": "acme-ml", "publicKey": public_key_pem(
                    publisher.public_key()).decode()}],
            },
            # On kind the chart's own operator pod runs: keep it on a namespace of its own.
            "operator": {"watchNamespaces": [f"{release.name}-inert"]},
        },
    )  # fmt: skip
    release.create_key_secret()
    release.create_volume()
    installed = release.install()
    assert installed.returncode == 0, installed.stderr
    cluster.create_namespace(models_ns)
    ledger = start_ledger(release, port, tokenreview_args(release, cluster))
    operator: LocalProcess | None = None
    try:
        root, base_url = model_files
        model = mnist_mlp(root / "mnist.onnx", seed=7)
        data = model.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with LedgerClient(ledger_url, verifier_key=release.key.verifier_key) as client:
            client.append(
                sign_registration(publisher, name="mnist", version="1", digest=digest,
                                  size=len(data))
            )  # fmt: skip

        operator_sa = f"{release.fullname}-operator"
        api_token = service_account_token(cluster, release.namespace, operator_sa)
        ledger_token = release.tmp_path / "ledger-token"
        ledger_token.write_text(operator_ledger_token(release))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELTRUST_LEDGER_TOKEN")}
        env.update(
            KUBECONFIG=str(service_account_kubeconfig(cluster, api_token, release.tmp_path)),
            MODELTRUST_NAMESPACE=release.namespace,
            MODELTRUST_LEDGER_TOKEN_FILE=str(ledger_token),
            MODELTRUST_IMAGE=release.pod_image,
        )
        operator = LocalProcess(
            [sys.executable, "-m", "modeltrust.operator", "-n", models_ns, "--log-format",
             "plain"],
            release.tmp_path / "operator.log",
            env=env,
        )  # fmt: skip
        body = {
            "apiVersion": "modeltrust.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "mnist", "namespace": models_ns},
            "spec": {
                "model": {"name": "mnist", "version": "1", "digest": digest,
                          "uri": f"{base_url}/mnist.onnx"},
                "policy": f"{release.name}-policy",
            },
        }  # fmt: skip
        cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
        assert operator is not None
        running = operator

        def verified() -> dict[str, Any] | None:
            md: dict[str, Any] = get(cluster, "modeldeployment", "mnist", "-n", models_ns)
            return md if condition(md, "Verified").get("status") == "True" else None

        try:
            md = wait_for("the rollout to be verified", verified, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{running.tail()}") from None
        assert md is not None
        proof = md["status"]["provenance"]["configMap"]
        config_map = get(cluster, "configmap", proof, "-n", models_ns)
        assert config_map["immutable"] is True
        assert config_map["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
        deployment = get(cluster, "deployment", "mnist", "-n", models_ns)
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]

        with LedgerClient(ledger_url, verifier_key=release.key.verifier_key) as client:
            trail = [e.entry for e in client.audit_trail(uid=md["metadata"]["uid"])]
        assert [e.action for e in trail if isinstance(e, AuditEntry)], "no audit entry"
        # Deletion: the operator audits it and removes its finalizer (a JSON patch).
        deleted = cluster.kubectl(
            "delete", "modeldeployment", "mnist", "-n", models_ns, "--wait", "--timeout=90s",
            check=False, timeout=120,
        )  # fmt: skip
        assert deleted.returncode == 0, f"{deleted.stderr}\n{running.tail()}"
        with LedgerClient(ledger_url, verifier_key=release.key.verifier_key) as client:
            trail = [e.entry for e in client.audit_trail(uid=md["metadata"]["uid"])]
        assert "delete" in [e.action for e in trail if isinstance(e, AuditEntry)]
        # Nothing the operator tried was forbidden (kopf only warns about some of it).
        # As words: a bare "403" also turns up inside checkpoint roots and random ports.
        operator_log = running.log.read_text()
        refusals = re.findall(r"\b(?:Forbidden|Not enough permissions|403)\b", operator_log)
        assert not refusals, operator_log[-3000:]
    finally:
        if operator is not None:
            operator.stop()
        ledger.stop()
        cluster.kubectl("delete", "namespace", models_ns, "--wait=false", check=False)


# --- High availability: witnesses and standby ledgers (docs/install.md, "High availability") ----


WITNESSES = ("a", "b")
DATABASE_SECRET = "ledger-db"


def witness_claim(release: Release, name: str) -> str:
    return f"data-{release.fullname}-witness-{name}-0"


def create_bound_volume(release: Release, claim: str) -> str:
    """A PV pre-bound to `claim` (kwok has no provisioner); returns its name."""
    pv_name = f"{release.name}-{claim}"[:63]
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {"modeltrust.dev/test": release.name}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": f"/tmp/modeltrust-e2e/{pv_name}"},
            "claimRef": {"namespace": release.namespace, "name": claim},
        },
    }
    release.cluster.kubectl("apply", "-f", "-", input=json.dumps(pv))
    return pv_name


def one_ready(cluster: Cluster, statefulset: str, namespace: str) -> Callable[[], bool]:
    return lambda: ready_replicas(cluster, "statefulset", statefulset, namespace) == 1


def service_get(cluster: Cluster, namespace: str, service: str, port: int, path: str) -> str:
    """GET a path of a Service through the API server's service proxy (no port-forward)."""
    proxy = f"/api/v1/namespaces/{namespace}/services/http:{service}:{port}/proxy"
    result = cluster.kubectl("get", "--raw", proxy + path, check=False)
    return result.stdout if result.returncode == 0 else ""


def test_install_with_two_witnesses_and_standby_ledgers(cluster: Cluster, release: Release) -> None:
    """What a user does and checks: witness keys made with `ledger keygen --witness` and put
    in Secrets, two witnesses, a quorum of both. On kwok's fake nodes nothing runs: there the
    ledger also goes on PostgreSQL (its URL in a Secret) with a standby, and this checks
    what the API server decides (schemas, the policy's CEL rules, Pod Security admission of
    the witness pods, PDBs, NetworkPolicies, claims bound) and what the chart checks against
    the cluster at install time. Where pods run (MODELTRUST_CLUSTER=real) the ledger stays
    on SQLite (no PostgreSQL the pods reach here) and the witnesses really copy and cosign:
    the ledger's checkpoint carries both cosignatures, each witness serves the read API, and
    the cosignatures verify with the keys the policy pins and are fresh enough for it."""
    ns = release.namespace
    real = cluster.real_pods
    keys = {n: LedgerKey.generate_witness(f"witness-{n}.{release.name}.test") for n in WITNESSES}
    ha: dict[str, Any] = {
        "policy": {"witnessQuorum": 2, "maxCosignatureAge": "10m"},
        "networkPolicy": {"enabled": not real},
    }
    if not real:
        ha["ledger"] = {"replicas": 2, "database": {"existingSecret": DATABASE_SECRET}}
        ha["witness"] = {"persistence": {"storageClassName": "-"}}
    release.values = merge(release.values, merge(witness_values(keys), ha))
    release.create_key_secret()

    def create_witness_secret(name: str, signer_key: str) -> None:
        cluster.kubectl(
            "create", "secret", "generic", witness_secret(name), "-n", ns,
            f"--from-literal=witness-key={signer_key}",
        )  # fmt: skip

    # The chart checks the witness Secrets before it installs anything.
    missing = release.install()
    assert missing.returncode != 0
    assert f'Secret "{witness_secret("a")}" (ledger.witnesses[0].signingKey.existingSecret)' in (
        missing.stderr
    )
    assert "does not exist" in missing.stderr
    create_witness_secret("a", keys["a"].signer_key)
    other = LedgerKey.generate_witness(f"witness-b.{release.name}.test")
    create_witness_secret("b", other.signer_key)
    mismatched = release.install()
    assert mismatched.returncode != 0
    assert "ledger.witnesses[1].verifierKey" in mismatched.stderr
    assert "is not the public half of the key" in mismatched.stderr
    listed = release.helm("list", "--all", "-q")
    assert release.name not in listed.stdout.split(), "a refused install left a release behind"
    cluster.kubectl("delete", "secret", witness_secret("b"), "-n", ns)
    create_witness_secret("b", keys["b"].signer_key)
    url = "postgresql://ledger:s3cret-e2e@db.invalid:5432/ledger?sslmode=require"
    pvs: list[str] = []
    if not real:
        cluster.kubectl(
            "create", "secret", "generic", DATABASE_SECRET, "-n", ns, f"--from-literal=url={url}"
        )
        pvs = [create_bound_volume(release, witness_claim(release, n)) for n in WITNESSES]
    else:
        release.create_volume()
    try:
        installed = release.install()
        assert installed.returncode == 0, installed.stderr
        assert "serves the ledger's read API" in installed.stdout, "NOTES.txt names the witnesses"
        manifest = release.helm("get", "manifest", release.name)
        assert manifest.returncode == 0, manifest.stderr
        for key in keys.values():
            assert key.signer_key not in manifest.stdout, "a witness key is in the release"

        ledger = f"{release.fullname}-ledger"
        kind = "statefulset" if real else "deployment"
        workload = get(cluster, kind, ledger, "-n", ns)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        for name, key in keys.items():
            service = f"{release.fullname}-witness-{name}"
            at = args.index(f"http://{service}.{ns}.svc:8081")
            assert args[at - 1 : at + 2] == ["--witness", f"http://{service}.{ns}.svc:8081",
                                             key.verifier_key]  # fmt: skip
            # Each witness: one Ready pod, its claim bound, its Service.
            wait_for(f"witness {name} to be Ready", one_ready(cluster, service, ns), timeout=180)
            claim = get(cluster, "pvc", witness_claim(release, name), "-n", ns)
            assert claim["status"]["phase"] == "Bound"
            assert get(cluster, "service", service, "-n", ns)["spec"]["ports"][0]["port"] == 8081
            (pod,) = get(
                cluster, "pods", "-n", ns, "-l",
                f"app.kubernetes.io/instance={release.name},modeltrust.dev/witness={name}",
            )["items"]  # fmt: skip
            volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "signing-key")
            assert volume["secret"]["secretName"] == witness_secret(name)

        policy = get(cluster, "modeltrustpolicy", f"{release.name}-policy")["spec"]["ledger"]
        assert policy["witnesses"] == [keys[n].verifier_key for n in WITNESSES]
        assert (policy["witnessQuorum"], policy["maxCosignatureAge"]) == (2, "10m")
        pdb = get(cluster, "pdb", f"{release.fullname}-witnesses", "-n", ns)
        assert pdb["spec"]["maxUnavailable"] == 1

        def counted() -> bool:
            status = get(cluster, "pdb", f"{release.fullname}-witnesses", "-n", ns)["status"]
            return bool(status.get("expectedPods") == 2)

        wait_for("the witnesses' PodDisruptionBudget to count both witnesses", counted, timeout=60)

        if not real:
            # PostgreSQL: a Deployment of two, no ledger volume, the URL only in the Secret.
            assert workload["spec"]["replicas"] == 2
            assert cluster.kubectl("get", "statefulset", ledger, "-n", ns, check=False).returncode
            assert container["env"] == [
                {
                    "name": "MODELTRUST_LEDGER_DATABASE_URL",
                    "valueFrom": {"secretKeyRef": {"name": DATABASE_SECRET, "key": "url"}},
                }
            ]
            assert "s3cret-e2e" not in manifest.stdout, "the database password is in the release"
            assert not [
                c for c in get(cluster, "pvc", "-n", ns)["items"]
                if c["metadata"]["name"].startswith(f"data-{ledger}")
            ], "no ledger volume on PostgreSQL"  # fmt: skip
            policies = {
                p["metadata"]["name"] for p in get(cluster, "networkpolicy", "-n", ns)["items"]
            }
            assert f"{release.fullname}-witnesses" in policies
            return

        # Real pods: the operator (watching only a namespace that does not exist) reports on
        # the cluster-scoped policy at once, with the quorum it understood...
        reported = wait_for_policy_status(cluster, release, timeout=30)
        valid = policy_condition(reported, "Valid")
        assert valid["status"] == "True", reported["status"]
        assert "2 of 2 witness cosignature(s) required" in valid["message"], valid
        # ...the ledger publishes checkpoints cosigned by both witnesses...
        names = [f"witness-{n}.{release.name}.test" for n in WITNESSES]

        def cosigned() -> bool:
            note = service_get(cluster, ns, ledger, 8080, "/v1/checkpoint")
            return all(f"\u2014 {name} " in note for name in names)

        wait_for("the ledger's checkpoint to carry both cosignatures", cosigned, timeout=120)
        # ...each witness serves the read API over its own verified copy...
        for n, name in zip(WITNESSES, names, strict=True):
            service = f"{release.fullname}-witness-{n}"
            state = json.loads(service_get(cluster, ns, service, 8081, "/v1/witness"))
            assert state["split_view"] is False
            assert state["cosigned"]["tree_size"] == state["copy_tree_size"]
            note = service_get(cluster, ns, service, 8081, "/v1/checkpoint")
            assert f"\u2014 {name} " in note, "the witness serves its own cosigned checkpoint"
            keys_doc = json.loads(service_get(cluster, ns, service, 8081, "/v1/keys"))
            assert keys_doc["checkpoint_verifier_key"] == release.key.verifier_key
            evidence = json.loads(service_get(cluster, ns, service, 8081, "/v1/witness/evidence"))
            assert evidence["evidence"] == []

        # ...and the cosignatures on the ledger's checkpoint verify with the keys the policy
        # pins, and are as fresh as its maxCosignatureAge asks.
        note = service_get(cluster, ns, ledger, 8080, "/v1/checkpoint")
        verifiers = [NoteVerifier.from_verifier_key(k) for k in policy["witnesses"]]
        cosignatures = witness_cosignatures(note, verifiers)
        assert sorted(c.name for c in cosignatures) == names
        assert all(
            c.timestamp is not None and time.time() - c.timestamp < 600 for c in cosignatures
        )

        # ...and the operator verifies them too: LedgerReachable is True by its next check of
        # the ledger (every 60 s; the first may have come before both witnesses cosigned).
        def verified() -> dict[str, Any] | None:
            policy = get(cluster, "modeltrustpolicy", f"{release.name}-policy")
            reachable = policy_condition(policy, "LedgerReachable")
            return reachable if reachable.get("status") == "True" else None

        try:
            reachable = wait_for("LedgerReachable with the quorum", verified, timeout=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{operator_report(cluster, release)}") from exc
        assert reachable["reason"] == "CheckpointVerified", reachable
    finally:
        release.cleanup()
        for pv in pvs:
            cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)


def ledger_pods(cluster: Cluster, release: Release) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=ledger"
    pods: list[dict[str, Any]] = get(cluster, "pods", "-n", release.namespace, "-l", selector)[
        "items"
    ]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.mark.real_pods
def test_standby_ledgers_on_postgresql_take_over(real_cluster: Cluster, tmp_path: Path) -> None:
    """The chart's PostgreSQL mode with real pods: two ledger pods on one database, the
    URL (with a password) only in a Secret. One is the writer and Ready, the other a standby
    that is not Ready and is not restarted (the chart gives it no liveness probe); deleting
    the writer's pod makes the standby the writer; a `helm upgrade` that rolls the pods
    finishes (its rollout does not wait for standbys) and leaves a writer."""
    cluster = real_cluster
    apply_crds(cluster)
    ns = f"mt-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl(
        "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    release = Release(cluster, ns, tmp_path)
    workdir = Path(tempfile.mkdtemp(prefix="mt-pg-"))
    server = PostgresServer(
        workdir, listen=("127.0.0.1", cluster.host_address), password_from=("0.0.0.0/0",)
    )
    password = uuid.uuid4().hex
    try:
        server.start()
        admin = server.create_database()
        database = admin.rsplit("/", 1)[1]
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(
                psycopg.sql.SQL("CREATE ROLE ledger LOGIN PASSWORD {}").format(
                    psycopg.sql.Literal(password)
                )
            )
            db.execute(
                psycopg.sql.SQL("ALTER DATABASE {} OWNER TO ledger").format(
                    psycopg.sql.Identifier(database)
                )
            )
            db.execute("GRANT ALL ON SCHEMA public TO ledger")
        url = f"postgresql://ledger:{password}@{cluster.host_address}:{server.port}/{database}"
        cluster.kubectl(
            "create", "secret", "generic", DATABASE_SECRET, "-n", ns, f"--from-literal=url={url}"
        )
        release.create_key_secret()
        release.values = merge(
            release.values,
            {
                "ledger": {
                    "replicas": 2,
                    "database": {"existingSecret": DATABASE_SECRET, "writerLease": 2},
                }
            },
        )
        installed = release.install()
        assert installed.returncode == 0, installed.stderr
        manifest = release.helm("get", "manifest", release.name).stdout
        assert password not in manifest, "the database password is in the release"
        ledger = f"{release.fullname}-ledger"

        def one_writer() -> str:
            pods = ledger_pods(cluster, release)
            ready = [str(p["metadata"]["name"]) for p in pods if is_ready(p)]
            running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
            if len(pods) == 2 and len(running) == 2 and len(ready) == 1:
                return ready[0]
            return ""

        writer = wait_for("one writer Ready and one standby running", one_writer, timeout=180)
        checkpoint = service_get(cluster, ns, ledger, 8080, "/v1/checkpoint")
        assert checkpoint.startswith(f"{release.name}.ledger.test\n"), checkpoint
        # The standby waits without being restarted: with a liveness probe on its port (which
        # it does not open) the kubelet would have killed it after about 70 s.
        time.sleep(80)
        pods = ledger_pods(cluster, release)
        assert one_writer() == writer, "the writer changed while nothing happened"
        for pod in pods:
            restarts = sum(c["restartCount"] for c in pod["status"]["containerStatuses"])
            assert restarts == 0, f"{pod['metadata']['name']} restarted {restarts} times"

        # Delete the writer's pod: the standby takes over within the lease (2 s) plus its
        # start-up audit, and the Service then sends clients to it.
        (standby,) = [p["metadata"]["name"] for p in pods if p["metadata"]["name"] != writer]
        cluster.kubectl("delete", "pod", writer, "-n", ns, "--wait=false")

        def taken_over() -> bool:
            pods = {p["metadata"]["name"]: p for p in ledger_pods(cluster, release)}
            return standby in pods and is_ready(pods[standby])

        wait_for("the standby to become the writer", taken_over, timeout=90)
        wait_for(
            "the ledger Service to answer again",
            lambda: service_get(cluster, ns, ledger, 8080, "/v1/checkpoint").startswith(
                f"{release.name}.ledger.test\n"
            ),
            timeout=60,
        )

        # An upgrade that changes the pod template rolls both pods and finishes.
        upgraded = release.helm(
            "upgrade", release.name, str(CHART), "-f", str(release.values_file()),
            "--set", "ledger.resources.requests.cpu=150m", "--wait", "--timeout", "180s",
        )  # fmt: skip
        assert upgraded.returncode == 0, upgraded.stderr

        def rolled() -> str:
            deploy = get(cluster, "deployment", ledger, "-n", ns)
            status = deploy["status"]
            pods = ledger_pods(cluster, release)
            cpu = {
                p["spec"]["containers"][0]["resources"]["requests"]["cpu"] for p in pods
            }  # fmt: skip
            if status.get("updatedReplicas") == 2 and cpu == {"150m"} and len(pods) == 2:
                return one_writer()
            return ""

        new_writer = wait_for("the upgrade rolled out with a writer", rolled, timeout=180)
        assert new_writer not in (writer, standby), "the writer is a pod of the new template"
    finally:
        release.cleanup()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def policy_condition(policy: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in (policy.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def operator_report(cluster: Cluster, release: Release) -> str:
    """The chart's operator pod as a user would look at it: restarts, describe, log tail."""
    ns = release.namespace
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
    restarts = [
        (p["metadata"]["name"], [c["restartCount"] for c in p["status"]["containerStatuses"]])
        for p in get(cluster, "pods", "-n", ns, "-l", selector)["items"]
    ]
    described = cluster.kubectl("describe", "pods", "-n", ns, "-l", selector, check=False)
    log = cluster.kubectl("logs", "-n", ns, "-l", selector, "--tail=100", check=False)
    return f"restarts: {restarts}\n{described.stdout[-2500:]}\noperator log:\n{log.stdout}"


def wait_for_policy_status(cluster: Cluster, release: Release, timeout: float) -> dict[str, Any]:
    """The chart's policy once the operator wrote its Valid and LedgerReachable conditions."""

    def reported() -> dict[str, Any] | None:
        policy = get(cluster, "modeltrustpolicy", f"{release.name}-policy")
        if policy_condition(policy, "Valid") and policy_condition(policy, "LedgerReachable"):
            return dict(policy)
        return None

    try:
        return wait_for("the operator to write the policy's status", reported, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{operator_report(cluster, release)}") from exc


@pytest.mark.real_pods
def test_operator_reports_on_the_policy_when_no_watched_namespace_exists(
    real_cluster: Cluster, tmp_path: Path
) -> None:
    """The chart's operator in a real pod, told to watch only a namespace that does not exist
    (yet): ModelTrustPolicy is cluster-scoped, so it still writes the chart's policy's status
    (Valid, LedgerReachable) within seconds. It used to say nothing: kopf started no watch
    stream at all, not even for cluster-scoped resources, while none of the namespaces it
    serves existed (every chart test on real pods sets such a namespace)."""
    cluster = real_cluster
    apply_crds(cluster)
    ns = f"mt-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", ns)
    release = Release(cluster, ns, tmp_path)
    assert release.values["operator"]["watchNamespaces"] == [f"{release.name}-inert"]
    assert cluster.kubectl("get", "namespace", f"{release.name}-inert", check=False).returncode
    try:
        release.create_key_secret()
        installed = release.install()
        assert installed.returncode == 0, installed.stderr

        policy = wait_for_policy_status(cluster, release, timeout=45)
        assert policy_condition(policy, "Valid")["status"] == "True", policy["status"]
        # The operator's pod may start before the ledger's answers: then the first check says
        # so, and the next (every 60 s; the witness test waits for it) finds it verified.
        reachable = policy_condition(policy, "LedgerReachable")
        assert (reachable["status"], reachable["reason"]) in {
            ("True", "CheckpointVerified"),
            ("False", "LedgerUnavailable"),
        }, reachable
        # Listing and watching in the namespace that does not exist is no failure (kopf logs
        # and retries transient ones, e.g. a fresh API server's 429, as severity "error").
        report = operator_report(cluster, release)
        assert "Traceback" not in report, report
        assert "Handler 'policy_event' succeeded." in report, report
    finally:
        release.cleanup()
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
