"""The operator from the built image (`make image`), as uid 65532 with no passwd entry, against
the test cluster: it must verify and roll out a registered model, as the chart's pod would.

No kubelet: the container runs with `buildah run --isolation chroot` (or `docker run
--network=host`), which shares the host's network, so the API server and the ledger are
reachable; the flattened kubeconfig and the test's model directory are mounted at the paths
the operator is given.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.image import BuiltImage, build_image
from harness.modeltrust_objects import TOKEN
from harness.processes import stop_process

from .conftest import RolloutFactory, release_model_deployments

USER = "65532:65532"


@dataclass
class ImageOperator:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _command(image: BuiltImage, name: str, mounts: dict[Path, str], env: dict[str, str],
             argv: list[str]) -> list[str]:  # fmt: skip
    if image.builder == "docker":
        cmd = ["docker", "run", "--rm", "--name", name, "--network=host", "--user", USER]
        for src, dest in mounts.items():
            cmd += ["-v", f"{src}:{dest}"]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        return [*cmd, "--entrypoint", argv[0], image.hash_reference, *argv[1:]]
    cmd = image.buildah("run", "--isolation", "chroot", "--user", USER)
    for src, dest in mounts.items():
        cmd += ["-v", f"{src}:{dest}"]
    for k, v in env.items():
        cmd += ["--env", f"{k}={v}"]
    return [*cmd, name, "--", *argv]


@pytest.fixture
def operator(
    crds: Cluster, namespace: str, tmp_path: Path, operator_settings: dict[str, str]
) -> Iterator[ImageOperator]:
    image = build_image()
    kubeconfig = tmp_path / "kubeconfig"
    flat = crds.kubectl("config", "view", "--flatten", "--minify", "--raw")
    kubeconfig.write_text(flat.stdout)
    kubeconfig.chmod(0o644)
    tmp_path.chmod(0o755)
    env = {
        **operator_settings,
        "KUBECONFIG": "/etc/modeltrust/kubeconfig",
        "MODELTRUST_NAMESPACE": namespace,
        "MODELTRUST_LEDGER_TOKEN": TOKEN,
    }
    mounts = {kubeconfig: "/etc/modeltrust/kubeconfig:ro", tmp_path: f"{tmp_path}:ro"}
    argv = ["modeltrust", "operator", "-n", namespace, "--log-format", "plain"]
    name = ""
    if image.builder == "buildah":
        made = subprocess.run(image.buildah("from", "--pull=never", image.hash_reference),
                              capture_output=True, text=True, check=True)  # fmt: skip
        name = made.stdout.strip().splitlines()[-1]
    else:
        name = f"modeltrust-operator-{namespace}"
    log_path = tmp_path.parent / f"{namespace}-image-operator.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            _command(image, name, mounts, env, argv), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield ImageOperator(proc, log_path)
    finally:
        release_model_deployments(crds, namespace, proc)
        stop_process(proc, timeout=20)
        if image.builder == "buildah":
            subprocess.run(image.buildah("rm", name), capture_output=True, check=False)
        else:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_the_images_operator_rolls_out_a_verified_model(
    operator: ImageOperator, policy: str, rolled_out: RolloutFactory
) -> None:
    try:
        rolled_out("in-image", policy, seed=5)  # waits for Ready=True
    except AssertionError as exc:  # the operator's log says why (it may have crashed)
        raise AssertionError(f"{exc}\noperator log:\n{operator.log()[-4000:]}") from exc
    time.sleep(2)  # a few more timer rounds: a late crash would show here
    assert operator.proc.poll() is None, operator.log()[-4000:]
    log = operator.log()
    assert "Traceback" not in log, log[-4000:]
