"""A shell in the model server's container cannot read or write the server's memory.

`kubectl exec` into the model server gives a process of the server's own uid (with every
capability dropped). A dumpable process of that uid can be ptraced and its /proc/PID/mem
read and written: the verified model and the code serving it, changed in memory. The
server makes itself non-dumpable before it loads the model. Checked for real: both
processes run as uid 65532 in one user namespace without capabilities, as in the pod; a
plain process of that uid is the control (its memory is open to the same probe)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.nopasswd import env_without_home, without_passwd
from serving.helpers import sha256_digest

pytestmark = pytest.mark.integration

# Runs inside the user namespace: start TARGET, wait for the line on stderr that says it is
# up (the server's "serving model ..."), then open its memory as a debugger or injector would.
DRIVER = r"""
import json, subprocess, sys
target = json.loads(sys.argv[1])
p = subprocess.Popen(target, stderr=subprocess.PIPE, text=True)
first = ""
while True:
    first = p.stderr.readline()
    if not first or first.startswith(("up", "serving model")):
        break
try:
    with open(f"/proc/{p.pid}/mem", "rb"):
        print("memory open")
except PermissionError:
    print("memory closed")
finally:
    p.kill()
    p.wait()
print("target said:", first.strip())
"""


def probe(target: list[str]) -> str:
    result = subprocess.run(
        without_passwd([sys.executable, "-c", DRIVER, json.dumps(target)]),
        capture_output=True, text=True, timeout=120, env=env_without_home(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_model_servers_memory_is_closed_to_its_own_uid(mnist_path: Path) -> None:
    control = probe(
        [
            sys.executable,
            "-c",
            "import sys, time; print('up', file=sys.stderr, flush=True); time.sleep(60)",
        ]
    )
    assert "memory open" in control  # the probe works: a dumpable process is open to it

    served = probe(
        [sys.executable, "-c", "from modeltrust.cli.main import main; main()", "serve",
         "--model-path", str(mnist_path), "--model-name", "mnist",
         "--digest", sha256_digest(mnist_path), "--port", "0"]
    )  # fmt: skip
    assert "serving model 'mnist'" in served  # it got as far as listening
    assert "memory closed" in served
