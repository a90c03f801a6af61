"""oci:// sources against a real registry (CNCF distribution) over TLS, artifacts pushed
with the real oras CLI: what a user pins, what gets refused and why, and what the
messages say (never a credential)."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cutting_proxy import CuttingProxy
from harness.oci_registry import OciRegistry, make_model_file, oci_registry
from modeltrust.cli.main import main
from modeltrust.serving.credentials import (
    CredentialsError,
    SourceCredentials,
    credentials_from_data,
)
from modeltrust.serving.errors import DigestMismatchError, FetchError
from modeltrust.serving.fetch import fetch_artifact
from modeltrust.serving.oci import parse_oci_uri, resolve_oci
from modeltrust.serving.sources import SourceAccess

pytestmark = pytest.mark.integration

MIB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
PASSWORD = "pw-7f3a9c2e-never-in-messages"
REFRESH_TOKEN = "refresh-51d0b6e4-never-in-messages"
WRONG = "sha256:" + "0" * 64


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _no_sleep(seconds: float) -> None:
    return None


@dataclass
class Pushed:
    registry: OciRegistry
    models: Path  # the files pushed, by name

    def uri(self, reference: str, host: str | None = None) -> str:
        return f"oci://{host or self.registry.host}/{reference}"

    def access(self, credentials: SourceCredentials | None = None) -> SourceAccess:
        return SourceAccess(ca_file=self.registry.ca, credentials=credentials, timeout=20)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory, mnist_path: Path) -> Iterator[Pushed]:
    """One anonymous registry: the MNIST model; a multi-file artifact; a large blob."""
    work = tmp_path_factory.mktemp("oci")
    models = work / "models"
    models.mkdir()
    (models / "model.onnx").write_bytes(mnist_path.read_bytes())
    (models / "labels.txt").write_text("".join(f"{i}\n" for i in range(10)))
    (models / "README.md").write_text("# mnist\n")
    (models / "other.onnx").write_bytes(os.urandom(1000))
    make_model_file(models / "big.onnx", 32 * MIB)
    with oci_registry(work / "registry") as registry:
        registry.push(models / "model.onnx", "models/mnist:v1")
        registry.push(
            [
                (models / "model.onnx", "application/vnd.onnx"),
                (models / "labels.txt", "text/plain"),
                (models / "README.md", "text/markdown"),
            ],
            "models/bundle:v1",
        )
        registry.push([models / "model.onnx", models / "other.onnx"], "models/two:v1")
        registry.push(models / "big.onnx", "models/big:v1")
        yield Pushed(registry, models)


def _manifest_digest(pushed: Pushed, reference: str) -> str:
    """The digest the tag names now, as oras reads it (not through the code under test)."""
    return pushed.registry.manifest_digest(reference)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- the happy paths ---------------------------------------------------------------------


def test_fetch_by_manifest_digest(pushed: Pushed, tmp_path: Path) -> None:
    model = (pushed.models / "model.onnx").read_bytes()
    manifest = _manifest_digest(pushed, "models/mnist:v1")
    uri = pushed.uri(f"models/mnist@{manifest}")
    result = fetch_artifact(uri, _digest(model), tmp_path / "m.onnx", access=pushed.access())
    assert (tmp_path / "m.onnx").read_bytes() == model
    assert result.pinned_uri == uri
    assert (result.digest, result.size, result.attempts) == (_digest(model), len(model), 1)


def test_a_tag_is_pinned_to_the_manifest_it_named(pushed: Pushed, tmp_path: Path) -> None:
    """The pod fetches `pinned_uri` later: it must get these bytes even if the tag moves."""
    model = (pushed.models / "model.onnx").read_bytes()
    registry = pushed.registry
    registry.push(pushed.models / "model.onnx", "models/moving:v1")
    result = fetch_artifact(
        pushed.uri("models/moving:v1"), _digest(model), tmp_path / "a", access=pushed.access()
    )
    manifest = _manifest_digest(pushed, "models/moving:v1")
    assert result.pinned_uri == pushed.uri(f"models/moving@{manifest}")

    registry.push(pushed.models / "other.onnx", "models/moving:v1")  # the tag moves on
    assert _manifest_digest(pushed, "models/moving:v1") != manifest
    again = fetch_artifact(
        result.pinned_uri, _digest(model), tmp_path / "b", access=pushed.access()
    )
    assert (tmp_path / "b").read_bytes() == model
    assert again.pinned_uri == result.pinned_uri


def test_the_cli_fetches_an_oci_uri_with_a_ca_file(pushed: Pushed, tmp_path: Path) -> None:
    model = (pushed.models / "model.onnx").read_bytes()
    dest = tmp_path / "models" / "model.onnx"
    args = ["fetch", "--uri", pushed.uri("models/mnist:v1"), "--digest", _digest(model)]
    args += ["--dest", str(dest)]
    result = CliRunner().invoke(main, [*args, "--ca-file", str(pushed.registry.ca)])
    assert result.exit_code == 0, result.stderr
    assert f"verified {_digest(model)} ({len(model)} bytes) -> {dest}" in result.stdout
    assert dest.read_bytes() == model

    # Without the registry's CA: refused as untrusted TLS (exit 3), saying it was HTTPS.
    dest.chmod(0o644)
    dest.unlink()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3
    assert "FetchFailed" in result.stderr
    assert "over HTTPS" in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert _leftovers(dest.parent) == []


# --- choosing the layer ------------------------------------------------------------------


def test_the_layer_is_chosen_by_title_or_as_the_only_onnx(pushed: Pushed, tmp_path: Path) -> None:
    models, access = pushed.models, pushed.access()
    labels = (models / "labels.txt").read_bytes()
    fetch_artifact(
        pushed.uri("models/bundle:v1#labels.txt"), _digest(labels), tmp_path / "l", access=access
    )
    assert (tmp_path / "l").read_bytes() == labels
    # No fragment: the only *.onnx of the three layers.
    model = (models / "model.onnx").read_bytes()
    result = fetch_artifact(
        pushed.uri("models/bundle:v1"), _digest(model), tmp_path / "m", access=access
    )
    assert (tmp_path / "m").read_bytes() == model
    assert "#" not in result.pinned_uri
    # The fragment stays in the pinned URI: the pod must choose the same layer.
    other = (models / "other.onnx").read_bytes()
    result = fetch_artifact(
        pushed.uri("models/two:v1#other.onnx"), _digest(other), tmp_path / "o", access=access
    )
    assert result.pinned_uri.endswith("#other.onnx")
    assert "@sha256:" in result.pinned_uri


def test_an_ambiguous_or_unknown_layer_is_refused_listing_the_titles(
    pushed: Pushed, tmp_path: Path
) -> None:
    access = pushed.access()
    with pytest.raises(FetchError) as caught:
        fetch_artifact(pushed.uri("models/two:v1"), WRONG, tmp_path / "m", access=access)
    message = str(caught.value)
    assert "has 2 layers and 2 titled *.onnx" in message
    assert "'model.onnx', 'other.onnx'" in message
    assert "#model.onnx" in message  # what to do
    with pytest.raises(FetchError, match=r"no layer titled 'missing.onnx'; the layers are"):
        fetch_artifact(
            pushed.uri("models/bundle:v1#missing.onnx"), WRONG, tmp_path / "m", access=access
        )
    assert _leftovers(tmp_path) == []


def test_an_index_and_image_layers_are_refused_with_what_to_push(
    pushed: Pushed, tmp_path: Path
) -> None:
    registry, access = pushed.registry, pushed.access()
    registry.push_index("models/mnist:multi", ["v1"])
    with pytest.raises(FetchError, match="names an index") as caught:
        fetch_artifact(pushed.uri("models/mnist:multi"), WRONG, tmp_path / "m", access=access)
    assert "pin one platform's manifest" in str(caught.value)

    # A container image's filesystem layer (no title, a tar media type), as a KServe
    # modelcar has: without a #/path, which file is the model? (This one is not even a tar.)
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(os.urandom(4096))
    config = tmp_path / "config.json"
    config.write_bytes(b"{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": registry.push_blob("models/modelcar", config),
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": registry.push_blob("models/modelcar", layer),
                "size": 4096,
            }
        ],
    }
    registry.push_manifest("models/modelcar:v1", manifest)
    with pytest.raises(FetchError, match="image filesystem layer, not a model file"):
        fetch_artifact(pushed.uri("models/modelcar:v1"), WRONG, tmp_path / "m", access=access)
    with pytest.raises(FetchError, match="is not a readable tar archive"):
        fetch_artifact(
            pushed.uri("models/modelcar:v1#/models/model.onnx"),
            WRONG,
            tmp_path / "m",
            access=access,
        )
    assert not (tmp_path / "m").exists()


# --- files inside image layers (KServe modelcars) --------------------------------------


def _tar_layer(path: Path, entries: list[tuple[str, bytes | str | None]]) -> Path:
    """A filesystem layer: (name, bytes) a file, (name, "->target") a symlink, (name,
    None) a directory; gzip-compressed when `path` ends in .gz."""
    with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content.removeprefix("->")
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def _push_image(registry: OciRegistry, reference: str, layers: list[Path]) -> str:
    """A container image (config + filesystem layers, lowest first), as docker or buildah
    would push it; its manifest digest."""
    repository = reference.partition(":")[0]
    config = layers[0].parent / "config.json"
    config.write_text(json.dumps({"architecture": "amd64", "os": "linux"}))
    return registry.push_manifest(
        reference,
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": registry.push_blob(repository, config),
                "size": config.stat().st_size,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar"
                    + ("+gzip" if layer.suffix == ".gz" else ""),
                    "digest": registry.push_blob(repository, layer),
                    "size": layer.stat().st_size,
                }
                for layer in layers
            ],
        },
    )


def test_a_modelcar_file_comes_from_the_topmost_layer_holding_it(
    pushed: Pushed, tmp_path: Path
) -> None:
    model = (pushed.models / "model.onnx").read_bytes()
    old_model, labels = os.urandom(20_000), b"0\n1\n"
    base = _tar_layer(
        tmp_path / "base.tar.gz",
        [
            ("bin/", None),
            ("bin/sh", os.urandom(50_000)),
            ("models/", None),
            ("models/model.onnx", old_model),
            ("models/labels.txt", labels),
        ],
    )
    top = _tar_layer(tmp_path / "top.tar", [("models/", None), ("./models/model.onnx", model)])
    manifest = _push_image(pushed.registry, "models/modelcar-ok:v1", [base, top])
    out = tmp_path / "out"
    result = fetch_artifact(
        pushed.uri("models/modelcar-ok:v1#/models/model.onnx"),
        _digest(model),
        out / "model.onnx",
        access=pushed.access(),
    )
    assert (out / "model.onnx").read_bytes() == model  # the top layer's, not the base's
    assert result.pinned_uri == pushed.uri(f"models/modelcar-ok@{manifest}#/models/model.onnx")
    # Only in the base layer (gzip): found below the top one, which is read and checked.
    fetch_artifact(
        pushed.uri("models/modelcar-ok:v1#/models/labels.txt"),
        _digest(labels),
        out / "labels.txt",
        access=pushed.access(),
    )
    assert (out / "labels.txt").read_bytes() == labels


def test_modelcar_paths_that_are_not_a_readable_file_are_refused(
    pushed: Pushed, tmp_path: Path
) -> None:
    base = _tar_layer(
        tmp_path / "base.tar.gz",
        [("models/model.onnx", os.urandom(1000)), ("models/old.onnx", os.urandom(1000))],
    )
    top = _tar_layer(
        tmp_path / "top.tar.gz",
        [("models/.wh.old.onnx", b""), ("models/link.onnx", "->model.onnx")],
    )
    _push_image(pushed.registry, "models/modelcar-bad:v1", [base, top])
    uri, access = pushed.uri("models/modelcar-bad:v1"), pushed.access()
    cases = {
        "#/models/old.onnx": r"/models/old.onnx is deleted in the image \(a whiteout",
        "#/models/link.onnx": "/models/link.onnx is a symlink in the image",
        "#/models/none.onnx": r"there is no file /models/none.onnx in the image \(searched its 2",
        "#/models/": "does not name a file in the image",
    }
    for fragment, message in cases.items():
        with pytest.raises(FetchError, match=message):
            fetch_artifact(uri + fragment, WRONG, tmp_path / "out" / "m", access=access)
    assert _leftovers(tmp_path / "out") == []


def test_a_modelcar_layer_changed_on_disk_fails_its_digest(pushed: Pushed, tmp_path: Path) -> None:
    model = os.urandom(100_000)
    layer = _tar_layer(tmp_path / "layer.tar", [("models/model.onnx", model)])
    _push_image(pushed.registry, "models/modelcar-flipped:v1", [layer])
    stored = pushed.registry.blob_file(_digest(layer.read_bytes()))
    changed = bytearray(stored.read_bytes())
    changed[512 + 50_000] ^= 0xFF  # inside the file's data, after its tar header
    stored.write_bytes(changed)
    with pytest.raises(DigestMismatchError) as caught:
        fetch_artifact(
            pushed.uri("models/modelcar-flipped:v1#/models/model.onnx"),
            _digest(model),
            tmp_path / "out" / "m",
            access=pushed.access(),
        )
    assert f"expected {_digest(layer.read_bytes())}, got {_digest(bytes(changed))}" in str(
        caught.value
    )
    assert _leftovers(tmp_path / "out") == []


def test_a_cut_modelcar_download_starts_the_layer_over(pushed: Pushed, tmp_path: Path) -> None:
    model = os.urandom(16 * MIB)
    layer = _tar_layer(tmp_path / "layer.tar.gz", [("models/model.onnx", model)])
    _push_image(pushed.registry, "models/modelcar-big:v1", [layer])
    seen: list[int] = []
    with CuttingProxy(pushed.registry.port, cut_after=6 * MIB, cuts=1) as proxy:
        result = fetch_artifact(
            f"oci://127.0.0.1:{proxy.port}/models/modelcar-big:v1#/models/model.onnx",
            _digest(model),
            tmp_path / "out" / "model.onnx",
            access=pushed.access(),
            progress=lambda done, total: seen.append(done),
            sleep=_no_sleep,
        )
    assert (proxy.cut, result.attempts) == (1, 2)
    assert (tmp_path / "out" / "model.onnx").read_bytes() == model
    # A gzip stream has no offsets to resume at: the second attempt counts from byte 0.
    assert any(later <= earlier for earlier, later in itertools.pairwise(seen))


# --- what is checked ---------------------------------------------------------------------


def test_a_model_that_is_not_the_pinned_one_is_refused(pushed: Pushed, tmp_path: Path) -> None:
    model = (pushed.models / "model.onnx").read_bytes()
    dest = tmp_path / "out" / "m.onnx"
    with pytest.raises(DigestMismatchError) as caught:
        fetch_artifact(pushed.uri("models/mnist:v1"), WRONG, dest, access=pushed.access())
    assert f"expected {WRONG}, got {_digest(model)}" in str(caught.value)
    assert _leftovers(dest.parent) == []


def test_a_manifest_other_than_the_pinned_one_is_refused(pushed: Pushed, tmp_path: Path) -> None:
    """The registry's storage changed the manifest under its digest: the pin catches it
    (by digest), and so does the registry's own Docker-Content-Digest (by tag)."""
    registry = pushed.registry
    data = os.urandom(5000)
    (tmp_path / "tampered.onnx").write_bytes(data)
    manifest = registry.push(tmp_path / "tampered.onnx", "models/tampered:v1")
    stored = registry.blob_file(manifest)
    document = json.loads(stored.read_bytes())
    document["layers"][0]["annotations"]["org.opencontainers.image.title"] = "evil.onnx"
    stored.write_bytes(json.dumps(document).encode())
    out = tmp_path / "out"
    with pytest.raises(DigestMismatchError) as caught:
        fetch_artifact(
            pushed.uri(f"models/tampered@{manifest}"),
            _digest(data),
            out / "m",
            access=pushed.access(),
        )
    assert f"the manifest of oci://{registry.host}/models/tampered@{manifest}" in str(caught.value)
    assert f"expected {manifest}" in str(caught.value)
    with pytest.raises(FetchError, match=f"the registry says the manifest .* is {manifest}, but"):
        fetch_artifact(
            pushed.uri("models/tampered:v1"), _digest(data), out / "m", access=pushed.access()
        )
    assert _leftovers(out) == []


