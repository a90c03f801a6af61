"""A publisher's install: the chain and CLI wheels only, installed with --no-index from a
directory of wheels, as docs/install.md says; keygen and sign work there, and kopf,
onnxruntime and numpy are not installed. The commands that need an extra say which.

The wheels are built like `make wheels PARTS="chain cli"` does: `pip wheel` of the two
component trees with the dev lock as constraints. That step reaches the package index
(through pip's configuration) for the dependencies' wheels and the build backend; the
install step itself is --no-index, so nothing but that directory can be installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # about 30 s, mostly pip wheel

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("kopf", "kubernetes", "onnxruntime", "numpy", "onnx", "modeltrust-serving",
         "modeltrust-operator")  # fmt: skip


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False, env=env
    )


def test_chain_and_cli_wheels_install_offline_and_sign(tmp_path: Path) -> None:
    wheels, env_dir = tmp_path / "wheels", tmp_path / "venv"
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", wheels,
                "--constraint", REPO / "requirements/constraints.txt",
                REPO / "chain", REPO / "cli")  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    names = {p.name.split("-")[0].lower().replace("_", "-") for p in wheels.glob("*.whl")}
    assert {"modeltrust-chain", "modeltrust-cli"} <= names
    assert not names & set(HEAVY), f"pip wheel pulled in {names & set(HEAVY)}"

    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PIP_FIND_LINKS"] = ""  # only the directory given below
    installed = run(py, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheels,
                    "modeltrust-cli", env=env)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    dists = run(py, "-c", "import importlib.metadata as m; "
                "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))",
                env=env).stdout.split()  # fmt: skip
    assert "modeltrust-cli" in dists
    for heavy in HEAVY:
        assert heavy not in dists, f"{heavy} is installed for a publisher"
    # chain (cryptography, aiohttp, orjson, prometheus-client) + cli (click, tqdm), their own
    # dependencies, pip and setuptools: 21 today; the 56 of a full install is what this guards.
    assert len(dists) <= 22, dists

    modeltrust = env_dir / "bin" / "modeltrust"
    key = run(modeltrust, "keygen", "--out", tmp_path / "pub", env=env)
    assert key.returncode == 0, key.stderr
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx")
    signed = run(modeltrust, "sign", model, "--key", tmp_path / "pub.key", "--name", "m",
                 "--version", "1", "--out", tmp_path / "reg.json", env=env)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert (tmp_path / "reg.json").read_text().startswith("{")
    verify = run(modeltrust, "verify", "--help", env=env)
    assert verify.returncode == 0, verify.stderr

    # The commands that need an extra name it, with the pip command, and exit 3.
    serve = run(modeltrust, "serve", "--model-path", model, "--model-name", "m",
                "--digest", "sha256:" + "0" * 64, env=env)  # fmt: skip
    assert serve.returncode == 3, serve.stderr
    assert "pip install 'modeltrust-cli[serving]'" in serve.stderr
    operator = run(modeltrust, "operator", "--help", env=env)
    assert operator.returncode == 3, operator.stderr
    assert "pip install 'modeltrust-cli[operator]'" in operator.stderr
    policy = tmp_path / "policy.yaml"
    policy.write_text("spec: {}\n")
    by_policy = run(modeltrust, "verify", "--digest", "sha256:" + "0" * 64, "--policy", policy,
                    env=env)  # fmt: skip
    assert by_policy.returncode == 3, by_policy.stderr
    assert "pip install 'modeltrust-cli[operator]'" in by_policy.stderr
