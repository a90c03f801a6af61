"""docs/install.md's "Quick start without Helm", run as written, on a new user's cluster.

The test reads the section's ```sh block (continuation lines joined, comments dropped) and
runs every command in it with bash, in a scratch directory laid out as a user's checkout of
the repository: `crds/` (the repository's), the user's `model.onnx`, `my-policy.yaml` and
`examples/modeldeployment.yaml` as the doc tells the user to edit it. A command ending in
`&` (the ledger, the operator) runs as a process of the test's own, waited for until it is
up and stopped at the end. Nothing in a command is changed but what the doc leaves to the
user, in SUBSTITUTIONS below; a placeholder the table does not know fails the test, and so
does a command that fails, so the test breaks when the doc stops working.

Then it checks what a user checks: `kubectl -n ml-prod get modeldeployments` lists the
model, the ModelDeployment is Verified, its Deployment exists, and `modeltrust audit` proves
the rollout's audit entry on the ledger.

The cluster is a private kwok control plane (an empty cluster, as a new user's: the doc
creates cluster-wide CRDs and the namespaces modeltrust-system and ml-prod). Its pods run
nothing, which is fine: the operator downloads and verifies the model itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import modeltrust.operator
from harness.cluster import Cluster, ClusterError, LocalControlPlane
from harness.file_server import serve_files
from harness.ledger import free_port
from harness.onnx_models import mnist_mlp
from harness.waiting import wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INSTALL_DOC = REPO / "docs" / "install.md"
SECTION = re.compile(r"^## (?:\d+\. )?Quick start without Helm$", re.MULTILINE)
EXAMPLES = REPO / "examples"
# The `modeltrust` console script of this interpreter's environment (the venv's).
VENV_BIN = Path(sys.executable).parent
MODELTRUST = VENV_BIN / "modeltrust"

# Made up, pinned as the operator requires: kwok's pods pull nothing.
IMAGE_DIGEST = "0a" * 32
# What the doc leaves to the user, and why the test fills it in: every substitution the
# test makes in a documented command. Each must be used (a stale one fails the test).
SUBSTITUTIONS = {
    "<verifier key>": "the verifier key `modeltrust ledger keygen` printed",
    "<digest>": "the model server image's digest (a made-up one: kwok pulls no image)",
    "127.0.0.1:8080": "the ledger's address: a free port, so parallel runs never collide",
}
# Anything shaped like a placeholder left after the substitutions fails the test.
PLACEHOLDER = re.compile(r"<[^<>\s][^<>]*>")

# The files the doc tells the user to write, written (from examples/) just before the
# first command that names them; each must be named by some command.
POLICY_FILE = "my-policy.yaml"
DEPLOYMENT_FILE = "examples/modeldeployment.yaml"
MODEL_FILE = "model.onnx"

COMMAND_TIMEOUT = 120  # seconds, for one foreground command
UP_TIMEOUT = 60  # seconds, for a background command to be up
VERIFIED_TIMEOUT = 60  # seconds, for the operator's decision


# --- the doc ------------------------------------------------------------------------------


def section_block(markdown: str) -> str:
    """The one ```sh block of the quick start section."""
    start = SECTION.search(markdown)
    assert start, f"{INSTALL_DOC.name} has no section 'Quick start without Helm'"
    rest = markdown[start.end() :]
    end = re.search(r"^## ", rest, re.MULTILINE)
    section = rest[: end.start()] if end else rest
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"expected one ```sh block in the quick start, found {len(blocks)}"
    return str(blocks[0])


def strip_comment(line: str) -> str:
    """`line` without its shell comment: a `#` starting a word, outside quotes."""
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(block: str) -> list[str]:
    """The block's commands: comments dropped, `\\` continuation lines joined."""
    commands: list[str] = []
    pending = ""
    for line in block.splitlines():
        code = strip_comment(line)
        if code.endswith("\\"):
            pending += code[:-1].strip() + " "
            continue
        command = (pending + code.strip()).strip()
        pending = ""
        if command:
            commands.append(command)
    assert not pending, f"the block ends in a continuation line: {pending!r}"
    return commands


def background(command: str) -> str | None:
    """The command without its trailing `&` when it runs in the background, else None."""
    if command.endswith("&") and not command.endswith("&&"):
        return command[:-1].rstrip()
    return None


def program(command: str) -> str:
    """The command's words after its leading VAR=value assignments, e.g.
    'modeltrust ledger serve --db ...'."""
    words = shlex.split(command)
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return " ".join(words)