def test_a_blob_changed_on_the_registry_disk_fails_the_layer_digest(
    pushed: Pushed, tmp_path: Path
) -> None:
    registry = pushed.registry
    data = os.urandom(300_000)
    (tmp_path / "flipped.onnx").write_bytes(data)
    registry.push(tmp_path / "flipped.onnx", "models/flipped:v1")
    stored = registry.blob_file(_digest(data))
    changed = bytearray(stored.read_bytes())
    changed[150_000] ^= 0xFF
    stored.write_bytes(changed)
    out = tmp_path / "out"
    with pytest.raises(DigestMismatchError) as caught:
        fetch_artifact(
            pushed.uri("models/flipped:v1"), _digest(data), out / "m", access=pushed.access()
        )
    message = str(caught.value)
    assert f"layer {_digest(data)}" in message
    assert "the registry's own digest" in message
    assert f"expected {_digest(data)}, got {_digest(bytes(changed))}" in message
    assert _leftovers(out) == []


def test_plain_http_is_not_spoken(tmp_path: Path) -> None:
    """An oci:// URI is always HTTPS; a registry that answers plain HTTP is refused."""
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(FetchError, match="over HTTPS"):
            fetch_artifact(
                f"oci://127.0.0.1:{server.server_address[1]}/models/x:v1", WRONG, tmp_path / "m"
            )
    finally:
        server.shutdown()
        server.server_close()


