"""The built image itself: `make image` (hack/build-image.sh), then real commands inside it
as uid 65532, which has no passwd entry there, with no kubelet involved.

The build is cached by the hash of its context, so with an unchanged tree this takes
seconds; the first run builds (minutes). Nothing here is skipped: without Docker or buildah
the build fails and says what to install.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.image import BuiltImage, Container, build_image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
USER = "65532:65532"  # the Dockerfile's USER and the chart's runAsUser
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
HOST_CA_BUNDLE = Path(CA_BUNDLE)


@pytest.fixture(scope="module")
def image() -> BuiltImage:
    return build_image()


@pytest.fixture(scope="module")
def container(image: BuiltImage) -> Iterator[Container]:
    with image.container() as c:
        yield c


def run(container: Container, *argv: str) -> str:
    # No HOME, as under a runtime that finds no passwd entry to take it from.
    result = container.run(["env", "-u", "HOME", *argv], user=USER)
    assert result.returncode == 0, f"{' '.join(argv)}: exit {result.returncode}\n{result.stderr}"
    return result.stdout


def test_the_image_is_what_the_chart_deploys(image: BuiltImage) -> None:
    chart = yaml.safe_load((REPO / "charts" / "modeltrust" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "modeltrust" / "values.yaml").read_text())
    assert image.reference == f"{values['image']['repository']}:{chart['appVersion']}"
    assert image.archive_path.is_file()
    # `ctr images import` names the image by the archive's tags; the kubelet asks containerd
    # for the chart's "modeltrust:0.1.0" under its normalized name docker.io/library/...
    with tarfile.open(image.archive_path) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(member)
    assert len(manifest) == 1
    tags = manifest[0]["RepoTags"]
    assert f"docker.io/library/{image.reference}" in tags
    assert all(t.rpartition("/")[2] in (image.reference, image.hash_reference) for t in tags), tags


def test_the_image_runs_as_numeric_non_root_with_the_modeltrust_entry_point(
    image: BuiltImage,
) -> None:
    if image.builder == "docker":
        cmd = ["docker", "image", "inspect", image.hash_reference]
    else:
        cmd = image.buildah("inspect", "--type", "image", image.hash_reference)
    found = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    config = found[0]["Config"] if image.builder == "docker" else found["OCIv1"]["config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["modeltrust"]


def test_uid_65532_has_no_passwd_entry_in_the_image(container: Container) -> None:
    out = run(container, "python3", "-c", (
        "import os, pwd\n"
        "print(os.getuid(), os.getgid())\n"
        "try:\n    pwd.getpwuid(os.getuid())\nexcept KeyError:\n    print('no passwd entry')\n"
    ))  # fmt: skip
    assert out.split("\n")[:2] == ["65532 65532", "no passwd entry"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["modeltrust", "--help"], "Usage:"),
        (["modeltrust", "operator", "--help"], "--all-namespaces"),
        (["modeltrust", "ledger", "serve", "--help"], "Usage:"),
        (["modeltrust", "fetch", "--help"], "Usage:"),
        (["modeltrust", "serve", "--help"], "Usage:"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_commands_run_as_uid_65532(container: Container, argv: list[str], expected: str) -> None:
    assert expected in run(container, *argv)


def test_runtime_libraries_import_and_work(container: Container) -> None:
    out = run(container, "python3", "-c", (
        "import tempfile, onnxruntime, kopf, kubernetes\n"
        "from modeltrust.operator.__main__ import operator_identity\n"
        "print(onnxruntime.get_device(), bool(operator_identity()))\n"
        "with tempfile.NamedTemporaryFile() as f: print('tmp ok')\n"
    ))  # fmt: skip
    assert out.split() == ["CPU", "True", "tmp", "ok"]


def test_no_pip_and_no_sources_in_the_image(container: Container) -> None:
    out = run(container, "sh", "-c", "ls /opt/modeltrust/bin; ls -d /src /wheels 2>&1 || true")
    assert "modeltrust" in out.split()
    assert "pip" not in out.split()
    assert "No such file" in out  # neither the builder's sources nor its wheels


def _sha256_in(container: Container, path: str) -> str:
    out = run(container, "sha256sum", path)
    return out.split()[0]


def test_the_ca_bundle_is_the_base_images_not_the_build_hosts(
    image: BuiltImage, container: Container
) -> None:
    # The build reached PyPI with the host's bundle (a build secret); it must not ship.
    shipped = _sha256_in(container, CA_BUNDLE)
    with image.container(image.base_image) as base:
        assert shipped == _sha256_in(base, CA_BUNDLE)
    if HOST_CA_BUNDLE.is_file():
        host = hashlib.sha256(HOST_CA_BUNDLE.read_bytes()).hexdigest()
        if host != shipped:
            # the host trusts more than the base: make sure none of it leaked anywhere
            out = run(container, "sh", "-c", "ls /run/secrets 2>/dev/null; env")
            assert "build-ca" not in out
            assert not re.search(r"^(PIP_CERT|REQUESTS_CA_BUNDLE|SSL_CERT_FILE)=", out, re.M)
