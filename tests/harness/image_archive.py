"""Image archives without Docker or a registry: one layer of local files, `docker save` layout.

`ctr -n k8s.io images import ARCHIVE` accepts the result, as it accepts what
`buildah push IMAGE docker-archive:FILE:NAME:TAG` writes; the real-node cluster imports
both kinds the same way (RealNodeCluster.import_image).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path

# The real-node cluster's own images: static binaries from tests/cluster/images (pause,
# netcheck) and CoreDNS, built by `tests/cluster/build-tools.sh --real-node`.
PAUSE_IMAGE = "modeltrust.local/pause:1"
# The same local image under the upstream pause name, so manifests written for any
# cluster (tests/e2e/smoke_operator.py's Deployment) run unchanged without a registry.
PAUSE_ALIASES = ("registry.k8s.io/pause:3.10",)
NETCHECK_IMAGE = "modeltrust.local/netcheck:1"


def _add(layer: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        layer.addfile(info)
    else:
        info.size = len(data)
        layer.addfile(info, io.BytesIO(data))


def write_image_archive(
    archive: Path,
    reference: str,
    files: Mapping[str, Path | bytes],
    *,
    entrypoint: Sequence[str],
    cmd: Sequence[str] = (),
    user: str = "",
) -> Path:
    """Write a one-layer image holding `files` (path in the image -> host file or bytes).

    Host files keep their mode; bytes become 0644 files. /etc, /tmp and /data exist so
    the kubelet's mounts and a writable scratch dir work in images without a shell.
    """
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        _add(layer, "etc", None, 0o755)
        _add(layer, "tmp", None, 0o1777)
        _add(layer, "data", None, 0o777)
        _add(layer, "etc/passwd", b"root:x:0:0:root:/:/sbin/nologin\n", 0o644)
        _add(layer, "etc/group", b"root:x:0:\n", 0o644)
        for name, source in sorted(files.items()):
            name = name.lstrip("/")
            if isinstance(source, Path):
                _add(layer, name, source.read_bytes(), source.stat().st_mode & 0o7777)
            else:
                _add(layer, name, source, 0o644)
    layer_bytes = layer_buffer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(entrypoint),
            "Cmd": list(cmd),
            "Env": ["PATH=/"],
            "WorkingDir": "/",
            "User": user,
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "tests/harness/image_archive.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = f"{diff_id}/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": [layer_name]}]
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        _add(out, diff_id, None, 0o755)
        _add(out, layer_name, layer_bytes, 0o644)
        _add(out, config_name, config_bytes, 0o644)
        _add(out, "manifest.json", json.dumps(manifest).encode(), 0o644)
    tmp.replace(archive)
    return archive


def local_images(images_bin: Path, coredns: Path, coredns_image: str, out: Path) -> list[Path]:
    """The archives every real-node cluster imports: pause, netcheck and CoreDNS."""
    return [
        write_image_archive(
            out / "pause.tar", PAUSE_IMAGE, {"pause": images_bin / "pause"}, entrypoint=["/pause"]
        ),
        write_image_archive(
            out / "netcheck.tar",
            NETCHECK_IMAGE,
            {"netcheck": images_bin / "netcheck"},
            entrypoint=["/netcheck"],
            cmd=["serve"],
        ),
        write_image_archive(
            out / "coredns.tar", coredns_image, {"coredns": coredns}, entrypoint=["/coredns"]
        ),
    ]