def test_an_unknown_tag_says_what_the_registry_said(pushed: Pushed, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_artifact(
            pushed.uri("models/mnist:v404"), WRONG, tmp_path / "m", access=pushed.access()
        )
    message = str(caught.value)
    assert f"GET manifest v404 of {pushed.registry.host}/models/mnist (over HTTPS)" in message
    assert "answered 404" in message
    assert "MANIFEST_UNKNOWN: manifest unknown" in message


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("oci://127.0.0.1:5000/models/mnist", "names neither a tag nor a digest"),
        ("oci://user:pw@127.0.0.1:5000/models/mnist:v1", "without user information"),
        ("oci://127.0.0.1:5000/Models/mnist:v1", "not a valid repository name"),
        ("oci://127.0.0.1:5000/models/mnist@sha256:abc", "must be sha256:<64 lowercase hex>"),
        ("oci://127.0.0.1:5000/models/mnist:v1?x=1", "has a query"),
    ],
)
def test_malformed_references_are_refused_before_any_request(uri: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        parse_oci_uri(uri)


@pytest.mark.parametrize(
    ("uri", "repository", "pinned"),
    [
        ("oci://docker.io/acme/mnist:v1", "acme/mnist", "oci://docker.io/acme/mnist@"),
        ("oci://docker.io/mnist:v1", "library/mnist", "oci://docker.io/library/mnist@"),
        ("oci://index.docker.io/acme/m:v1", "acme/m", "oci://index.docker.io/acme/m@"),
    ],
)
def test_docker_hub_references_go_to_its_api_host(uri: str, repository: str, pinned: str) -> None:
    """As docker, containerd and ORAS read them: docker.io names Docker Hub, whose API is at
    registry-1.docker.io, and a one-part repository is an official image under library/."""
    ref = parse_oci_uri(uri)
    assert (ref.endpoint, ref.host, ref.repository) == ("registry-1.docker.io",) * 2 + (repository,)
    assert ref.uri("sha256:" + "0" * 64).startswith(pinned)


def test_other_registries_keep_their_host_port_and_repository() -> None:
    ref = parse_oci_uri("oci://[::1]:5000/mnist:v1")
    assert (ref.endpoint, ref.host, ref.port, ref.repository) == (
        "[::1]:5000",
        "::1",
        5000,
        "mnist",
    )


def test_docker_hub_credentials_must_name_its_api_host() -> None:
    """Credentials go where requests go: a Secret bound to docker.io only is not sent to
    registry-1.docker.io (the hosts annotation names real destinations)."""
    creds = _credentials(("docker.io",), _basic())
    with pytest.raises(CredentialsError, match=r"registry-1\.docker\.io"):
        resolve_oci("oci://docker.io/acme/mnist:v1", SourceAccess(credentials=creds, timeout=1))


# --- credentials -------------------------------------------------------------------------


def _credentials(
    hosts: tuple[str, ...], data: dict[str, bytes], ca: Path | None = None
) -> SourceCredentials:
    if ca is not None:
        data = {**data, "ca.crt": ca.read_bytes()}
    return credentials_from_data(data, hosts=hosts, source_name="Secret ml/registry")


def _basic(password: str = PASSWORD) -> dict[str, bytes]:
    return {"username": b"alice", "password": password.encode()}


def _assert_no_secret(message: str, credentials: SourceCredentials) -> None:
    for secret in [*credentials.secrets(), PASSWORD, REFRESH_TOKEN]:
        assert secret not in message


@pytest.fixture(scope="module")
def basic_registry(
    tmp_path_factory: pytest.TempPathFactory, mnist_path: Path
) -> Iterator[OciRegistry]:
    with oci_registry(tmp_path_factory.mktemp("oci-basic"), users={"alice": PASSWORD}) as registry:
        registry.push(mnist_path, "models/mnist:v1")
        yield registry


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, mnist_path: Path
) -> Iterator[OciRegistry]:
    with oci_registry(
        tmp_path_factory.mktemp("oci-token"),
        users={"alice": PASSWORD, "bob": PASSWORD},
        token_auth=True,
        refresh_tokens={REFRESH_TOKEN: "alice"},
        without_access=("bob",),
    ) as registry:
        registry.push(mnist_path, "models/mnist:v1")
        yield registry