def test_the_block_parses_as_a_shell_reads_it() -> None:
    block = (
        "# a comment\n"
        "a --x 1 \\\n"
        "  --y '#not a comment' # a comment\n"
        "\n"
        'V="$(cat f)" \\\n'
        "  b -n ns &\n"
        "c && d   # e\n"
    )
    commands = shell_commands(block)
    assert commands == ["a --x 1 --y '#not a comment'", 'V="$(cat f)" b -n ns &', "c && d"]
    assert background(commands[1]) == 'V="$(cat f)" b -n ns'
    assert background(commands[2]) is None
    assert program('V="$(cat f)" W=1 b -n ns') == "b -n ns"


# --- the user's files ------------------------------------------------------------------------


def user_policy(verifier_key: str, ledger_url: str, publisher_pem: str, scope: str) -> Any:
    """examples/modeltrustpolicy.yaml with the edits the doc's comment lists, no other: the
    ledger's URL, verifier key and origin; one publisher, acme-ml, with publisher.pub as its
    key and no keyId, threshold 1; the scope; the placeholders deleted (witnesses, quorum,
    trust anchor, runtime). Every other field keeps the example's value."""
    policy = yaml.safe_load((EXAMPLES / "modeltrustpolicy.yaml").read_text())
    spec = policy["spec"]
    ledger = spec["ledger"]
    ledger["url"] = ledger_url
    ledger["verifierKey"] = verifier_key
    ledger["origin"] = verifier_key.split("+")[0]  # keygen's --origin
    for unneeded in (
        "witnesses",
        "witnessQuorum",
        "maxCosignatureAge",
        "mirrors",
        "minimumCheckpoint",
    ):
        del ledger[unneeded]
    (publisher,) = (p for p in spec["publishers"] if p["name"] == "acme-ml")
    publisher["publicKey"] = publisher_pem
    del publisher["keyId"]  # the example key's id
    spec["publishers"] = [publisher]
    spec["threshold"] = 1
    spec["namespaces"] = [scope]
    del spec["runtime"]  # absent: the operator's own image (MODELTRUST_IMAGE)
    return policy


def user_deployment(uri: str, digest: str, policy: str) -> Any:
    """examples/modeldeployment.yaml after "setting uri, digest and policy"."""
    deployment = yaml.safe_load((EXAMPLES / "modeldeployment.yaml").read_text())
    model = deployment["spec"]["model"]
    model["uri"] = uri
    model["digest"] = digest
    deployment["spec"]["policy"] = policy
    return deployment


# --- running the commands ---------------------------------------------------------------------


