"""`make demo` end to end: hack/demo.py as a user runs it, against the session's cluster.

The demo runs with --use-current-context and KUBECONFIG naming the e2e cluster, so it
reuses that cluster and works in its own namespace. The tests read its output as a
person would (every step ticked, Ready, the two refusals with the operator's reasons,
audit entries proven, the ledger verified) and check that it leaves nothing behind:
no process, no namespace, no policy, no work directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cluster import Cluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "hack" / "demo.py"
STEPS = 14


def demo_env(kubeconfig: Path, base: dict[str, str]) -> dict[str, str]:
    env = {**base, "KUBECONFIG": str(kubeconfig), "PYTHONIOENCODING": "utf-8"}
    env.pop("NO_COLOR", None)  # colour must be off because stdout is not a terminal
    return env


def work_dir(output: str) -> Path:
    found = re.search(r"^work directory (\S+)$", output, re.MULTILINE)
    assert found, f"the demo did not name its work directory:\n{output}"
    return Path(found.group(1))


def demo_namespace(output: str) -> str:
    found = re.search(r"namespace (modeltrust-demo-[0-9a-f]{6})\b", output)
    assert found, f"the demo did not name its namespace:\n{output}"
    return found.group(1)


def processes_in(directory: Path) -> list[str]:
    """Processes whose working directory is `directory` (the demo starts its ledger and
    operator there), as "pid command" strings."""
    found = []
    directory = directory.resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == directory:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{proc.name} {cmd}")
        except OSError:
            continue
    return found


def assert_namespace_gone(cluster: Cluster, namespace: str) -> None:
    # Namespace deletion finishes in the background; it hangs for good if a finalizer
    # (the operator's, on ModelDeployments) was left behind.
    deadline = time.monotonic() + 90
    while True:
        got = cluster.kubectl("get", "namespace", namespace, check=False)
        if got.returncode != 0 and "NotFound" in got.stderr:
            return
        left = cluster.kubectl("get", "modeldeployments", "-n", namespace, check=False).stdout
        assert time.monotonic() < deadline, f"namespace {namespace} is not going away: {left}"
        time.sleep(1)


def assert_left_nothing(cluster: Cluster, output: str) -> None:
    namespace = demo_namespace(output)
    assert_namespace_gone(cluster, namespace)
    policy = cluster.kubectl("get", "modeltrustpolicy", namespace, check=False)
    assert policy.returncode != 0, f"policy {namespace} is still there"
    assert "NotFound" in policy.stderr
    work = work_dir(output)
    assert not work.exists(), f"the demo left its work directory {work}"


@pytest.mark.kwok_only(
    reason="`make demo`'s story is told on kwok: hack/demo.py serves its models on "
    "127.0.0.1, leaves the pods' image to the operator's default and names kwok's node, "
    "so its pods cannot start on a real node"
)
def test_demo_tells_the_whole_story(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--use-current-context"],
        env=demo_env(cluster.kubeconfig, cluster.env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"demo failed:\n{out}\n{result.stderr}"

    ticked = re.findall(rf"^ ✓ +(\d+)/{STEPS}  ", out, re.MULTILINE)
    assert [int(n) for n in ticked] == list(range(1, STEPS + 1)), out
    assert "✗" not in out
    assert "\x1b[" not in out, "no ANSI colour when stdout is not a terminal"

    assert re.search(r"✓ +9/14  Deploy digits 1\.0\.0: verified, Ready", out)
    assert re.search(
        r"^ +digits +digits +1\.0\.0 +1\.0\.0 +[0-9a-f]{12} +Verified +Enforced +True +2 ",
        out,
        re.MULTILINE,
    )
    assert re.search(r"Deployment digits: 2/2 available on kwok-node-0, pinned to sha256:", out)

    tampered = out[out.index("10/14") : out.index("11/14")]
    assert "refused: Verified=False, reason DigestMismatch" in tampered
    assert re.search(r"artifact digest sha256:[0-9a-f]{64}\s+does not match", tampered)
    unregistered = out[out.index("11/14") : out.index("12/14")]
    assert "refused: Verified=False, reason NotRegistered" in unregistered
    assert "no registration for sha256:" in unregistered
    assert "no Deployment was created" in unregistered

    serving = out[out.index("12/14") : out.index("13/14")]
    # What was asked next to what serves: never "1.1.0 ... True" alone while 1.0.0 serves.
    assert re.search(
        r"^ +digits +digits +1\.1\.0 +1\.0\.0 +[0-9a-f]{12} +DigestMismatch +Enforced +True ",
        serving,
        re.MULTILINE,
    )
    assert "Ready=True" in serving
    assert "still serving the previously verified" in serving

    audit = out[out.index("13/14") : out.index("14/14")]
    entry = r"^ +#\d+ +(rollout|refuse) +(allowed|refused) +(\S+) +gen (\d+)"
    trail = re.findall(entry, audit, re.MULTILINE)
    assert ("rollout", "allowed", "digits", "1") in trail
    assert ("refuse", "refused", "digits", "2") in trail
    assert ("refuse", "refused", "digits-preview", "1") in trail
    proven = re.search(r"(\d+) audit entries, each proven against a signed checkpoint", audit)
    assert proven, audit
    assert int(proven.group(1)) == len(trail) == audit.count("✓ proven")

    assert re.search(r"OK: \d+ entries in \d+ blocks verified from genesis", out)
    assert re.search(r"demo finished in [\d.]+s", out)
    assert_left_nothing(cluster, out)


def test_ctrl_c_stops_everything_the_demo_started(cluster: Cluster) -> None:
    proc = start_demo(cluster)
    output = read_until_operator_started(proc)
    work = work_dir(output)
    assert processes_in(work), "the ledger and operator run in the work directory"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    output += rest
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert re.search(r"cleaned up: .*operator.*ledger", output), output
    assert processes_in(work) == []
    assert_left_nothing(cluster, output)


def start_demo(cluster: Cluster) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(DEMO), "--use-current-context"],
        env=demo_env(cluster.kubeconfig, cluster.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until_operator_started(proc: subprocess.Popen[str]) -> str:
    """The demo's output up to step 5 (the ledger and the operator both running)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.match(r" ✓ +5/14  Start the operator", line):
            break
    output = "".join(lines)
    assert "5/14  Start the operator" in output, f"the demo never got to the operator:\n{output}"
    return output