def test_basic_auth_registry(basic_registry: OciRegistry, mnist_path: Path, tmp_path: Path) -> None:
    registry = basic_registry
    uri, digest = f"oci://{registry.host}/models/mnist:v1", _digest(mnist_path.read_bytes())
    # The CA comes with the credentials (their ca.crt), not as a separate file.
    good = _credentials(("127.0.0.1",), _basic(), ca=registry.ca)
    fetch_artifact(uri, digest, tmp_path / "ok", access=SourceAccess(credentials=good))
    assert (tmp_path / "ok").read_bytes() == mnist_path.read_bytes()

    out = tmp_path / "out"
    with pytest.raises(FetchError) as caught:
        fetch_artifact(uri, digest, out / "m", access=SourceAccess(ca_file=registry.ca))
    assert "answered 401" in str(caught.value)
    assert "needs credentials; reference a Secret" in str(caught.value)
    assert "spec.model.credentials" in str(caught.value)

    wrong = _credentials(("127.0.0.1",), _basic("wrong-" + PASSWORD), ca=registry.ca)
    with pytest.raises(FetchError) as caught:
        fetch_artifact(uri, digest, out / "m", access=SourceAccess(credentials=wrong))
    message = str(caught.value)
    assert "refused the credentials of Secret ml/registry" in message
    _assert_no_secret(message, wrong)

    elsewhere = _credentials(
        ("127.0.0.1",),
        {".dockerconfigjson": json.dumps({"auths": {"other.example": {"auth": "eDp5"}}}).encode()},
        ca=registry.ca,
    )
    with pytest.raises(FetchError, match=f"holds none for {registry.host}"):
        fetch_artifact(uri, digest, out / "m", access=SourceAccess(credentials=elsewhere))
    assert _leftovers(out) == []