@dataclass
class Background:
    """A documented `... &` command: a bash process group of the test's own."""

    command: str
    log: Path
    proc: subprocess.Popen[bytes]

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log.name} (last lines) ---\n" + "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"`{self.command}` exited with {self.proc.returncode}\n{self.tail()}"
            )

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL to what is left of it after 20 s."""
        self.signal_group(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=20)
        self.signal_group(signal.SIGKILL)
        self.proc.wait()

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # nothing of it is left
            os.killpg(self.proc.pid, sig)  # the group bash leads (start_new_session)


@dataclass
class QuickStart:
    """The documented commands run one by one in `workdir`, as a user's shell would."""

    cluster: Cluster
    workdir: Path
    env: dict[str, str]
    port: int
    store_url: str
    digest: str
    verifier_key: str = ""
    policy_name: str = ""
    ran: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    written: set[str] = field(default_factory=set)
    outputs: dict[str, str] = field(default_factory=dict)
    processes: list[Background] = field(default_factory=list)

    @property
    def ledger_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def substitute(self, command: str) -> str:
        values = {
            "<verifier key>": self.verifier_key,
            "<digest>": IMAGE_DIGEST,
            "127.0.0.1:8080": f"127.0.0.1:{self.port}",
        }
        assert values.keys() == SUBSTITUTIONS.keys()
        for placeholder, value in values.items():
            if placeholder in command:
                assert value, f"`{command}` needs {SUBSTITUTIONS[placeholder]}, not known yet"
                command = command.replace(placeholder, value)
                self.used.add(placeholder)
        left = PLACEHOLDER.findall(command)
        assert not left, f"`{command}`: the test has no value for {left}; add it to SUBSTITUTIONS"
        return command

    def write_user_files(self, command: str) -> None:
        writers: dict[str, Callable[[], Any]] = {
            POLICY_FILE: self.policy,
            DEPLOYMENT_FILE: self.deployment,
        }
        for name, make in writers.items():
            if name in command and name not in self.written:
                path = self.workdir / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(yaml.safe_dump(make(), sort_keys=False))
                self.written.add(name)
        if MODEL_FILE in command:
            self.written.add(MODEL_FILE)

    def policy(self) -> Any:
        pem = (self.workdir / "publisher.pub").read_text()
        scope = yaml.safe_load((EXAMPLES / "modeldeployment.yaml").read_text())
        body = user_policy(self.verifier_key, self.ledger_url, pem, scope["metadata"]["namespace"])
        self.policy_name = body["metadata"]["name"]
        return body

    def deployment(self) -> Any:
        assert self.policy_name, f"{DEPLOYMENT_FILE} names the policy: apply {POLICY_FILE} first"
        return user_deployment(f"{self.store_url}/{MODEL_FILE}", self.digest, self.policy_name)

    def run(self, documented: str) -> None:
        self.write_user_files(documented)
        command = self.substitute(documented)
        in_background = background(command)
        if in_background is not None:
            self.start(in_background)
        else:
            self.outputs[documented] = self.shell(command)
            if program(command).startswith("modeltrust ledger keygen"):
                self.verifier_key = self.outputs[documented].strip()
                assert re.fullmatch(r"[^+\s]+\+[0-9a-f]{8}\+\S+", self.verifier_key), (
                    f"`{command}` printed no verifier key: {self.verifier_key!r}"
                )
        self.ran.append(documented)

    def shell(self, command: str) -> str:
        try:
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=self.workdir,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"`{command}` did not finish in {COMMAND_TIMEOUT}s") from exc
        assert done.returncode == 0, (
            f"`{command}` failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            + "".join(f"\n{p.tail()}" for p in self.processes)
        )
        return done.stdout

    def start(self, command: str) -> None:
        log = self.workdir / f"background-{len(self.processes)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as one
            )
        started = Background(command, log, proc)
        self.processes.append(started)
        name = program(command)
        ready = next((check for prefix, check in self.up_checks() if name.startswith(prefix)), None)
        assert ready is not None, f"no check that `{name}` is up: add one to up_checks()"
        try:
            wait_for(f"`{name}` to be up", lambda: ready(started), timeout=UP_TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.policy_status()}\n{started.tail()}") from None

    def up_checks(self) -> list[tuple[str, Callable[[Background], bool]]]:
        return [
            ("modeltrust ledger serve", self.ledger_up),
            ("modeltrust operator", self.operator_up),
        ]

    def ledger_up(self, ledger: Background) -> bool:
        ledger.check_running()
        try:
            with urllib.request.urlopen(f"{self.ledger_url}/readyz", timeout=2) as r:  # noqa: S310 - loopback
                return bool(r.status == 200)
        except OSError:
            return False

    def operator_up(self, operator: Background) -> bool:
        """Up once it has checked the policy and its ledger (`kubectl get mtp`)."""
        operator.check_running()
        assert self.policy_name, f"the operator is started before {POLICY_FILE} is applied"
        policy = get_json(self.cluster, "modeltrustpolicy", self.policy_name)
        conditions = {
            c["type"]: c["status"] for c in policy.get("status", {}).get("conditions", [])
        }
        return conditions.get("Valid") == "True" and conditions.get("LedgerReachable") == "True"

    def policy_status(self) -> str:
        if not self.policy_name:
            return "no policy applied yet"
        policy = get_json(self.cluster, "modeltrustpolicy", self.policy_name)
        return f"policy {self.policy_name} status: {policy.get('status')}"

    def stop_all(self) -> None:
        for started in reversed(self.processes):  # the operator before the ledger
            started.stop()

    def diagnostics(self) -> str:
        return "\n".join(p.tail() for p in self.processes)


def get_json(cluster: Cluster, *args: str) -> Any:
    """`kubectl get ARGS -o json`, parsed."""
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


# --- the test -----------------------------------------------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[Cluster]:
    """A new user's empty cluster: a kwok control plane of this test's own."""
    plane = LocalControlPlane(
        name=f"quickstart-{os.getpid()}",
        workdir=Path(tempfile.mkdtemp(prefix="modeltrust-quickstart-")),
    )
    try:
        started = plane.up()
    except ClusterError as exc:
        pytest.fail(f"the private control plane did not start: {exc}", pytrace=False)
    try:
        yield started
    finally:
        plane.down()
        shutil.rmtree(plane.workdir, ignore_errors=True)