def test_a_crashed_operator_fails_the_step_clearly(cluster: Cluster) -> None:
    proc = start_demo(cluster)
    output = read_until_operator_started(proc)
    work = work_dir(output)
    operators = [p for p in processes_in(work) if " operator " in p]
    assert len(operators) == 1, processes_in(work)
    os.kill(int(operators[0].split()[0]), signal.SIGKILL)
    rest, _ = proc.communicate(timeout=180)
    output += rest
    try:
        assert proc.returncode == 1, output
        assert re.search(r"^ ✗ +9/14  Deploy digits 1\.0\.0", output, re.MULTILINE), output
        assert "error: the operator was killed by SIGKILL; the end of" in output
        assert "10/14" not in output, "no step runs after a failed one"
        assert "demo failed" in output
        assert processes_in(work) == []
        assert (work / "operator.log").exists(), "logs are kept after a failure"
        namespace = demo_namespace(output)
        assert_namespace_gone(cluster, namespace)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_demo_fails_with_a_clear_message_and_exit_1(tmp_path: Path) -> None:
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n"
        "clusters: [{name: nowhere, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: nowhere, context: {cluster: nowhere, user: nobody}}]\n"
        "users: [{name: nobody, user: {}}]\n"
    )
    result = subprocess.run(
        [sys.executable, str(DEMO), "--use-current-context", "--timeout", "20"],
        env=demo_env(unreachable, dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert re.search(r"^ ✗ +1/14  Connect to the current cluster", out, re.MULTILINE), out
    assert f"KUBECONFIG={unreachable} names a cluster that does not answer" in out
    assert "demo failed" in out
    assert "2/14" not in out, "no step runs after a failed one"
    assert not work_dir(out).exists(), "nothing worth keeping: the work directory is removed"