def test_credentials_go_to_no_host_that_is_not_listed(
    basic_registry: OciRegistry, mnist_path: Path, tmp_path: Path
) -> None:
    """Refused before any request: a proxy in front of the registry sees no connection."""
    credentials = _credentials(("registry.example.com",), _basic(), ca=basic_registry.ca)
    with CuttingProxy(basic_registry.port, cut_after=1 << 40) as proxy:
        with pytest.raises(CredentialsError) as caught:
            fetch_artifact(
                f"oci://127.0.0.1:{proxy.port}/models/mnist:v1",
                _digest(mnist_path.read_bytes()),
                tmp_path / "m",
                access=SourceAccess(credentials=credentials),
            )
        assert proxy.connections == 0
    message = str(caught.value)
    assert f"may not be sent to 127.0.0.1:{proxy.port}" in message
    assert "modeltrust.dev/hosts annotation lists registry.example.com" in message
    _assert_no_secret(message, credentials)


def test_bearer_tokens_with_a_password_or_an_identity_token(
    token_registry: OciRegistry, mnist_path: Path, tmp_path: Path
) -> None:
    registry = token_registry
    assert registry.token_service is not None
    requests = registry.token_service.requests
    uri, digest = f"oci://{registry.host}/models/mnist:v1", _digest(mnist_path.read_bytes())
    by_password = _credentials(("127.0.0.1",), _basic(), ca=registry.ca)
    fetch_artifact(uri, digest, tmp_path / "a", access=SourceAccess(credentials=by_password))
    assert requests[-1] == "GET basic alice"

    config = {"auths": {registry.host: {"identitytoken": REFRESH_TOKEN}}}
    by_identity = _credentials(
        ("127.0.0.1",), {".dockerconfigjson": json.dumps(config).encode()}, ca=registry.ca
    )
    fetch_artifact(uri, digest, tmp_path / "b", access=SourceAccess(credentials=by_identity))
    assert requests[-1] == "POST refresh_token"
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == mnist_path.read_bytes()