def command_env(cluster: Cluster, workdir: Path) -> dict[str, str]:
    """A user's shell: kubectl and the venv's `modeltrust` on PATH, KUBECONFIG naming the
    cluster, no MODELTRUST_* variable but those the doc sets. A PYTHONPATH (sources run
    from another tree than the venv's editable install) is made absolute, since the
    commands run in `workdir`; the check below proves they run the code under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELTRUST_")}
    assert cluster.bin_dir is not None
    env["PATH"] = os.pathsep.join([str(cluster.bin_dir), str(VENV_BIN), env.get("PATH", "")])
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    if env.get("PYTHONPATH"):
        entries = env["PYTHONPATH"].split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(str(Path(e).resolve()) for e in entries if e)
    assert shutil.which("modeltrust", path=env["PATH"]) == str(MODELTRUST)
    assert shutil.which("openssl", path=env["PATH"]), "the quick start needs openssl"
    where = "import modeltrust.cli, modeltrust.operator as o; print(o.__file__)"
    theirs = subprocess.run(
        [str(VENV_BIN / "python"), "-c", where],
        cwd=workdir, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert theirs == modeltrust.operator.__file__, "the commands would run other sources"
    return env


def test_the_quick_start_works_as_documented(private_cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    commands = shell_commands(section_block(INSTALL_DOC.read_text()))
    assert commands, "the quick start has no commands"

    workdir = tmp_path / "checkout"
    workdir.mkdir()
    (workdir / "crds").symlink_to(REPO / "crds")
    store = tmp_path / "store"
    model = mnist_mlp(store / MODEL_FILE)
    shutil.copy(model, workdir / MODEL_FILE)
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()

    with serve_files(store) as store_url:
        run = QuickStart(
            cluster=private_cluster,
            workdir=workdir,
            env=command_env(private_cluster, workdir),
            port=free_port(),
            store_url=store_url,
            digest=digest,
        )
        try:
            for command in commands:
                run.run(command)
            # Every documented command ran, each once, in order; every substitution and
            # every file of the user's was needed.
            assert run.ran == commands
            assert len(run.ran) == len(commands)
            assert run.used == SUBSTITUTIONS.keys()
            assert run.written == {POLICY_FILE, DEPLOYMENT_FILE, MODEL_FILE}
            listing = [c for c in commands if re.search(r"^kubectl .*get modeldeployments", c)]
            assert listing, "the quick start ends without listing the ModelDeployments"
            check_what_a_user_checks(run, listing[-1], digest)
        except BaseException:
            print(run.diagnostics())
            raise
        finally:
            run.stop_all()
    print(f"quick start: {len(commands)} commands and checks in {time.monotonic() - started:.1f}s")


def check_what_a_user_checks(run: QuickStart, listing: str, digest: str) -> None:
    deployment = yaml.safe_load((run.workdir / DEPLOYMENT_FILE).read_text())
    namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
    assert re.search(rf"^{name}\s", run.outputs[listing], re.MULTILINE), run.outputs[listing]

    def conditions() -> list[dict[str, str]]:
        md = get_json(run.cluster, "modeldeployment", name, "-n", namespace)
        found: list[dict[str, str]] = md.get("status", {}).get("conditions", [])
        return found

    def verified() -> bool:
        return any(c["type"] == "Verified" and c["status"] == "True" for c in conditions())

    try:
        wait_for(f"{namespace}/{name} Verified=True", verified, timeout=VERIFIED_TIMEOUT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its conditions: {conditions()}") from None

    # The documented listing again, now with the operator's decision in it.
    again = run.shell(run.substitute(listing))
    version = deployment["spec"]["model"]["version"]
    model = deployment["spec"]["model"]["name"]
    row = rf"^{name}\s+{model}\s+{version}\s+{version}\s+{digest[7:19]}\s+Verified\s+Enforced\s"
    assert re.search(row, again, re.MULTILINE), again

    owned = get_json(run.cluster, "deployment", name, "-n", namespace)
    images = [c["image"] for c in owned["spec"]["template"]["spec"]["containers"]]
    assert f"registry.example.com/modeltrust@sha256:{IMAGE_DIGEST}" in images, images

    trail = run.shell(
        f"modeltrust audit --namespace {namespace} --name {name} --json "
        f"--ledger {run.ledger_url} --ledger-key '{run.verifier_key}'"
    )
    entries = [e["entry"] for e in json.loads(trail)["entries"]]
    decisions = [(e["action"], e["decision"], e["digest"]) for e in entries]
    assert ("rollout", "allowed", digest) in decisions, trail
