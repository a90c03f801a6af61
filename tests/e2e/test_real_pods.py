"""The chart and verified models on real pods (the `real_cluster` fixture: a kubelet and
containerd running the locally built modeltrust image).

kwok's fake node runs nothing, so there a crash-looping operator still looks Running and
an init container never fetches anything. Here, in order, on one chart release:

- `helm install`: the ledger and operator pods are Running and Ready with no restarts and
  stay so for a minute (helm --wait once passed while the operator crash-looped);
- a signed, registered model: Verified, its pod's `fetch` init container verified digest
  and inclusion proof, and its Service answers what onnxruntime computes locally;
- the bytes at a model's URL swapped after verification: a new pod's `fetch` refuses them,
  the pod never becomes Ready, and the ModelDeployment's status and an Event say so;
- a revocation of a model's digest: its Deployment goes to 0 replicas and its pods go
  within the policy's reverifyInterval plus the operator's timer interval (docs/operator.md);
- `helm upgrade` keeps the ledger's entries and key; `helm uninstall` leaves no pod running
  (the CRDs and the ledger's PVC stay, as docs/install.md documents);
- nothing is left behind: every ModelDeployment is deleted while its operator runs, so no
  namespace stays Terminating on its finalizer.

The tests depend on their order (one release, installed once: a chart install on this
machine takes about a minute); each model test deletes its own ModelDeployment.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chart.chartlib import CHART, LedgerKey, documents, helm, install_values, merge, write_values
from harness.cluster import SUMMARY, Cluster
from harness.image import chart_image_values, image_on_node
from harness.onnx_models import MNIST_FEATURES, mnist_mlp
from harness.waiting import wait_for
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.signatures import public_key_pem, sign_registration, sign_revocation

pytestmark = pytest.mark.real_pods

KEY_SECRET = "modeltrust-ledger-key"
STABLE_SECONDS = 60
# The policy's reverifyInterval (the CRD's minimum) and the operator's timer interval
# (MODELTRUST_TIMER_INTERVAL, default 10 s): a revocation is acted on within their sum
# (docs/operator.md, "Timer"), plus the scale-down itself.
REVERIFY_SECONDS = 10
TIMER_SECONDS = 10
SLACK_SECONDS = 20
# The model server pods' terminationGracePeriodSeconds (the API server's default).
GRACE_SECONDS = 30


@dataclass
class RealRelease:
    cluster: Cluster
    namespace: str
    models: str
    name: str
    key: LedgerKey
    publisher: Ed25519PrivateKey
    store: Path
    store_url: str
    tmp: Path
    values: dict[str, Any] = field(default_factory=dict)
    installed: bool = False

    @property
    def fullname(self) -> str:
        return f"{self.name}-modeltrust"

    @property
    def policy(self) -> str:
        return f"{self.name}-policy"

    def helm(self, *args: str, timeout: float = 420) -> Any:
        return helm(*args, "--namespace", self.namespace, env=self.cluster.env, timeout=timeout)

    def values_file(self) -> Path:
        return write_values(self.tmp / f"values-{uuid.uuid4().hex[:6]}.yaml", self.values)

    def get(self, *args: str) -> Any:
        return self.cluster.kubectl_json("get", *args)

    def ledger_url(self) -> str:
        """The ledger's Service ClusterIP: the host routes the cluster's Service range."""
        service = self.get("service", f"{self.fullname}-ledger", "-n", self.namespace)
        return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"

    def ledger(self) -> LedgerClient:
        return LedgerClient(self.ledger_url(), verifier_key=self.key.verifier_key)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-n", namespace, "-l", selector)["items"]
        return items

    def operator_log(self) -> str:
        return str(
            self.cluster.kubectl(
                "logs", "-n", self.namespace, f"deployment/{self.fullname}-operator", "--tail=400",
                check=False,
            ).stdout
        )  # fmt: skip


def _serve(root: Path, host: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    """The model store: files under `root` over HTTP on the address pods reach the host at."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), functools.partial(Quiet, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