def test_a_bearer_token_is_renewed_before_it_expires(tmp_path: Path, mnist_path: Path) -> None:
    """Tokens living 10 s (the renewal margin): the blob's GET asks for a fresh one, as a
    long download resumed after the first token expired must."""
    with oci_registry(
        tmp_path / "registry", users={"alice": PASSWORD}, token_auth=True, token_lifetime=10
    ) as registry:
        registry.push(mnist_path, "models/mnist:v1")
        assert registry.token_service is not None
        before = len(registry.token_service.requests)
        fetch_artifact(
            f"oci://{registry.host}/models/mnist:v1",
            _digest(mnist_path.read_bytes()),
            tmp_path / "m",
            access=SourceAccess(credentials=_credentials(("127.0.0.1",), _basic(), registry.ca)),
        )
        ours = registry.token_service.requests[before:]
    assert ours == ["GET basic alice", "GET basic alice"]  # the manifest's, the blob's


def test_bearer_registry_refusals(
    token_registry: OciRegistry, mnist_path: Path, tmp_path: Path
) -> None:
    registry = token_registry
    assert registry.token_service is not None
    requests = registry.token_service.requests
    uri, digest = f"oci://{registry.host}/models/mnist:v1", _digest(mnist_path.read_bytes())

    # Anonymous: the token service gives a token that grants nothing; the registry says 401.
    with pytest.raises(FetchError) as caught:
        fetch_artifact(uri, digest, tmp_path / "m", access=SourceAccess(ca_file=registry.ca))
    assert requests[-1] == "GET anonymous"
    assert "the registry needs credentials; reference a Secret" in str(caught.value)

    wrong = _credentials(("127.0.0.1",), _basic("wrong-" + PASSWORD), ca=registry.ca)
    with pytest.raises(FetchError) as caught:
        fetch_artifact(uri, digest, tmp_path / "m", access=SourceAccess(credentials=wrong))
    message = str(caught.value)
    assert "the token service https://127.0.0.1:" in message
    assert "wrong username or password" in message  # the service's own words
    assert "refused the credentials of Secret ml/registry" in message
    _assert_no_secret(message, wrong)

    # Known to the token service, but not allowed to pull: a token that grants nothing.
    bob = _credentials(("127.0.0.1",), {"username": b"bob", "password": PASSWORD.encode()})
    with pytest.raises(FetchError) as caught:
        fetch_artifact(
            uri, digest, tmp_path / "m", access=SourceAccess(credentials=bob, ca_file=registry.ca)
        )
    assert "knows the credentials of Secret ml/registry but denies them access to " in str(
        caught.value
    )
    assert "models/mnist; grant them pull access there" in str(caught.value)

    # The realm is another host:port than the registry's; the Secret allows only the latter.
    service = registry.token_service
    only_registry = _credentials((registry.host,), _basic(), ca=registry.ca)
    before = len(requests)
    with pytest.raises(CredentialsError) as caught:
        fetch_artifact(uri, digest, tmp_path / "m", access=SourceAccess(credentials=only_registry))
    assert f"may not be sent to 127.0.0.1:{service.port}" in str(caught.value)
    assert len(requests) == before  # the token service never heard from us
    _assert_no_secret(str(caught.value), only_registry)
    assert _leftovers(tmp_path) == []


