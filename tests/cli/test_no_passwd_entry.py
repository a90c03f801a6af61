"""Every `modeltrust` command the image runs, as the image runs it in a pod: a uid with no
passwd entry and no HOME (tests/harness/nopasswd.py explains how).

Anything that asks for the user's name or home directory (getpass.getuser(), Path.home())
fails there and only there; the operator's version of this is in
tests/operator/e2e/test_no_passwd_entry.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from harness.ledger import MODELTRUST, LedgerProcess
from harness.modeltrust_objects import Publisher
from harness.nopasswd import env_without_home, environment_is_passwdless, without_passwd
from harness.onnx_models import mnist_mlp
from harness.processes import stop_process

pytestmark = pytest.mark.integration


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        without_passwd([str(MODELTRUST), *args]), env=env_without_home(os.environ), cwd=cwd,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_commands_below_really_run_as_a_uid_with_no_passwd_entry() -> None:
    environment_is_passwdless()


@pytest.mark.parametrize(
    "command",
    [[], ["operator"], ["ledger", "serve"], ["ledger", "keygen"], ["fetch"], ["serve"]],
    ids=lambda c: " ".join(c) or "modeltrust",
)
def test_help(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_ledger_keygen_and_fetch(tmp_path: Path) -> None:
    key = tmp_path / "signer.key"
    result = _run("ledger", "keygen", "--origin", "ledger.test/nopasswd", "--out", str(key))
    assert result.returncode == 0, result.stderr
    assert key.read_text().startswith("PRIVATE+KEY+")

    source = tmp_path / "model.onnx"
    source.write_bytes(os.urandom(100_000))
    digest = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "dest" / "model.onnx"
    # cwd / as in a pod whose working directory is not writable
    result = _run(
        "fetch", "--uri", str(source), "--digest", digest, "--dest", str(dest), cwd=Path("/")
    )
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == source.read_bytes()


def test_ledger_serve_accepts_a_registration(tmp_path: Path) -> None:
    publisher = Publisher("nopasswd")
    ledger = LedgerProcess(tmp_path / "ledger", [publisher], no_passwd=True)
    ledger.start()
    try:
        model = tmp_path / "m.onnx"
        model.write_bytes(b"not really a model, the ledger does not care")
        index = ledger.register(publisher, model, "m", "1.0.0")
        assert index == 0
        assert ledger.proc is not None
        assert ledger.proc.poll() is None
    finally:
        ledger.stop()
    log = (tmp_path / "ledger" / "ledger.log").read_text()
    assert "Traceback" not in log, log


def test_serve_answers_an_inference(tmp_path: Path) -> None:
    model = mnist_mlp(tmp_path / "mnist.onnx", seed=3)
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    process = subprocess.Popen(
        without_passwd([str(MODELTRUST), "serve", "--model-path", str(model),
                        "--model-name", "mnist", "--digest", digest, "--port", "0"]),
        env=env_without_home(os.environ), stderr=subprocess.PIPE, cwd="/",
    )  # fmt: skip
    try:
        assert process.stderr is not None
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline().decode()
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
            elif not line and process.poll() is not None:
                break
        assert port, f"the server did not start (exit {process.poll()})"
        tensor = {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}
        body = json.dumps({"inputs": [tensor]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/mnist/infer", data=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            outputs = json.load(response)["outputs"]
        assert outputs
        assert outputs[0]["shape"][-1] == 10
    finally:
        stop_process(process, timeout=10)
