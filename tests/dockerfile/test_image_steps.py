"""The Dockerfile's own build and entry-point commands, run in a clean virtual environment.

No Docker here, so the test does what the image build does, step by step, from the
Dockerfile itself: it parses the stages, runs the builder's RUN line (wheels of the four
components and their pinned dependencies) and the runtime's RUN line (a fresh virtual
environment that installs those wheels only), then runs the ENTRYPOINT with the subcommands
the chart and the operator use. Paths the Dockerfile puts in variables ($WHEELS, $VENV) are
pointed at temporary directories; everything else runs verbatim, so the test cannot drift
from the file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"

# Subcommands every deployment of the image runs (the chart, the operator's pod template).
ENTRYPOINT_COMMANDS: tuple[list[str], ...] = (
    [],
    ["ledger", "serve"],
    ["ledger", "keygen"],
    ["serve"],
    ["fetch"],
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arg = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = arg.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, arg.strip()))
    return stages


def shell_command(run_arg: str) -> str:
    """A RUN line's shell command without its BuildKit flags (--mount=..., --network=...)."""
    command = run_arg
    while command.startswith("--"):
        _, _, command = command.partition(" ")
        command = command.lstrip()
    return command


def stage(stages: list[Stage], name: str) -> Stage:
    for s in stages:
        if s.name == name:
            return s
    raise AssertionError(f"the Dockerfile has no stage named {name!r}")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.mark.unit
def test_runtime_stage_is_wheels_only_and_runs_as_a_numeric_non_root_user(
    stages: list[Stage],
) -> None:
    runtime = stages[-1]
    assert runtime.name == "runtime", "the last stage is the image that ships"
    assert not runtime.all("COPY"), "the runtime stage copies no sources; it installs wheels"
    (install,) = runtime.all("RUN")
    assert "--mount=type=bind,from=builder" in install
    assert "--no-index" in install, "the runtime installs only the builder's wheels"
    users = runtime.all("USER")
    assert users, "the runtime stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER must be a numeric uid, not {uid!r}"
    assert int(uid) != 0, "USER must not be root"
    assert gid.isdigit()
    assert int(gid) != 0
    assert json.loads(runtime.all("ENTRYPOINT")[-1]) == ["modeltrust"]


@pytest.mark.unit
def test_base_image_is_pinned_python_311_slim(stages: list[Stage]) -> None:
    text = DOCKERFILE.read_text()
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert match, "the base image is an ARG so a digest pin can be passed at build time"
    assert match.group(1) == "python:3.11-slim-bookworm"
    assert {s.base for s in stages} == {"${PYTHON_IMAGE}"}


@pytest.mark.unit
def test_builder_copies_repository_paths_to_the_same_relative_place(stages: list[Stage]) -> None:
    # The test runs the builder's RUN in the repository root; that is faithful only if every
    # COPY puts a repository path at the same path under the WORKDIR.
    builder = stage(stages, "builder")
    for copy in builder.all("COPY"):
        source, dest = shlex.split(copy)
        assert source.rstrip("/") == dest.rstrip("/"), copy
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"


@pytest.mark.unit
def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "allow-list: everything is excluded unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {"requirements/runtime.txt", "chain", "serving", "operator", "cli"}


@pytest.mark.integration
def test_hadolint_accepts_the_dockerfile() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint is missing: pip install -r requirements/dev.in"
    result = subprocess.run(
        [str(hadolint), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.slow  # builds every wheel and installs them: about 3 minutes
def test_image_build_steps_install_a_working_entry_point(
    stages: list[Stage], tmp_path: Path
) -> None:
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    env = {
        **os.environ,
        "WHEELS": str(wheels),
        "VENV": str(venv),
        # `python` is this interpreter (3.11, with pip), as in the python:3.11 base image.
        "PATH": f"{venv / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
        + os.environ.get("PATH", ""),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)

    for name in ("builder", "runtime"):
        for run in stage(stages, name).all("RUN"):
            command = shell_command(run)
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, (
                f"stage {name}: RUN {command}\nexit {result.returncode}\n{result.stderr[-3000:]}"
            )

    built = sorted(p.name.split("-")[0] for p in wheels.glob("modeltrust_*.whl"))
    assert built == [
        "modeltrust_chain",
        "modeltrust_cli",
        "modeltrust_operator",
        "modeltrust_serving",
    ]
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
         "print('\\n'.join(sorted(d.metadata['Name'] for d in m.distributions())))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert "pip" not in installed, "the runtime removes pip after installing the wheels"
    for dev_only in ("pytest", "ruff", "mypy", "hypothesis"):
        assert dev_only not in installed, f"{dev_only} must not be in the image"

    entrypoint = json.loads(stage(stages, "runtime").all("ENTRYPOINT")[-1])
    executable = venv / "bin" / entrypoint[0]
    assert executable.exists(), f"ENTRYPOINT {entrypoint[0]} is not installed in {venv / 'bin'}"
    for sub in ENTRYPOINT_COMMANDS:
        result = subprocess.run(
            [str(executable), *entrypoint[1:], *sub, "--help"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        shown = " ".join(["modeltrust", *sub, "--help"])
        assert result.returncode == 0, f"{shown} failed (exit {result.returncode}): {result.stderr}"
        assert "Usage:" in result.stdout, f"{shown} printed no usage:\n{result.stdout}"

    # The chart's operator container runs `modeltrust operator ...` (argparse's own help).
    operator = subprocess.run(
        [str(executable), *entrypoint[1:], "operator", "--help"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert operator.returncode == 0, f"the operator entry point failed: {operator.stderr}"
    assert "--all-namespaces" in operator.stdout