# --- the network failing -----------------------------------------------------------------


def test_a_cut_download_resumes_where_it_stopped(pushed: Pushed, tmp_path: Path) -> None:
    big = (pushed.models / "big.onnx").read_bytes()
    seen: list[int] = []
    with CuttingProxy(pushed.registry.port, cut_after=6 * MIB, cuts=1) as proxy:
        result = fetch_artifact(
            f"oci://127.0.0.1:{proxy.port}/models/big:v1",
            _digest(big),
            tmp_path / "big.onnx",
            access=pushed.access(),
            progress=lambda done, total: seen.append(done),
            sleep=_no_sleep,
        )
    assert proxy.cut == 1
    assert result.attempts == 2
    assert (tmp_path / "big.onnx").read_bytes() == big
    # Never started over: the second GET asked for a Range, and the count went on.
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))
    assert _leftovers(tmp_path) == ["big.onnx"]


def test_a_registry_that_goes_away_mid_download_leaves_nothing(
    tmp_path: Path, pushed: Pushed
) -> None:
    big = pushed.models / "big.onnx"
    with oci_registry(tmp_path / "registry") as registry:
        registry.push(big, "models/big:v1")
        out = tmp_path / "out"
        killed = threading.Event()

        def kill_after_the_first_chunk(done: int, total: int | None) -> None:
            if not killed.is_set():
                killed.set()
                registry.kill()

        slept: list[float] = []
        with pytest.raises(FetchError) as caught:
            fetch_artifact(
                f"oci://{registry.host}/models/big:v1",
                _digest(big.read_bytes()),
                out / "big.onnx",
                access=SourceAccess(ca_file=registry.ca, timeout=10),
                progress=kill_after_the_first_chunk,
                sleep=slept.append,
            )
    message = str(caught.value)
    assert "gave up after 5 attempts" in message
    assert f"cannot reach GET layer {_digest(big.read_bytes())}" in message
    assert slept == [0.5, 1.0, 2.0, 4.0]
    assert _leftovers(out) == []


