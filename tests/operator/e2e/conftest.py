"""Real processes for operator e2e tests: the CRDs on the API server, a ledger
(`modeltrust ledger serve` on 127.0.0.1 with a SQLite file), the operator
(`python -m modeltrust.operator`), publisher keys, ONNX models, and a trust policy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster
from harness.onnx_models import mnist_mlp
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.client_flows import VerifiedEntry
from modeltrust.chain.entries import AuditEntry
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.signatures import (
    generate_private_key,
    key_id,
    public_key_pem,
    sign_registration,
    sign_revocation,
)

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO / "crds"
MODELTRUST = Path(sys.executable).with_name("modeltrust")
TOKEN = "e2e-audit-token"


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90, every: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    cluster.kubectl("apply", "-f", str(CRDS))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/modeldeployments.modeltrust.dev", "crd/modeltrustpolicies.modeltrust.dev",
    )  # fmt: skip
    return cluster


@dataclass
class Publisher:
    name: str
    key: Any = field(default_factory=lambda: generate_private_key("ed25519"))

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())

    @property
    def pem(self) -> str:
        return public_key_pem(self.key.public_key()).decode()


@dataclass
class Ledger:
    """One ledger process; stop()/start() keep its database and port."""

    workdir: Path
    publishers: list[Publisher]
    origin: str = "ledger.e2e.modeltrust.dev"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.signer = NoteSigner.generate(self.origin)
        (self.workdir / "publishers").mkdir(parents=True, exist_ok=True)
        for p in self.publishers:
            (self.workdir / "publishers" / f"{p.name}.pem").write_text(p.pem)
        (self.workdir / "signer.key").write_text(self.signer.signer_key() + "\n")
        (self.workdir / "tokens").write_text(TOKEN + "\n")
        self.db = self.workdir / "ledger.db"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key()

    def start(self) -> None:
        log = (self.workdir / "ledger.log").open("ab")
        self.proc = subprocess.Popen(
            [str(MODELTRUST), "ledger", "serve", "--db", str(self.db),
             "--key", str(self.workdir / "signer.key"), "--origin", self.origin,
             "--publishers", str(self.workdir / "publishers"),
             "--listen", f"127.0.0.1:{self.port}", "--static-tokens", str(self.workdir / "tokens"),
             "--max-batch", "256"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ledger exited: {(self.workdir / 'ledger.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/v1/checkpoint", timeout=2) as r:  # noqa: S310
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for("the ledger to serve", up, timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def snapshot(self, name: str) -> None:
        """Copy the database files (call while stopped)."""
        for f in self.workdir.glob("ledger.db*"):
            shutil.copy2(f, self.workdir / f"{name}.{f.name}")

    def restore(self, name: str) -> None:
        for f in self.workdir.glob("ledger.db*"):
            f.unlink()
        for f in self.workdir.glob(f"{name}.ledger.db*"):
            shutil.copy2(f, self.workdir / f.name.removeprefix(f"{name}."))

    def client(self) -> LedgerClient:
        return LedgerClient(self.url, verifier_key=self.verifier_key, token=TOKEN)

    def register(self, publisher: Publisher, model: Path, name: str, version: str) -> int:
        data = model.read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        reg = sign_registration(
            publisher.key, name=name, version=version, digest=digest, size=len(data)
        )
        with self.client() as c:
            return c.append(reg).index

    def revoke_digest(self, publisher: Publisher, digest: str, reason: str) -> int:
        rev = sign_revocation(publisher.key, target_kind="digest", target=digest, reason=reason)
        with self.client() as c:
            return c.append(rev).index

    def audits(self, uid: str) -> list[AuditEntry]:
        with self.client() as c:
            found: list[VerifiedEntry] = c.audit_trail(uid=uid)
        return [ve.entry for ve in found if isinstance(ve.entry, AuditEntry)]


@pytest.fixture
def publishers() -> dict[str, Publisher]:
    # "trusted" is in the policy; "outsider" may write to the ledger but the policy ignores it.
    return {"trusted": Publisher("trusted"), "outsider": Publisher("outsider")}


@pytest.fixture
def ledger(tmp_path: Path, publishers: dict[str, Publisher]) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger", list(publishers.values()))
    led.start()
    try:
        yield led
    finally:
        led.stop()


@dataclass
class Operator:
    cluster: Cluster
    namespace: str
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **self.cluster.env,
            "MODELTRUST_NAMESPACE": self.namespace,
            "MODELTRUST_LEDGER_TOKEN": TOKEN,
            "MODELTRUST_TIMER_INTERVAL": "1",
            "MODELTRUST_IMAGE": "registry.example/modeltrust:e2e",
            "MODELTRUST_ACTOR": "e2e-operator",
            # The tests' models are files under the test's directory (Models.root).
            "MODELTRUST_LOCAL_MODEL_ROOT": str(self.workdir),
            # The timer also looks at each owned Deployment (drift the watch cannot see).
            "MODELTRUST_DRIFT_CHECK_INTERVAL": "2",
        }
        log = (self.workdir / "operator.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modeltrust.operator", "-n", self.namespace,
             "--log-format", "plain"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or an evicted pod."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return (self.workdir / "operator.log").read_text(errors="replace")


@pytest.fixture
def operator(crds: Cluster, namespace: str, tmp_path: Path) -> Iterator[Operator]:
    op = Operator(crds, namespace, tmp_path)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("MODELTRUST_E2E_SHOW_LOGS"):
            print(op.log()[-20000:])


@dataclass
class Models:
    root: Path

    def make(self, name: str, seed: int) -> tuple[Path, str]:
        path = mnist_mlp(self.root / f"{name}.onnx", seed=seed)
        return path, "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models(tmp_path: Path) -> Models:
    return Models(tmp_path / "models")


PolicyFactory = Callable[..., str]


@pytest.fixture
def make_policy(
    crds: Cluster, ledger: Ledger, publishers: dict[str, Publisher], namespace: str
) -> Iterator[PolicyFactory]:
    """Apply a cluster-scoped ModelTrustPolicy trusting only the "trusted" publisher;
    keyword arguments replace spec fields (enforcement, revocationAction, ledger, ...)."""
    created: list[str] = []

    def make(suffix: str = "", **spec: Any) -> str:
        name = f"policy-{namespace}" + (f"-{suffix}" if suffix else "")
        body = {
            "apiVersion": "modeltrust.dev/v1alpha1",
            "kind": "ModelTrustPolicy",
            "metadata": {"name": name},
            "spec": {
                "ledger": {"url": ledger.url, "verifierKey": ledger.verifier_key},
                "publishers": [{"name": "trusted", "publicKey": publishers["trusted"].pem}],
                "reverifyInterval": "10s",
                **spec,
            },
        }
        crds.kubectl("apply", "-f", "-", input=json.dumps(body))
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


def model_deployment(
    namespace: str,
    name: str,
    policy: str,
    uri: str,
    digest: str,
    *,
    version: str = "1.0.0",
    replicas: int = 1,
) -> dict[str, Any]:
    return {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "mnist", "version": version, "uri": uri, "digest": digest},
            "replicas": replicas,
            "policy": policy,
        },
    }


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
