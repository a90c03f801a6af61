"""`make demo`: the whole modeltrust story on a local cluster, in well under a minute.

A publisher signs and registers an ONNX model on the ledger; the operator rolls it out
only after checking the bytes, the registration's inclusion proof and the signature;
a model whose bytes were swapped in storage and one that was never registered are
refused while the verified one keeps serving; every decision is on the ledger, and an
auditor verifies the whole ledger from genesis.

    python hack/demo.py                        # its own local control plane (kwok)
    python hack/demo.py --real                 # real pods: a kubelet and containerd (root)
    python hack/demo.py --use-current-context  # the cluster KUBECONFIG names

With --real the model pods really run the modeltrust image (`make image`, imported into the
node's containerd): their init containers fetch and re-verify the model from the storage,
and the demo ends with an inference request through the model's Service.

Everything the demo starts (control plane, ledger, operator, model store) is stopped on
exit, on failure and on Ctrl-C. Exit code 0 when every step worked, 1 when one failed
(the message says which and why), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(REPO / "tests"))  # the cluster harness and the ONNX model builders

from demo_procs import (  # noqa: E402 - after the path set-up above
    Background,
    Cleanup,
    ModelStore,
    free_port,
    merged_env,
    tail,
    wait_until,
)
from demo_ui import Step, StepFailed, Steps, Terminal, interrupt, interrupt_handled  # noqa: E402

from harness.cluster import (  # noqa: E402
    NODE_NAME,
    Cluster,
    ClusterError,
    LocalControlPlane,
    RealNodePlane,
    connect_existing,
)
from harness.image import ImageBuildError, build_image  # noqa: E402
from harness.onnx_models import MNIST_FEATURES, mnist_mlp  # noqa: E402
from modeltrust.chain.client import LedgerClient  # noqa: E402
from modeltrust.chain.entries import AuditEntry, entry_from_json  # noqa: E402

CLUSTER_NAME = "modeltrust-demo"
LEDGER_ORIGIN = "ledger.demo.modeltrust.dev"
MODEL = "digits"
PREVIEW = "digits-preview"
GOOD, TAMPERED, UNREGISTERED = "1.0.0", "1.1.0", "1.2.0"
PUBLISHER = "acme-ml"
CRDS = ("modeldeployments.modeltrust.dev", "modeltrustpolicies.modeltrust.dev")
TOTAL_STEPS = 14
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


def modeltrust_argv() -> list[str]:
    script = Path(sys.executable).with_name("modeltrust")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from modeltrust.cli.main import main; main()"]


def sha256_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            found: dict[str, Any] = c
            return found
    return {}


def describe_conditions(obj: dict[str, Any] | None) -> str:
    if not obj:
        return "not found"
    status = obj.get("status") or {}
    parts = [
        f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
        for c in status.get("conditions") or []
    ]
    return "; ".join(parts) or "no conditions yet"


@dataclass
class Model:
    version: str
    path: Path
    digest: str
    registration: Path | None = None
    ledger_index: int | None = None

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass
class Demo:
    term: Terminal
    steps: Steps
    cleanup: Cleanup
    work: Path
    use_current_context: bool
    timeout: float
    # Real pods: the model store listens on `store_address` (where pods reach this machine)
    # and model server pods run `image`.
    real: bool = False
    store_address: str = "127.0.0.1"
    image: str = ""
    cluster: Cluster | None = None
    namespace: str = CLUSTER_NAME
    policy: str = CLUSTER_NAME
    ledger_url: str = ""
    verifier_key: str = ""
    audit_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ledger: Background | None = None
    operator: Background | None = None
    store: ModelStore | None = None
    models: dict[str, Model] = field(default_factory=dict)
    publisher_key_id: str = ""

    # --- plumbing -------------------------------------------------------------------------

    @property
    def kube(self) -> Cluster:
        assert self.cluster is not None, "the cluster step runs first"
        return self.cluster

    def kubectl(self, *args: str) -> str:
        try:
            return self.kube.kubectl(*args, timeout=self.timeout).stdout
        except ClusterError as exc:
            raise StepFailed(str(exc)) from exc
        except subprocess.TimeoutExpired as exc:
            took = f"kubectl {' '.join(args)} took longer than {self.timeout:.0f}s"
            raise StepFailed(took) from exc

    def get_json(self, *args: str) -> dict[str, Any] | None:
        try:
            result = self.kube.kubectl(*args, "-o", "json", check=False, timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            took = f"kubectl {' '.join(args)} took longer than {self.timeout:.0f}s"
            raise StepFailed(took) from exc
        if result.returncode != 0:
            return None
        parsed: dict[str, Any] = json.loads(result.stdout)
        return parsed

    def apply(self, step: Step, filename: str, obj: dict[str, Any], comment: str) -> None:
        """Write `obj` as YAML into the work dir and apply that file, as a user would."""
        (self.work / filename).write_text(yaml.safe_dump(obj, sort_keys=False))
        step.command(["kubectl", "apply", "-f", filename], comment)
        self.kubectl("apply", "-f", str(self.work / filename))

    def cli(self, step: Step, *args: str, show: bool = True) -> str:
        """Run `modeltrust ARGS` in the work dir (so paths read short); stdout on success."""
        if show:
            step.command(["modeltrust", *args])
        result = subprocess.run(
            [*modeltrust_argv(), *args],
            cwd=self.work,
            env=merged_env(os.environ),
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if result.returncode != 0:
            raise StepFailed(
                f"`modeltrust {' '.join(args[:2])}` exited with code {result.returncode}",
                tuple(result.stderr.strip().splitlines()[-10:]),
            )
        return result.stdout

    def alive(self) -> list[Background]:
        return [p for p in (self.ledger, self.operator) if p is not None]

    def model_deployment(self, name: str) -> dict[str, Any] | None:
        return self.get_json("get", "modeldeployment", name, "-n", self.namespace)

    # --- the story --------------------------------------------------------------------------

    def run(self) -> None:
        with self.steps.run(
            "Connect to the current cluster"
            if self.use_current_context
            else "Start a local Kubernetes control plane"
        ) as step:
            self.start_cluster(step)
        with self.steps.run("Install the CRDs") as step:
            self.install_crds(step)
        with self.steps.run("Publisher creates a signing key") as step:
            self.publisher_key(step)
        with self.steps.run("Start the ledger (Merkle log, signed checkpoints)") as step:
            self.start_ledger(step)
        with self.steps.run("Start the operator") as step:
            self.start_operator(step)
        with self.steps.run("Build three ONNX models, put them in storage") as step:
            self.build_models(step)
        with self.steps.run("Publisher signs them, registers two") as step:
            self.sign_and_register(step)
        with self.steps.run("Cluster trusts the publisher and the ledger") as step:
            self.apply_policy(step)
        with self.steps.run(f"Deploy {MODEL} {GOOD}: verified, Ready") as step:
            self.deploy_good(step)
        with self.steps.run(f"Swap the bytes of {TAMPERED} in storage: refused") as step:
            self.deploy_tampered(step)
        with self.steps.run(f"Deploy {UNREGISTERED}, signed but never registered: refused") as step:
            self.deploy_unregistered(step)
        with self.steps.run(f"{MODEL} {GOOD} keeps serving") as step:
            self.check_still_serving(step)
        with self.steps.run("Audit trail from the ledger, every proof verified") as step:
            self.audit_trail(step)
        with self.steps.run("Auditor verifies the whole ledger from genesis") as step:
            self.verify_ledger(step)
        if self.real:
            with self.steps.run(f"Ask {MODEL} {GOOD} through its Service") as step:
                self.infer(step)

    # 1
    def start_cluster(self, step: Step) -> None:
        if self.use_current_context:
            kubeconfig = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
            try:
                self.cluster = connect_existing(kubeconfig)
            except ClusterError as exc:
                raise StepFailed(
                    f"KUBECONFIG={kubeconfig} names a cluster that does not answer; fix it, "
                    "or run without --use-current-context to start a local control plane",
                    tuple(str(exc).splitlines()[:6]),
                ) from exc
            suffix = secrets.token_hex(3)
            self.namespace = self.policy = f"{CLUSTER_NAME}-{suffix}"
            step.say(f"KUBECONFIG={kubeconfig}, kube-apiserver {self.kube.server_version}")
            return
        if self.real:
            self.start_real_cluster(step)
            return
        try:
            plane = LocalControlPlane(name=CLUSTER_NAME)
        except ClusterError as exc:
            raise StepFailed(str(exc)) from exc
        if plane.kubeconfig.exists():
            plane.down()  # a leftover of an interrupted run: start from a clean slate
            step.say("removed a leftover demo cluster from an earlier run")
        self.cleanup.add(f"cluster {CLUSTER_NAME}", plane.down)
        try:
            self.cluster = plane.up(timeout=self.timeout * 2)
        except ClusterError as first:
            # kwokctl picks free ports by probing, so a control plane starting at the same
            # moment elsewhere on the machine can take one first; a second try gets others.
            step.note(f"the control plane did not start ({str(first).splitlines()[0]}); retrying")
            try:
                self.cluster = plane.up(timeout=self.timeout * 2)
            except ClusterError as exc:
                raise StepFailed(str(exc)) from exc
        step.say(
            f"etcd, kube-apiserver {self.kube.server_version}, controller-manager, scheduler "
            f"on 127.0.0.1; kwok fake node {NODE_NAME} Ready",
            wrap=True,
        )

    def start_real_cluster(self, step: Step) -> None:
        plane = RealNodePlane(name=f"{CLUSTER_NAME}-real")
        if plane.kubeconfig.exists():
            plane.down()  # a leftover of an interrupted run
            step.say("removed a leftover demo cluster from an earlier run")
        self.cleanup.add(f"cluster {plane.name}", plane.down)
        try:
            built = build_image()  # `make image`: seconds when the tree did not change
        except ImageBuildError as exc:
            raise StepFailed("the modeltrust image could not be built", (str(exc)[-600:],)) from exc
        try:
            self.cluster = plane.up(timeout=max(self.timeout * 4, 240))
            pinned = self.kube.import_image(built.archive_path)
        except ClusterError as exc:
            raise StepFailed(str(exc)) from exc
        # Policies allow runtime images by digest only: the pods run it by its digest.
        self.image = pinned.get(f"localhost/{built.hash_reference}") or next(iter(pinned.values()))
        self.store_address = self.kube.host_address
        info = self.kube.node_info
        step.say(
            f"etcd, kube-apiserver {self.kube.server_version}, controller-manager, scheduler; "
            f"node {info.get('kubeletVersion')} kubelet, {info.get('containerRuntimeVersion')}, "
            f"kube-proxy, CoreDNS; image {built.reference} imported; pods reach this machine "
            f"at {self.store_address}",
            wrap=True,
        )

    # 2
    def install_crds(self, step: Step) -> None:
        step.command(["kubectl", "apply", "-f", "crds/"])
        self.kubectl("apply", "-f", str(REPO / "crds"))
        self.kubectl(
            "wait", "--for=condition=Established", f"--timeout={self.timeout:.0f}s",
            *(f"crd/{c}" for c in CRDS),
        )  # fmt: skip
        if self.use_current_context:
            self.kubectl("create", "namespace", self.namespace)
            self.cleanup.add(f"namespace {self.namespace}", self.delete_namespace)
        else:
            self.kubectl("create", "namespace", self.namespace)
        step.say(f"ModelDeployment (md) and ModelTrustPolicy (mtp); namespace {self.namespace}")

    # 3
    def publisher_key(self, step: Step) -> None:
        self.publisher_key_id = self.cli(step, "keygen", "--out", PUBLISHER).strip()
        publishers = self.work / "publishers"
        publishers.mkdir()
        public = (self.work / f"{PUBLISHER}.pub").read_bytes()
        (publishers / f"{PUBLISHER}.pem").write_bytes(public)  # the ledger's publisher set
        step.say(
            f"{PUBLISHER}.key (private) and {PUBLISHER}.pub, key id {self.publisher_key_id[:16]}…"
        )

    # 4
    def start_ledger(self, step: Step) -> None:
        self.verifier_key = self.cli(
            step, "ledger", "keygen", "--origin", LEDGER_ORIGIN, "--out", "ledger.key"
        ).strip()
        (self.work / "ledger.pub").write_text(self.verifier_key + "\n")
        tokens = self.work / "audit-tokens"
        tokens.write_text(self.audit_token + "\n")
        tokens.chmod(0o600)
        port = free_port()
        self.ledger_url = f"http://127.0.0.1:{port}"
        args = [
            "ledger", "serve", "--db", "ledger.db", "--key", "ledger.key",
            "--origin", LEDGER_ORIGIN, "--publishers", "publishers",
            "--static-tokens", "audit-tokens", "--listen", f"127.0.0.1:{port}",
        ]  # fmt: skip
        step.command(["modeltrust", *args], "in the background")
        self.ledger = Background(
            "ledger",
            [*modeltrust_argv(), *args],
            env=merged_env(os.environ),
            cwd=self.work,
            log=self.work / "ledger.log",
        )
        self.cleanup.add("ledger", self.ledger.stop)

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"{self.ledger_url}/readyz", timeout=1) as r:  # noqa: S310 - loopback
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until("the ledger to be ready", ready, timeout=self.timeout, alive=[self.ledger])
        with LedgerClient(self.ledger_url, verifier_key=self.verifier_key) as client:
            checkpoint = client.checkpoint()
        step.say(
            f"{self.ledger_url}, SQLite ledger.db, checkpoint size {checkpoint.size} "
            f"signed by {self.verifier_key.split('+')[0]}"
        )
        step.say("checkpoint verifier key (clients and the trust policy pin it):")
        step.say(f"  {self.verifier_key}")

    # 5
    def start_operator(self, step: Step) -> None:
        port = free_port()
        args = ["operator", "--namespace", self.namespace]
        step.command(["modeltrust", *args], "in the background")
        argv = [
            *modeltrust_argv(), *args,
            "--log-format", "plain", "--liveness", f"http://127.0.0.1:{port}/healthz",
        ]  # fmt: skip
        env = merged_env(
            self.kube.env,
            MODELTRUST_NAMESPACE=self.namespace,
            MODELTRUST_LEDGER_TOKEN=self.audit_token,
            MODELTRUST_ACTOR="modeltrust-operator (demo)",
            # The model server image: pinned by digest, or every rollout is refused
            # (RuntimeImageNotPinned). On kwok nothing pulls it: the nodes are simulated.
            MODELTRUST_IMAGE=self.image or "registry.example/modeltrust@sha256:" + "de" * 32,
        )
        self.operator = Background(
            "operator", argv, env=env, cwd=self.work, log=self.work / "operator.log"
        )
        self.cleanup.add("operator", self.operator.stop)

        def live() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until("the operator to report live", live, timeout=self.timeout, alive=[self.operator])
        step.say(f"kopf, watching namespace {self.namespace}; audit writes with a ledger token")

    # 6
    def build_models(self, step: Step) -> None:
        self.store = ModelStore(self.work / "storage", host=self.store_address)
        self.cleanup.add("model storage", self.store.close)
        for seed, version in enumerate((GOOD, TAMPERED, UNREGISTERED), start=1):
            path = mnist_mlp(self.store.root / f"{MODEL}-{version}.onnx", seed=seed)
            self.models[version] = Model(version, path, sha256_digest(path))
        for m in self.models.values():
            size = m.path.stat().st_size
            step.say(
                f"{MODEL} {m.version}  sha256:{short(m.digest)}…  {size / 1024:.0f} KiB"
                "  (MLP 784→128→10)"
            )
        step.say(f"storage (untrusted): {self.store.base_url}/")

    # 7
    def sign_and_register(self, step: Step) -> None:
        def sign(m: Model, show: bool) -> None:
            m.registration = self.work / f"{MODEL}-{m.version}.registration.json"
            self.cli(
                step, "sign", f"storage/{m.filename}", "--key", f"{PUBLISHER}.key",
                "--name", MODEL, "--version", m.version, "--out", m.registration.name,
                show=show,
            )  # fmt: skip

        # Three independent processes: sign them side by side.
        with ThreadPoolExecutor(max_workers=3) as pool:
            signed = [pool.submit(sign, m, i == 0) for i, m in enumerate(self.models.values())]
            for future in signed:
                future.result()
        for i, version in enumerate((GOOD, TAMPERED)):
            m = self.models[version]
            assert m.registration is not None
            out = self.cli(
                step, "register", m.registration.name,
                "--ledger", self.ledger_url, "--ledger-key", "ledger.pub",
                show=i == 0,
            )  # fmt: skip
            receipt = json.loads(out)
            m.ledger_index = int(receipt["index"])
            step.good(
                f"{MODEL} {version} registered at ledger index {m.ledger_index}, inclusion "
                f"proven at checkpoint size {receipt['checkpoint_size']}"
            )
        step.say(f"{MODEL} {UNREGISTERED} signed, but its registration never sent to the ledger")

    # 8
    def apply_policy(self, step: Step) -> None:
        pem = (self.work / f"{PUBLISHER}.pub").read_text()
        policy = {
            "apiVersion": "modeltrust.dev/v1alpha1",
            "kind": "ModelTrustPolicy",
            "metadata": {"name": self.policy},
            "spec": {
                "ledger": {"url": self.ledger_url, "verifierKey": self.verifier_key},
                "publishers": [
                    {"name": PUBLISHER, "publicKey": pem, "keyId": self.publisher_key_id}
                ],
                "enforcement": "Enforce",
            },
        }
        if self.use_current_context:
            self.cleanup.add(f"ModelTrustPolicy {self.policy}", self.delete_policy)
        self.apply(step, "policy.yaml", policy, f"ModelTrustPolicy {self.policy}")
        step.say(self.kubectl("get", "modeltrustpolicy", self.policy).rstrip())

    def _md(self, name: str, model: Model, replicas: int = 2) -> dict[str, Any]:
        assert self.store is not None
        return {
            "apiVersion": "modeltrust.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "model": {
                    "name": MODEL,
                    "version": model.version,
                    "uri": self.store.url(model.filename),
                    "digest": model.digest,
                },
                "replicas": replicas,
                "policy": self.policy,
            },
        }

    def _wait_verdict(self, name: str, generation: int | None = None) -> dict[str, Any]:
        """Wait until the operator has decided on `name`'s current generation."""

        def decided() -> dict[str, Any] | None:
            md = self.model_deployment(name)
            if md is None:
                return None
            want = generation or md["metadata"].get("generation")
            verified = condition(md, "Verified")
            if verified.get("observedGeneration") == want and verified.get("status") in (
                "True",
                "False",
            ):
                return md
            return None

        found: dict[str, Any] = wait_until(
            f"the operator's decision on ModelDeployment {name}",
            decided,
            timeout=self.timeout,
            alive=self.alive(),
            last_seen=lambda: describe_conditions(self.model_deployment(name)),
        )
        return found

    # 9
    def deploy_good(self, step: Step) -> None:
        good = self.models[GOOD]
        if self.use_current_context:
            # Deleted first on the way out, while the operator, the ledger and the policy
            # are still there: each deletion is audited and the finalizers are released,
            # so the namespace can go.
            self.cleanup.add("ModelDeployments", self.delete_model_deployments)
        self.apply(step, f"{MODEL}.yaml", self._md(MODEL, good), f"{GOOD}, pinned to its digest")
        md = self._wait_verdict(MODEL)
        verified = condition(md, "Verified")
        if verified.get("status") != "True":
            raise StepFailed(
                f"the operator refused {MODEL} {GOOD}: "
                f"{verified.get('reason')}: {verified.get('message')}",
                tail(self.work / "operator.log"),
            )

        def ready() -> dict[str, Any] | None:
            got = self.model_deployment(MODEL)
            if got and condition(got, "Ready").get("status") == "True":
                return got
            return None

        md = wait_until(
            f"ModelDeployment {MODEL} to be Ready",
            ready,
            timeout=self.timeout,
            alive=self.alive(),
            last_seen=lambda: describe_conditions(self.model_deployment(MODEL)),
        )
        status = md["status"]
        if status.get("servingDigest") != good.digest:
            raise StepFailed(f"{MODEL} is Ready but serves {status.get('servingDigest')}")
        step.good(f"Verified: {verified.get('message')}")
        step.say(self.kubectl("get", "modeldeployments", "-n", self.namespace).rstrip())
        step.say(self._deployment_line(status.get("deploymentName") or MODEL))
        step.say(
            f"registration at ledger index {status.get('registrationIndex')}, proven at "
            f"checkpoint size {status.get('checkpointSize')}; "
            f"audit entry {status.get('lastAuditIndex')}"
        )

    def _deployment(self, name: str) -> dict[str, Any]:
        deployment = self.get_json("get", "deployment", name, "-n", self.namespace)
        if deployment is None:
            raise StepFailed(f"Deployment {self.namespace}/{name} does not exist")
        return deployment

    def _deployment_line(self, name: str) -> str:
        d = self._deployment(name)
        pinned = (d["metadata"].get("annotations") or {}).get("modeltrust.dev/digest", "")
        match = d["spec"]["selector"].get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(match.items()))
        pods = self.get_json("get", "pods", "-n", self.namespace, "-l", selector)
        nodes = sorted(
            {p["spec"].get("nodeName") or "unscheduled" for p in (pods or {}).get("items", [])}
        )
        available = (d.get("status") or {}).get("availableReplicas") or 0
        return (
            f"Deployment {name}: {available}/{d['spec']['replicas']} available on "
            f"{', '.join(nodes) or 'no node'}, pinned to sha256:{short(pinned)}…"
        )

    def _expect_refusal(self, step: Step, md: dict[str, Any], reason: str) -> None:
        verified = condition(md, "Verified")
        got = verified.get("reason")
        if verified.get("status") != "False" or got != reason:
            raise StepFailed(
                f"expected the operator to refuse with {reason}, "
                f"got Verified={verified.get('status')} ({got}: {verified.get('message')})"
            )
        step.bad(f"refused: Verified=False, reason {got}")
        step.say(f"message: {verified.get('message')}", wrap=True)

    # 10
    def deploy_tampered(self, step: Step) -> None:
        assert self.store is not None
        tampered = self.models[TAMPERED]
        # An attacker with write access to storage replaces the registered 1.1.0 with a
        # different, perfectly loadable model. The pin and the registration are untouched.
        mnist_mlp(self.work / "evil.onnx", seed=666)
        tampered.path.write_bytes((self.work / "evil.onnx").read_bytes())
        step.say(
            f"storage now serves sha256:{short(sha256_digest(tampered.path))}… as "
            f"{tampered.filename}; the pin says sha256:{short(tampered.digest)}…"
        )
        self.apply(
            step, f"{MODEL}.yaml", self._md(MODEL, tampered), f"{TAMPERED}, the signed digest"
        )
        md = self._wait_verdict(MODEL)
        self._expect_refusal(step, md, "DigestMismatch")

    # 11
    def deploy_unregistered(self, step: Step) -> None:
        unregistered = self.models[UNREGISTERED]
        self.apply(
            step,
            f"{PREVIEW}.yaml",
            self._md(PREVIEW, unregistered, replicas=1),
            f"{UNREGISTERED}, its correct digest",
        )
        md = self._wait_verdict(PREVIEW)
        self._expect_refusal(step, md, "NotRegistered")
        if self.get_json("get", "deployment", PREVIEW, "-n", self.namespace) is not None:
            raise StepFailed(f"a Deployment {PREVIEW} exists although the model was refused")
        step.say("no Deployment was created")

    # 12
    def check_still_serving(self, step: Step) -> None:
        good = self.models[GOOD]
        md = self.model_deployment(MODEL)
        if md is None:
            raise StepFailed(f"ModelDeployment {MODEL} is gone")
        status = md.get("status") or {}
        ready = condition(md, "Ready")
        if ready.get("status") != "True" or status.get("servingDigest") != good.digest:
            raise StepFailed(
                f"{MODEL} should still serve {GOOD}: Ready={ready.get('status')}, "
                f"serving {status.get('servingDigest')}"
            )
        deployment = status.get("deploymentName") or MODEL
        pinned = (self._deployment(deployment)["metadata"].get("annotations") or {}).get(
            "modeltrust.dev/digest"
        )
        if pinned != good.digest:
            raise StepFailed(f"the Deployment is pinned to {pinned}, not {GOOD}'s {good.digest}")
        step.say(self.kubectl("get", "modeldeployments", "-n", self.namespace).rstrip())
        verified = condition(md, "Verified")
        step.good(f"Ready=True: {ready.get('message')}")
        step.say(
            f"spec asks for {md['spec']['model']['version']} (refused: {verified.get('reason')}); "
            f"status.servingDigest is {GOOD}'s sha256:{short(good.digest)}…",
            wrap=True,
        )
        step.say(self._deployment_line(deployment))

    # 13
    def audit_trail(self, step: Step) -> None:
        trail = self._audit_with_cli(step)
        if not trail:
            raise StepFailed("the ledger holds no audit entries for the demo's deployments")
        width = max(len(MODEL), len(PREVIEW))
        mark = self.term.green(self.term.tick)
        for index, proven_at, e in sorted(trail, key=lambda t: t[0]):
            step.say(
                f"#{index:<2} {e.action:<8} {e.decision:<8} {e.name:<{width}} "
                f"gen {e.generation}  {short(e.digest)}  {mark} proven (size {proven_at})"
            )
            reason = "; ".join(e.reasons)
            step.say(self.term.dim(f"    {reason[:88]}{'…' if len(reason) > 88 else ''}"))
        actions = {(e.name, e.action) for _, _, e in trail}
        expected = {(MODEL, "rollout"), (MODEL, "refuse"), (PREVIEW, "refuse")}
        if not expected <= actions:
            raise StepFailed(f"audit entries missing: {sorted(expected - actions)}")
        newest = max(proven_at for _, proven_at, _ in trail)
        step.good(
            f"{len(trail)} audit entries, each proven against a signed checkpoint "
            f"(newest size {newest})"
        )

    def _audit_with_cli(self, step: Step) -> list[tuple[int, int, AuditEntry]]:
        """`modeltrust audit --json` per deployment: (index, proven at size, entry).

        It exits 0 only when every entry's inclusion proof verified against a checkpoint
        signed by the ledger's key, so a nonzero exit fails the step."""
        trail = []
        for i, name in enumerate((MODEL, PREVIEW)):
            out = self.cli(
                step, "audit", "--namespace", self.namespace, "--name", name,
                "--ledger", self.ledger_url, "--ledger-key", "ledger.pub", "--json",
                show=i == 0,
            )  # fmt: skip
            doc = json.loads(out)
            if doc.get("status") != "verified":
                raise StepFailed(f"modeltrust audit of {name}: {doc.get('message')}")
            for item in doc["entries"]:
                entry = entry_from_json(item["entry"])
                assert isinstance(entry, AuditEntry)
                trail.append((int(item["index"]), int(item["proven_at_size"]), entry))
        step.note(
            "each entry's inclusion proof is checked against a checkpoint signed by the "
            "ledger's key; modeltrust audit exits 1 if any proof fails"
        )
        return trail

    # 14
    def verify_ledger(self, step: Step) -> None:
        out = self.cli(
            step, "ledger", "verify", "--url", self.ledger_url,
            "--verifier-key", "ledger.pub", "--check-entries", "--quiet",
        )  # fmt: skip
        lines = out.strip().splitlines()
        if not lines or not lines[0].startswith("OK"):
            raise StepFailed(f"unexpected ledger verify output: {out[:400]}")
        step.good(lines[0])
        note = lines[1:]
        if len(note) >= 3:
            step.note(f"checkpoint {note[0]} size {note[1]} root {note[2]} (C2SP signed note)")

    # 15 (--real)
    def infer(self, step: Step) -> None:
        import numpy as np
        import onnxruntime as ort

        service = self.get_json("get", "service", MODEL, "-n", self.namespace)
        if service is None:
            raise StepFailed(f"Service {MODEL} is missing")
        ip, port = service["spec"]["clusterIP"], service["spec"]["ports"][0]["port"]
        url = f"http://{ip}:{port}/v2/models/{MODEL}/infer"
        x = np.random.default_rng(7).random((1, MNIST_FEATURES), dtype=np.float32)
        body = {"inputs": [{"name": "input", "shape": [1, MNIST_FEATURES], "datatype": "FP32",
                            "data": x.flatten().tolist()}]}  # fmt: skip
        step.command(["curl", "-d", "@request.json", url], "784 pixels in, 10 logits out")

        def answer() -> dict[str, Any] | None:
            request = urllib.request.Request(
                url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310
                    got: dict[str, Any] = json.load(r)
                    return got
            except OSError:
                return None  # kube-proxy may need a moment for a new Service

        reply = wait_until(
            f"an answer from Service {MODEL}", answer, timeout=self.timeout, alive=self.alive()
        )
        (logits,) = [o for o in reply["outputs"] if o["name"] == "logits"]
        got = np.asarray(logits["data"], dtype=np.float32)
        good = self.models[GOOD]
        local = ort.InferenceSession(str(good.path)).run(["logits"], {"input": x})[0].flatten()
        if not np.allclose(got, local, rtol=1e-5, atol=1e-6):
            raise StepFailed(f"the pods answered {got.tolist()}, onnxruntime here {local.tolist()}")
        pods = self.get_json("get", "pods", "-n", self.namespace, "-l",
                             f"app.kubernetes.io/instance={MODEL}")  # fmt: skip
        names = [p["metadata"]["name"] for p in (pods or {}).get("items", [])]
        step.good(
            f"class {int(got.argmax())}, logits equal to onnxruntime's on this machine "
            f"(served by {', '.join(names)} at {ip})"
        )

    # --- cleanup in a shared cluster ---------------------------------------------------------

    def delete_model_deployments(self) -> None:
        result = self.kube.kubectl(
            "delete", "modeldeployments", "--all", "-n", self.namespace,
            "--wait=true", "--timeout=30s", check=False, timeout=60,
        )  # fmt: skip
        if result.returncode != 0:
            # The operator could not release its finalizers (it may have died): drop them,
            # or the namespace would hang in Terminating.
            for name in (MODEL, PREVIEW):
                self.kube.kubectl(
                    "patch", "modeldeployment", name, "-n", self.namespace, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False,
                )  # fmt: skip

    def delete_policy(self) -> None:
        self.kube.kubectl("delete", "modeltrustpolicy", self.policy, "--wait=false", check=False)

    def delete_namespace(self) -> None:
        self.kube.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="hack/demo.py",
        description="The modeltrust story end to end: sign, register, verify, refuse, audit.",
    )
    parser.add_argument(
        "--use-current-context",
        action="store_true",
        help="use the cluster KUBECONFIG (or ~/.kube/config) names instead of starting "
        "a local control plane; the demo works in its own namespace and removes it",
    )
    parser.add_argument(
        "--real",
        action="store_true",
        help="real pods: start a real-node cluster (kubelet, containerd; needs root, "
        "`make tools-real-node`) running the modeltrust image, or with --use-current-context "
        "use that cluster (the image named by --image must be on its nodes); ends with an "
        "inference through the model's Service",
    )
    parser.add_argument(
        "--store-address",
        default="",
        help="with --use-current-context on a cluster whose pods run: the address of this "
        "machine that pods reach (the model storage listens there; default 127.0.0.1)",
    )
    parser.add_argument(
        "--image",
        default="",
        help="with --use-current-context: the modeltrust image model pods run (default: "
        "the operator's; with --real, `make image`'s modeltrust:<appVersion>)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds any one wait may take (default 60)",
    )
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="keep the work directory (keys, ledger database, logs) after the demo",
    )
    return parser.parse_args(argv)


TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")


def _tools_on_path() -> bool:
    """Our pinned kubectl first on PATH, as `make` does; False if the tools are not built."""
    result = subprocess.run(
        ["bash", str(REPO / "tests" / "cluster" / "build-tools.sh"), "--print-bin-dir"],
        capture_output=True,
        text=True,
        check=False,
    )
    bin_dir = Path(result.stdout.strip() or "/nonexistent")
    if result.returncode != 0 or not all((bin_dir / tool).exists() for tool in TOOLS):
        return False
    path = os.environ.get("PATH", "")
    if str(bin_dir) not in path.split(os.pathsep):
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    return True


def _app_version() -> str:
    chart = yaml.safe_load((REPO / "charts" / "modeltrust" / "Chart.yaml").read_text())
    return str(chart["appVersion"])


def _interrupt(signum: int, frame: FrameType | None) -> None:
    interrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.real and args.use_current_context and not args.store_address:
        print("--real --use-current-context needs --store-address", file=sys.stderr)
        return 2
    term = Terminal()
    built = _tools_on_path()
    # Our own handler for Ctrl-C too (also when started from a shell that ignores SIGINT for
    # background jobs): with Python's default one, asyncio.run (the ledger client) swaps in
    # a handler that only cancels its task, and a Ctrl-C that lands while the task is
    # finishing anyway is lost; the demo then ran to its end instead of cleaning up.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="modeltrust-demo-"))
    cleanup = Cleanup()
    steps = Steps(term, TOTAL_STEPS + (1 if args.real else 0))
    demo = Demo(term, steps, cleanup, work, args.use_current_context, args.timeout, real=args.real)
    if args.use_current_context:
        demo.store_address = args.store_address or demo.store_address
        demo.image = args.image or (f"modeltrust:{_app_version()}" if args.real else "")

    term.write(term.bold("modeltrust demo: only signed, registered models reach production"))
    term.write(term.dim(f"work directory {work}"))
    if not built and not args.use_current_context:
        term.write(
            term.yellow("the control-plane binaries are not built yet: step 1 builds them once ")
            + term.yellow("(about 6 minutes; `make tools` does the same)")
        )
    term.write()
    code = 0
    operator_log: Path | None = work / "operator.log"
    try:
        demo.run()
    except StepFailed as exc:
        code = EXIT_FAILED
        if exc.shows_log == operator_log:
            operator_log = None  # its end is already on the screen
    except KeyboardInterrupt:  # Ctrl-C, and Interrupted for SIGTERM and SIGHUP
        interrupt_handled()
        code = EXIT_INTERRUPTED
        term.write(term.yellow("interrupted; cleaning up"))
    except Exception:
        code = EXIT_FAILED
        term.write(term.red(traceback.format_exc().rstrip()))
    if code == EXIT_FAILED and operator_log is not None and operator_log.exists():
        term.write(term.dim(f"operator log: {operator_log} (last lines)"))
        for line in tail(operator_log, 12):
            term.write(term.dim(f"  {line}"))
    done, failed = cleanup.run()
    # Logs and keys stay after a failure (processes and the cluster never do).
    keep = args.keep_files or (code == EXIT_FAILED and any(work.glob("*.log")))
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    term.write()
    if done:
        term.write(term.dim(f"cleaned up: {', '.join(done)}"))
    for problem in failed:
        term.write(term.red(f"cleanup failed: {problem}"))
    if keep:
        term.write(term.dim(f"kept {work} (keys, ledger.db, ledger.log, operator.log)"))
    if code == 0:
        term.write(
            term.green(term.bold(f"{term.tick} demo finished in {steps.elapsed:.1f}s")) + ": "
            "1 model verified and serving, 2 refused, every decision on the ledger and proven"
            + (", a real inference answered" if args.real else "")
        )
    elif code == EXIT_FAILED:
        term.write(term.red(term.bold(f"{term.cross} demo failed")) + " (see the step above)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