# --- memory --------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modeltrust.serving.fetch import fetch_artifact
    from modeltrust.serving.sources import SourceAccess
    start = time.perf_counter()
    result = fetch_artifact(
        sys.argv[1], sys.argv[2], Path(sys.argv[3]), max_size=2 << 30,
        access=SourceAccess(ca_file=Path(sys.argv[4])),
    )
    seconds = time.perf_counter() - start
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):  # this process's own peak RSS
            print(seconds, int(line.split()[1]), result.size)
    """
)


def _fetch_in_child(uri: str, digest: str, dest: Path, ca: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a fresh process that fetches `uri`."""
    paths = [REPO / part / "src" for part in ("chain", "serving", "operator", "cli")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, uri, digest, str(dest), str(ca)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seconds, peak_kib, _ = result.stdout.split()
    dest.chmod(0o644)
    dest.unlink()
    return float(seconds), int(peak_kib) / 1024


@pytest.mark.slow
def test_a_1_gib_model_streams_in_flat_memory(tmp_path: Path) -> None:
    sizes = {"small": 16 * MIB, "large": 1 << 30}
    files = tmp_path / "files"
    files.mkdir()
    digests = {name: make_model_file(files / f"{name}.onnx", size) for name, size in sizes.items()}
    with oci_registry(tmp_path / "registry") as registry:
        for name in sizes:
            registry.push(files / f"{name}.onnx", f"models/{name}:v1")
            (files / f"{name}.onnx").unlink()  # the registry has it; keep the disk free
        runs = {
            name: _fetch_in_child(
                f"oci://{registry.host}/models/{name}:v1",
                digests[name],
                tmp_path / f"{name}.out",
                registry.ca,
            )
            for name in sizes
        }
    (small_s, small_peak), (large_s, large_peak) = runs["small"], runs["large"]
    print(
        f"\noci fetch: 16 MiB {small_s:.2f} s, peak RSS {small_peak:.1f} MiB; "
        f"1 GiB {large_s:.2f} s ({1024 / large_s:.0f} MiB/s), peak RSS {large_peak:.1f} MiB"
    )
    assert large_peak - small_peak <= 8, f"peak RSS grew from {small_peak} to {large_peak} MiB"
