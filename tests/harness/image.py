"""The modeltrust image, as `make image` builds it (hack/build-image.sh), for tests.

    image = build_image()          # builds once per build-context hash; seconds when cached
    image.reference                # "modeltrust:0.1.0", what the chart deploys by default
    image.archive_path             # docker-archive for `ctr -n k8s.io images import`
    image_on_node(cluster)         # imported into a real node once; the reference pods use
    with image.container() as c:   # a working container (buildah) or `docker run`
        c.run(["modeltrust", "--help"], user="65532:65532")

The script prints KEY=value lines last; everything else it says is on stderr, which an
error here carries. Docker is used where a Docker engine answers, buildah otherwise.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-image.sh"


class ImageBuildError(RuntimeError):
    """hack/build-image.sh failed; the message has the tail of its output."""


@dataclass(frozen=True)
class BuiltImage:
    name: str  # "modeltrust"
    tag: str  # the chart's appVersion
    archive_path: Path  # docker-archive of name:tag
    context_hash: str  # also tagged as name:ctx-<hash>
    image_id: str
    builder: str  # "buildah" or "docker"
    base_image: str
    buildah_root: Path
    buildah_runroot: Path

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def hash_reference(self) -> str:
        return f"{self.name}:ctx-{self.context_hash}"

    def buildah(self, *args: str) -> list[str]:
        """A buildah command line on the script's private storage."""
        return [
            "buildah", "--root", str(self.buildah_root), "--runroot", str(self.buildah_runroot),
            "--storage-driver", "vfs", *args,
        ]  # fmt: skip

    @contextmanager
    def container(self, image: str | None = None) -> Iterator[Container]:
        """A container of this image (or of `image`, e.g. the base), removed afterwards."""
        ref = image or self.hash_reference
        if self.builder == "docker":
            yield Container(self, ref, None)
            return
        made = subprocess.run(
            self.buildah("from", "--pull=never", ref), capture_output=True, text=True, check=False
        )
        assert made.returncode == 0, f"buildah from {ref} failed: {made.stderr}"
        name = made.stdout.strip().splitlines()[-1]
        try:
            yield Container(self, ref, name)
        finally:
            subprocess.run(self.buildah("rm", name), capture_output=True, check=False)


@dataclass(frozen=True)
class Container:
    image: BuiltImage
    reference: str
    buildah_name: str | None  # None: Docker, one `docker run --rm` per command

    def run(
        self, argv: Sequence[str], *, user: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the container (no entry point), as `user` ("uid:gid") if given."""
        if self.buildah_name is None:
            cmd = ["docker", "run", "--rm", "--network=none", "--entrypoint", argv[0]]
            cmd += ["--user", user] if user else []
            cmd += [self.reference, *argv[1:]]
        else:
            cmd = self.image.buildah("run", "--isolation", "chroot")
            cmd += ["--user", user] if user else []
            cmd += [self.buildah_name, "--", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def parse_output(stdout: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isupper():
            fields[key] = value
    return fields


@functools.cache
def build_image(force: bool = False, timeout: float = 3600) -> BuiltImage:
    """Run hack/build-image.sh (a no-op when this build context was built before)."""
    if not (shutil.which("docker") or shutil.which("buildah")):
        raise ImageBuildError(
            "neither Docker nor buildah is installed: the image cannot be built "
            "(Debian: apt-get install buildah mmdebstrap)"
        )
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *(["--force"] if force else [])],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise ImageBuildError(
            f"{BUILD_SCRIPT.relative_to(REPO)} failed (exit {result.returncode}):\n"
            f"{result.stderr[-6000:]}"
        )
    f = parse_output(result.stdout)
    name, _, tag = f["IMAGE"].partition(":")
    return BuiltImage(
        name=name,
        tag=tag,
        archive_path=Path(f["ARCHIVE"]),
        context_hash=f["CONTEXT_HASH"],
        image_id=f["IMAGE_ID"],
        builder=f["BUILDER"],
        base_image=f["BASE_IMAGE"],
        buildah_root=Path(f["BUILDAH_ROOT"]),
        buildah_runroot=Path(f["BUILDAH_RUNROOT"]),
    )


# (kubeconfig, archive) -> the reference pods use; a session imports each archive once.
_ON_NODE: dict[tuple[Path, Path], str] = {}


def image_on_node(cluster: Cluster) -> str:
    """The built modeltrust image, imported into the real node's containerd once per cluster;
    returns the reference pods name it by: pinned by digest (`localhost/modeltrust@sha256:...`,
    as policies require of runtime images), never `latest`, so the pods' default pull policy
    (IfNotPresent) never pulls."""
    if cluster.importer is None:
        # A cluster we did not start (kind): whoever made it loaded the image.
        ref = os.environ.get("MODELTRUST_E2E_IMAGE", "")
        if "@sha256:" not in ref:
            raise RuntimeError(
                "set MODELTRUST_E2E_IMAGE to the modeltrust image loaded into this cluster, "
                f"pinned by digest (repository@sha256:...), got {ref!r}"
            )
        return ref
    image = build_image()
    key = (cluster.kubeconfig, image.archive_path)
    if key not in _ON_NODE:
        pinned = cluster.import_image(image.archive_path)
        name = f"localhost/{image.hash_reference}"
        if name not in pinned:
            raise RuntimeError(f"{image.archive_path} did not import as {name}: {pinned}")
        _ON_NODE[key] = pinned[name]
    return _ON_NODE[key]


def chart_image_values(ref: str, pull_policy: str) -> dict[str, str]:
    """The chart's `image` values for an image reference: by digest when it has one."""
    if "@" in ref:
        repository, digest = ref.split("@", 1)
        return {"repository": repository, "digest": digest, "pullPolicy": pull_policy}
    repository, _, tag = ref.rpartition(":")
    return {"repository": repository, "tag": tag, "pullPolicy": pull_policy}