@pytest.fixture(scope="module")
def rel(real_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRelease]:
    cluster = real_cluster
    tmp = tmp_path_factory.mktemp("real-pods")
    name = f"rp{uuid.uuid4().hex[:6]}"
    namespace, models = f"{name}-system", f"{name}-models"
    store = tmp / "models"
    store.mkdir()
    server, store_url = _serve(store, cluster.host_address)
    publisher = Ed25519PrivateKey.generate()
    made = RealRelease(
        cluster, namespace, models, name, LedgerKey.generate(f"{name}.ledger.test"), publisher,
        store, store_url, tmp,
    )  # fmt: skip
    made.values = merge(
        install_values(made.key, secret=KEY_SECRET, policy_name=made.policy),
        {
            # Never: nothing may be pulled; the image must be the one imported.
            "image": chart_image_values(image_on_node(cluster), "Never"),
            # Only this test's models: on a shared cluster other tests run their own operators.
            "operator": {"watchNamespaces": [models]},
            # The writer elected by a Lease: the whole real-pod story runs with it (upgrade
            # included, where the old pod hands the Lease to the new one).
            "ledger": {"writerLease": {"enabled": True}},
            "policy": {
                "publishers": [
                    {
                        "name": "acme-ml",
                        "publicKey": public_key_pem(publisher.public_key()).decode(),
                    }
                ],
                "reverifyInterval": f"{REVERIFY_SECONDS}s",
            },
        },
    )
    for ns in (namespace, models):
        cluster.create_namespace(ns)
        cluster.kubectl(
            "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        )  # fmt: skip
    cluster.kubectl(
        "create", "secret", "generic", KEY_SECRET, "-n", namespace,
        f"--from-literal=signing-key={made.key.signer_key}",
    )  # fmt: skip
    try:
        yield made
    finally:
        # Best effort for a failed run; test_a_run_leaves_nothing_behind checks the clean path.
        cluster.kubectl(
            "delete", "modeldeployments", "--all", "-n", models, "--wait", "--timeout=90s",
            check=False, timeout=120,
        )  # fmt: skip
        if made.installed:
            made.helm("uninstall", name, "--wait", "--timeout", "120s")
        cluster.kubectl("delete", "pvc", "--all", "-n", namespace, "--wait=false", check=False)
        for ns in (models, namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        server.shutdown()
        server.server_close()


@pytest.fixture
def models(rel: RealRelease) -> Iterator[None]:
    """A model test's ModelDeployments are deleted after it even when it fails (while the
    operator runs), so the next test and the uninstall start clean."""
    yield
    rel.cluster.kubectl(
        "delete", "modeldeployments", "--all", "-n", rel.models, "--wait", "--timeout=90s",
        check=False, timeout=120,
    )  # fmt: skip


def _restarts(pod: dict[str, Any]) -> int:
    status = pod.get("status") or {}
    return sum(
        int(c.get("restartCount") or 0)
        for c in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]
    )


def _ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _describe(pods: list[dict[str, Any]]) -> str:
    return "; ".join(
        f"{p['metadata']['name']} phase={p.get('status', {}).get('phase')} ready={_ready(p)} "
        f"restarts={_restarts(p)}"
        for p in pods
    )


def _condition(md: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (md.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


# --- install -------------------------------------------------------------------------------


def test_install_runs_the_ledger_and_operator_ready_with_no_restarts(rel: RealRelease) -> None:
    started = time.monotonic()
    installed = rel.helm(
        "install", rel.name, str(CHART), "-f", str(rel.values_file()), "--wait",
        "--timeout", "300s",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    rel.installed = True
    SUMMARY.append(
        f"real pods: helm install --wait of the chart in {time.monotonic() - started:.0f}s"
    )
    claim = rel.get("pvc", f"data-{rel.fullname}-ledger-0", "-n", rel.namespace)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "standard" or rel.cluster.importer is None

    selector = f"app.kubernetes.io/instance={rel.name}"
    first = {p["metadata"]["uid"] for p in rel.pods(rel.namespace, selector)}
    assert len(first) == 2, _describe(rel.pods(rel.namespace, selector))
    # Running, Ready and never restarted, for a whole minute: helm --wait and `rollout status`
    # count each short life of a crash-looping pod as Ready.
    deadline = time.monotonic() + STABLE_SECONDS
    while True:
        pods = rel.pods(rel.namespace, selector)
        assert {p["metadata"]["uid"] for p in pods} == first, f"pods replaced: {_describe(pods)}"
        for pod in pods:
            assert pod["status"]["phase"] == "Running", _describe(pods)
            assert _ready(pod), _describe(pods)
            assert _restarts(pod) == 0, f"{_describe(pods)}\n{rel.operator_log()[-3000:]}"
        if time.monotonic() > deadline:
            break
        time.sleep(3)
    components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
    assert components == ["ledger", "operator"]
    # The ledger pod holds the writer Lease, renewed within its duration.
    lease = rel.get("lease", f"{rel.fullname}-ledger-writer", "-n", rel.namespace)["spec"]
    assert lease["holderIdentity"].startswith(f"{rel.fullname}-ledger-0/"), lease
    assert lease["leaseDurationSeconds"] == 8
    for component in components:
        log = rel.cluster.kubectl(
            "logs", "-n", rel.namespace, "--tail=-1",
            "-l", f"{selector},app.kubernetes.io/component={component}",
        ).stdout  # fmt: skip
        assert "Traceback" not in log, f"{component} log:\n{log[-4000:]}"
        assert log.strip(), f"the {component} logged nothing"


# --- a verified model ----------------------------------------------------------------------


@dataclass
class Model:
    name: str  # the ModelDeployment's
    path: Path
    digest: str
    url: str


def register(rel: RealRelease, name: str, seed: int) -> Model:
    path = mnist_mlp(rel.store / f"{name}.onnx", seed=seed)
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with rel.ledger() as client:
        client.append(
            sign_registration(
                rel.publisher, name="mnist", version="1", digest=digest, size=len(data)
            )
        )
    return Model(name, path, digest, f"{rel.store_url}/{name}.onnx")


def deploy(rel: RealRelease, model: Model) -> dict[str, Any]:
    """Apply a ModelDeployment of `model` and wait for Verified=True and a Ready pod."""
    body = {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": model.name, "namespace": rel.models},
        "spec": {
            "model": {"name": "mnist", "version": "1", "digest": model.digest, "uri": model.url},
            "policy": rel.policy,
        },
    }
    rel.cluster.kubectl("apply", "-f", "-", input=json.dumps(body))

    def verified() -> dict[str, Any] | None:
        md: dict[str, Any] = rel.get("modeldeployment", model.name, "-n", rel.models)
        return md if _condition(md, "Verified").get("status") == "True" else None

    try:
        md = wait_for(f"{model.name} to be Verified", verified, timeout=180, every=1)
    except AssertionError as exc:
        md = rel.get("modeldeployment", model.name, "-n", rel.models)
        raise AssertionError(
            f"{exc}\nstatus: {json.dumps(md.get('status'))}\n{rel.operator_log()[-3000:]}"
        ) from None
    ready_pod(rel, model.name)
    return md


def model_pods(rel: RealRelease, name: str) -> list[dict[str, Any]]:
    return rel.pods(rel.models, f"app.kubernetes.io/instance={name}")


def ready_pod(rel: RealRelease, name: str, timeout: float = 180) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        pods = [p for p in model_pods(rel, name) if _ready(p)]
        return pods[0] if pods else None

    try:
        return wait_for(f"a Ready pod of {name}", ready, timeout=timeout, every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {_describe(model_pods(rel, name))}") from None


def fetch_log(rel: RealRelease, pod: str, *, previous: bool = False) -> str:
    return str(
        rel.cluster.kubectl(
            "logs", "-n", rel.models, pod, "-c", "fetch", *(["--previous"] if previous else []),
            check=False,
        ).stdout
    )  # fmt: skip


def delete_model(rel: RealRelease, name: str) -> None:
    """Delete while the operator runs: it audits the deletion and releases its finalizer."""
    deleted = rel.cluster.kubectl(
        "delete", "modeldeployment", name, "-n", rel.models, "--wait", "--timeout=90s",
        check=False, timeout=120,
    )  # fmt: skip
    assert deleted.returncode == 0, f"{deleted.stderr}\n{rel.operator_log()[-2000:]}"


def infer(url: str, x: np.ndarray) -> np.ndarray:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32",
              "data": x.flatten().tolist()}  # fmt: skip
    request = urllib.request.Request(  # noqa: S310 - the test's Service
        url, data=json.dumps({"inputs": [tensor]}).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the test's Service
        outputs = json.load(response)["outputs"]
    (logits,) = [o for o in outputs if o["name"] == "logits"]
    return np.asarray(logits["data"], dtype=np.float32).reshape(logits["shape"])


def test_a_verified_model_runs_and_answers_what_onnxruntime_computes(
    rel: RealRelease, models: None
) -> None:
    model = register(rel, "mnist-a", seed=11)
    started = time.monotonic()
    deploy(rel, model)
    SUMMARY.append(
        f"real pods: ModelDeployment applied -> Verified and pod Ready in "
        f"{time.monotonic() - started:.0f}s"
    )
    (pod,) = model_pods(rel, model.name)
    assert _restarts(pod) == 0, _describe([pod])
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["name"] == "fetch"
    assert fetch["state"]["terminated"]["exitCode"] == 0
    log = fetch_log(rel, pod["metadata"]["name"])
    assert f"verified {model.digest}" in log, log
    assert "registered: mnist 1 signed by key" in log, log
    assert "proven at ledger index" in log, log
    serve = {c["name"]: c for c in pod["status"]["containerStatuses"]}["model-server"]
    assert serve["ready"] is True

    service = rel.get(
        "service", "-n", rel.models, "-l", f"modeltrust.dev/model-deployment={model.name}"
    )
    (svc,) = service["items"]
    url = (
        f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}/v2/models/mnist/infer"
    )
    x = np.random.default_rng(5).random((3, MNIST_FEATURES), dtype=np.float32)
    expected = ort.InferenceSession(str(model.path)).run(["logits"], {"input": x})[0]

    def answered() -> list[np.ndarray] | None:
        try:  # kube-proxy may need a moment for a new Service
            return [infer(url, x)]  # a list: wait_for tests truthiness, an array has none
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    (got,) = wait_for("an inference through the model's Service", answered, timeout=60, every=1)
    assert got.shape == expected.shape == (3, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    delete_model(rel, model.name)


# --- swapped bytes -------------------------------------------------------------------------


def test_bytes_swapped_after_verification_are_refused_by_a_new_pod(
    rel: RealRelease, models: None
) -> None:
    model = register(rel, "mnist-b", seed=12)
    deploy(rel, model)
    (old,) = model_pods(rel, model.name)
    # Same size, different bytes: the digest check (not the size check) must refuse them.
    data = bytearray(model.path.read_bytes())
    data[-5] ^= 0xFF
    model.path.write_bytes(bytes(data))
    rel.cluster.kubectl("delete", "pod", "-n", rel.models, old["metadata"]["name"], "--wait=false")

    def refused() -> dict[str, Any] | None:
        for pod in model_pods(rel, model.name):
            if pod["metadata"]["uid"] == old["metadata"]["uid"]:
                continue
            for status in pod.get("status", {}).get("initContainerStatuses") or []:
                for key in ("state", "lastState"):
                    done = (status.get(key) or {}).get("terminated")
                    if done and done.get("exitCode") not in (0, None):
                        return pod
        return None

    pod = wait_for("the new pod's fetch to refuse the bytes", refused, timeout=120, every=1)
    name = pod["metadata"]["name"]
    log = fetch_log(rel, name) or fetch_log(rel, name, previous=True)
    if "DigestMismatch" not in log:  # restarted meanwhile: the refusal is the previous run's
        log = fetch_log(rel, name, previous=True)
    assert "DigestMismatch: digest check failed" in log, log
    assert f"expected {model.digest}" in log, log

    def reported() -> dict[str, Any] | None:
        md: dict[str, Any] = rel.get("modeldeployment", model.name, "-n", rel.models)
        c = _condition(md, "PodsVerified")
        return md if c.get("status") == "False" and c.get("reason") == "FetchRefused" else None

    try:
        md = wait_for("PodsVerified=False/FetchRefused", reported, timeout=60, every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{rel.operator_log()[-3000:]}") from None
    assert "digest check failed" in _condition(md, "PodsVerified")["message"]
    events = rel.get(
        "events", "-n", rel.models,
        "--field-selector", f"involvedObject.name={model.name},reason=FetchRefused",
    )["items"]  # fmt: skip
    assert events, "no FetchRefused Event on the ModelDeployment"
    assert events[0]["type"] == "Warning"
    assert "digest check failed" in events[0]["message"]

    # The pod never becomes Ready (its init step keeps refusing, under the kubelet's back-off).
    for _ in range(10):
        pods = [
            p for p in model_pods(rel, model.name) if p["metadata"]["uid"] != old["metadata"]["uid"]
        ]
        assert pods
        assert not any(_ready(p) for p in pods), _describe(pods)
        assert all(
            "running" not in (c.get("state") or {})
            for p in pods
            for c in p["status"].get("containerStatuses") or []
        ), _describe(pods)
        time.sleep(2)
    delete_model(rel, model.name)


# --- revocation ----------------------------------------------------------------------------


def test_a_revoked_digest_scales_the_model_to_zero_within_the_reverify_bound(
    rel: RealRelease, models: None
) -> None:
    model = register(rel, "mnist-c", seed=13)
    deploy(rel, model)
    with rel.ledger() as client:
        client.append(
            sign_revocation(rel.publisher, target_kind="digest", target=model.digest,
                            reason="key compromise drill")
        )  # fmt: skip
    revoked_at = time.monotonic()
    bound = REVERIFY_SECONDS + TIMER_SECONDS + SLACK_SECONDS

    def scaled_down() -> bool:
        deployment = rel.get("deployment", "-n", rel.models, "-l",
                             f"modeltrust.dev/model-deployment={model.name}")["items"]  # fmt: skip
        return bool(deployment) and deployment[0]["spec"]["replicas"] == 0

    try:
        wait_for("the Deployment at 0 replicas", scaled_down, timeout=bound, every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{rel.operator_log()[-3000:]}") from None
    scaled = time.monotonic() - revoked_at
    wait_for(
        "the model's pods to terminate", lambda: not model_pods(rel, model.name),
        timeout=bound + GRACE_SECONDS - scaled + 10, every=1,
    )  # fmt: skip
    gone = time.monotonic() - revoked_at
    SUMMARY.append(
        f"real pods: revocation -> 0 replicas in {scaled:.0f}s, pods gone in {gone:.0f}s "
        f"(reverifyInterval {REVERIFY_SECONDS}s + timer {TIMER_SECONDS}s)"
    )
    md = rel.get("modeldeployment", model.name, "-n", rel.models)
    assert _condition(md, "Revoked")["status"] == "True", md["status"]
    events = rel.get(
        "events", "-n", rel.models,
        "--field-selector", f"involvedObject.name={model.name},reason=Revoked",
    )["items"]  # fmt: skip
    assert events
    assert events[0]["type"] == "Warning"
    delete_model(rel, model.name)


# --- upgrade and uninstall -----------------------------------------------------------------


def _ledger_state(rel: RealRelease) -> tuple[int, list[str]]:
    """The checkpoint size and every entry, read through the verifying client (which checks
    the checkpoint signature with the release's verifier key and each inclusion proof)."""

    def read() -> tuple[int, list[str]] | None:
        try:
            with rel.ledger() as client:
                size = client.checkpoint().size
                return size, [json.dumps(entry_to_json(client.entry(i).entry)) for i in range(size)]
        except (OSError, urllib.error.URLError) as exc:
            print(f"ledger not answering yet: {exc}")
            return None

    return wait_for("the ledger to answer", read, timeout=60, every=1)


def test_upgrade_keeps_the_ledgers_entries_and_key(rel: RealRelease) -> None:
    size, entries = _ledger_state(rel)
    assert size >= 6, "three registrations and a revocation, plus audit entries"
    secret = rel.get("secret", KEY_SECRET, "-n", rel.namespace)
    ledger_pod = f"{rel.fullname}-ledger-0"
    before = rel.get("pod", ledger_pod, "-n", rel.namespace)["metadata"]["uid"]
    upgraded = rel.helm(
        "upgrade", rel.name, str(CHART), "-f", str(rel.values_file()),
        "--set", "ledger.resources.requests.cpu=150m", "--wait", "--timeout", "300s",
    )  # fmt: skip
    assert upgraded.returncode == 0, upgraded.stderr

    def rolled() -> dict[str, Any] | None:
        pod: dict[str, Any] = rel.get("pod", ledger_pod, "-n", rel.namespace)
        return pod if pod["metadata"]["uid"] != before and _ready(pod) else None

    pod = wait_for("the upgraded ledger pod to be Ready", rolled, timeout=180, every=1)
    assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "150m"
    assert _restarts(pod) == 0
    after_size, after_entries = _ledger_state(rel)  # verifies with the same verifier key
    assert after_size >= size
    assert after_entries[:size] == entries, "the upgrade changed the ledger's history"
    assert rel.get("secret", KEY_SECRET, "-n", rel.namespace)["data"] == secret["data"]
    stored = base64.b64decode(secret["data"]["signing-key"]).decode()
    assert stored == rel.key.signer_key
    spec = rel.get("modeltrustpolicy", rel.policy)["spec"]
    assert spec["ledger"]["verifierKey"] == rel.key.verifier_key
    for p in rel.pods(rel.namespace, f"app.kubernetes.io/instance={rel.name}"):
        assert _restarts(p) == 0, _describe([p])


def test_uninstall_leaves_no_pod_running(rel: RealRelease) -> None:
    left = rel.get("modeldeployments", "-n", rel.models)["items"]
    assert not left, "each test deleted its ModelDeployment while the operator ran"
    manifest = rel.helm("get", "manifest", rel.name)
    cluster_scoped = [
        (d["kind"], d["metadata"]["name"])
        for d in documents(manifest.stdout)
        if not d["metadata"].get("namespace")
        and d["kind"] not in ("ServiceAccount", "Service", "ConfigMap", "Role", "RoleBinding")
    ]
    uninstalled = rel.helm("uninstall", rel.name, "--wait", "--timeout", "120s")
    assert uninstalled.returncode == 0, uninstalled.stderr
    rel.installed = False
    wait_for(
        "no pod left in the release namespace",
        lambda: not rel.get("pods", "-n", rel.namespace)["items"],
        timeout=90, every=1,
    )  # fmt: skip
    assert not rel.get("pods", "-n", rel.models)["items"]
    for kind, name in cluster_scoped:
        found = rel.cluster.kubectl("get", kind, name, check=False)
        assert found.returncode != 0, f"{kind}/{name} outlived helm uninstall"
    # Documented (docs/install.md): helm keeps CRDs, and the ledger's claim is retained.
    for crd in ("modeldeployments.modeltrust.dev", "modeltrustpolicies.modeltrust.dev"):
        rel.cluster.kubectl("get", "crd", crd)
    rel.get("pvc", f"data-{rel.fullname}-ledger-0", "-n", rel.namespace)


def test_a_run_leaves_nothing_behind(rel: RealRelease) -> None:
    """Deleting the test's namespaces finishes: no ModelDeployment finalizer holds one."""
    rel.cluster.kubectl("delete", "pvc", "--all", "-n", rel.namespace, "--wait=false")
    for ns in (rel.models, rel.namespace):
        rel.cluster.kubectl("delete", "namespace", ns, "--wait=false")

    def gone() -> bool:
        names = {n["metadata"]["name"] for n in rel.get("namespaces")["items"]}
        return not names & {rel.models, rel.namespace}

    try:
        wait_for("the test's namespaces to be deleted", gone, timeout=120, every=1)
    except AssertionError as exc:
        left = rel.cluster.kubectl(
            "get", "namespace", rel.models, rel.namespace, "-o", "yaml", check=False
        ).stdout
        raise AssertionError(f"{exc}\n{left[-3000:]}") from None
    terminating = [
        n["metadata"]["name"]
        for n in rel.get("namespaces")["items"]
        if n["status"].get("phase") == "Terminating"
    ]
    # On the real-pod tests' own cluster nothing else runs: no namespace may be Terminating.
    # On a shared cluster (MODELTRUST_CLUSTER=real, kind) other tests' may be, for a moment.
    if os.environ.get("KUBECONFIG") or os.environ.get("MODELTRUST_CLUSTER") == "real":
        terminating = [n for n in terminating if n.startswith(rel.name)]
    assert terminating == []
