"""s3:// sources against a real S3 server (versitygw on 127.0.0.1, real SigV4 checks):
what a user sees when the object, the keys, the host or the network is right or wrong."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import boto3.session
import pytest
from botocore.config import Config
from click.testing import CliRunner

from harness.dropping_relay import DroppingRelay
from harness.s3_server import REGION, S3Server, s3_server
from modeltrust.cli.main import main
from modeltrust.serving.credentials import CredentialsError, SourceCredentials
from modeltrust.serving.errors import (
    DigestMismatchError,
    FetchError,
    ServingError,
    SizeLimitError,
)
from modeltrust.serving.fetch import fetch_artifact
from modeltrust.serving.sources import S3Options, SourceAccess

pytestmark = pytest.mark.integration

MIB = 1 << 20
ARTIFACT = os.urandom(3 * MIB + 17)  # several 1 MiB chunks and a ragged tail
DIGEST = "sha256:" + hashlib.sha256(ARTIFACT).hexdigest()
OTHER_DIGEST = "sha256:" + hashlib.sha256(b"something else").hexdigest()
KEY = "team/mnist/3/model.onnx"  # keys hold slashes
URI = f"s3://models/{KEY}"
PUBLIC_URI = "s3://public/mnist.onnx"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _no_sleep(seconds: float) -> None:
    return None


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _access(
    s3: S3Server,
    credentials: SourceCredentials | None = None,
    *,
    endpoint: str | None = None,
    addressing: str = "path",
    ca_file: Path | None = None,
    timeout: float = 10.0,
) -> SourceAccess:
    return SourceAccess(
        credentials=credentials,
        ca_file=ca_file,
        timeout=timeout,
        s3=S3Options(endpoint=endpoint or s3.url, region=REGION, addressing=addressing),
    )


def _make_public(s3: S3Server, bucket: str) -> None:
    """Anyone may GET the bucket's objects (unsigned requests), as a public model zoo."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    s3.client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        server.create_bucket("models")
        server.put_object("models", KEY, ARTIFACT)
        server.create_bucket("public")
        server.put_object("public", "mnist.onnx", ARTIFACT)
        _make_public(server, "public")
        yield server


# --- the happy paths ---------------------------------------------------------------------


def test_path_style_download_is_verified_read_only_and_complete(
    s3: S3Server, tmp_path: Path
) -> None:
    dest = tmp_path / "model.onnx"
    seen: list[tuple[int, int | None]] = []
    result = fetch_artifact(
        URI,
        DIGEST,
        dest,
        access=_access(s3, s3.credentials()),
        chunk_size=MIB,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert dest.read_bytes() == ARTIFACT
    assert stat.S_IMODE(dest.stat().st_mode) == 0o444
    assert (result.digest, result.size, result.pinned_uri, result.attempts) == (
        DIGEST,
        len(ARTIFACT),
        URI,
        1,
    )
    assert len(seen) >= 4  # streamed in chunks, the total known from the start
    assert seen[0][1] == len(ARTIFACT)
    assert seen[-1] == (len(ARTIFACT), len(ARTIFACT))
    assert _leftovers(tmp_path) == ["model.onnx"]


def test_a_public_object_is_read_unsigned(s3: S3Server, tmp_path: Path) -> None:
    result = fetch_artifact(PUBLIC_URI, DIGEST, tmp_path / "m", access=_access(s3))
    assert result.size == len(ARTIFACT)


# The child resolves names with its own /etc/hosts, bind-mounted in a private mount
# namespace (unshare), so BUCKET.s3.test reaches 127.0.0.1 through the real resolver
# without touching this machine's /etc/hosts.
_VIRTUAL_HOST_CHILD = """
import json, sys
from pathlib import Path
from modeltrust.serving.credentials import SourceCredentials
from modeltrust.serving.fetch import fetch_artifact
from modeltrust.serving.sources import S3Options, SourceAccess
args = json.load(sys.stdin)
for hosts in args["host_lists"]:
    credentials = SourceCredentials(
        source_name="Secret models/s3-reader", hosts=tuple(hosts),
        s3_access_key=args["access_key"], s3_secret_key=args["secret_key"])
    access = SourceAccess(credentials=credentials, timeout=10, s3=S3Options(
        endpoint=args["endpoint"], region="us-east-1", addressing="virtual"))
    try:
        result = fetch_artifact(args["uri"], args["digest"], Path(args["dest"]) / hosts[0],
                                access=access)
        print(json.dumps({"ok": result.size}))
    except Exception as error:
        print(json.dumps({"error": type(error).__name__, "message": str(error)}))
"""


def test_virtual_host_style_sends_to_the_bucket_host(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is missing: it gives the child its own /etc/hosts"
    with s3_server(tmp_path / "s3", virtual_domain="s3.test") as s3:
        s3.create_bucket("models")
        s3.put_object("models", KEY, ARTIFACT)
        hosts_file = tmp_path / "hosts"
        hosts_file.write_text("127.0.0.1 localhost\n127.0.0.1 s3.test models.s3.test\n")
        endpoint = f"http://s3.test:{s3.port}"
        request = {
            "uri": URI,
            "digest": DIGEST,
            "endpoint": endpoint,
            "dest": str(tmp_path / "out"),
            "access_key": s3.access_key,
            "secret_key": s3.secret_key,
            # The bucket's own host is listed; then only the endpoint's, which is not
            # where a virtual-host request goes.
            "host_lists": [[f"models.s3.test:{s3.port}"], [f"s3.test:{s3.port}"]],
        }
        child = subprocess.run(
            [
                unshare,
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"',
                str(hosts_file),
                sys.executable,
                "-c",
                _VIRTUAL_HOST_CHILD,
            ],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert child.returncode == 0, child.stderr[-4000:]
    answers = [json.loads(line) for line in child.stdout.splitlines()]
    assert answers[0] == {"ok": len(ARTIFACT)}
    assert answers[1]["error"] == "CredentialsError"
    assert f"may not be sent to models.s3.test:{s3.port}" in answers[1]["message"]
    assert (tmp_path / "out" / f"models.s3.test:{s3.port}").read_bytes() == ARTIFACT


# --- refusals ------------------------------------------------------------------------------


def test_a_wrong_pinned_digest_is_refused_and_leaves_nothing(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(DigestMismatchError) as caught:
        fetch_artifact(URI, OTHER_DIGEST, tmp_path / "m", access=_access(s3, s3.credentials()))
    assert f"digest check failed for {URI} at {s3.url}" in str(caught.value)
    assert f"expected {OTHER_DIGEST}, got {DIGEST}" in str(caught.value)
    assert _leftovers(tmp_path) == []


def test_a_private_object_without_credentials_is_refused_with_the_reason(
    s3: S3Server, tmp_path: Path
) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_artifact(URI, DIGEST, tmp_path / "m", access=_access(s3), sleep=_no_sleep)
    message = str(caught.value)
    assert "answered 403 AccessDenied" in message
    assert "the object is not public, it needs credentials" in message
    assert "spec.model.credentials" in message
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("which", "answer", "reason"),
    [
        ("secret", "answered 403 SignatureDoesNotMatch", "the secret key is not the one of"),
        ("access", "XAdminUserNotFound", "the store does not know the access key ID"),
    ],
)
def test_wrong_credentials_are_refused_with_the_reason(
    s3: S3Server, tmp_path: Path, which: str, answer: str, reason: str
) -> None:
    wrong = (
        s3.credentials(secret_key="not-the-secret-key-at-all")
        if which == "secret"
        else s3.credentials(access_key="AKMTNOSUCHKEY0000")
    )
    with pytest.raises(FetchError) as caught:
        fetch_artifact(URI, DIGEST, tmp_path / "m", access=_access(s3, wrong), sleep=_no_sleep)
    message = str(caught.value)
    assert answer in message
    assert "the credentials of Secret models/s3-reader were refused" in message
    assert reason in message
    assert _leftovers(tmp_path) == []


def test_a_missing_object_or_bucket_is_named(s3: S3Server, tmp_path: Path) -> None:
    access = _access(s3, s3.credentials())
    with pytest.raises(FetchError) as caught:
        fetch_artifact("s3://models/team/mnist/4/model.onnx", DIGEST, tmp_path / "m", access=access)
    assert "answered 404 NoSuchKey" in str(caught.value)
    assert "bucket 'models' has no object 'team/mnist/4/model.onnx'" in str(caught.value)
    with pytest.raises(FetchError) as caught:
        fetch_artifact("s3://modles/" + KEY, DIGEST, tmp_path / "m", access=access)
    assert f"there is no bucket 'modles' at {s3.url}" in str(caught.value)
    assert _leftovers(tmp_path) == []


def test_an_object_over_the_size_limit_is_refused_before_reading(
    s3: S3Server, tmp_path: Path
) -> None:
    with pytest.raises(SizeLimitError, match=f"is {len(ARTIFACT)} bytes, over the limit of 1000"):
        fetch_artifact(
            URI, DIGEST, tmp_path / "m", access=_access(s3, s3.credentials()), max_size=1000
        )
    assert _leftovers(tmp_path) == []


def test_credentials_go_to_listed_hosts_only_and_nothing_is_sent_otherwise(
    s3: S3Server, tmp_path: Path
) -> None:
    # The relay is a host the Secret's owner did not list: the keys must not reach it.
    with DroppingRelay((s3.host, s3.port), drop_after=1 << 40) as relay:
        access = _access(s3, s3.credentials(), endpoint=relay.url)
        with pytest.raises(CredentialsError) as caught:
            fetch_artifact(URI, DIGEST, tmp_path / "m", access=access)
        assert relay.request_heads == []  # not a single request, signed or not
    assert f"may not be sent to 127.0.0.1:{relay.port}" in str(caught.value)
    assert f"lists 127.0.0.1:{s3.port}" in str(caught.value)
    assert _leftovers(tmp_path) == []


def test_no_credential_appears_in_any_error_message(s3: S3Server, tmp_path: Path) -> None:
    token = "FQoGZXIvYXdzEXAMPLESESSIONTOKEN0123456789abcdef"
    with_token = SourceCredentials(
        source_name="Secret models/s3-reader",
        hosts=(f"127.0.0.1:{s3.port}",),
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_session_token=token,
    )
    wrong_secret = s3.credentials(secret_key=s3.secret_key[::-1])
    attempts: list[tuple[str, str, SourceAccess]] = [
        (URI, OTHER_DIGEST, _access(s3, s3.credentials())),  # digest mismatch
        (URI, DIGEST, _access(s3, wrong_secret)),
        # versitygw ignores a session token it did not issue: the digest then fails.
        (URI, OTHER_DIGEST, _access(s3, with_token)),
        ("s3://models/absent.onnx", DIGEST, _access(s3, s3.credentials())),
        (URI, DIGEST, _access(s3, s3.credentials(hosts=("s3.example.com",)))),
        (
            URI,
            DIGEST,
            _access(s3, s3.credentials(hosts=("127.0.0.1",)), endpoint="http://127.0.0.1:9"),
        ),
    ]
    messages = []
    for uri, digest, access in attempts:
        with pytest.raises(ServingError) as caught:
            fetch_artifact(uri, digest, tmp_path / "m", access=access, sleep=_no_sleep)
        # What a log shows: the whole formatted exception, chained causes included.
        messages.append("".join(traceback.format_exception(caught.value)))
    for message in messages:
        for secret in (s3.secret_key, s3.secret_key[::-1], s3.access_key, token):
            assert secret not in message, message
    assert "gave up after" in messages[-1]  # the unreachable endpoint was tried again
    assert _leftovers(tmp_path) == []


_CREDENTIAL_PROCESS = """#!/bin/sh
touch "$0.ran"
printf '{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s"}' "$1" "$2"
"""


@pytest.mark.parametrize("ambient", ["environment", "config file"])
def test_ambient_aws_credentials_are_never_used(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ambient: str
) -> None:
    """The operator's own identity (env keys, ~/.aws, a credential_process, IRSA) must
    never sign a request for a ModelDeployment that named no credentials."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    helper = tmp_path / "credential-process"
    if ambient == "environment":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    else:
        helper.write_text(_CREDENTIAL_PROCESS)
        helper.chmod(0o700)
        config = tmp_path / "aws-config"
        config.write_text(
            f"[profile operator]\ncredential_process = {helper} {s3.access_key} {s3.secret_key}\n"
        )
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        monkeypatch.setenv("AWS_PROFILE", "operator")
    # Also point everything else botocore reads at somewhere else.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")

    # Control: an ordinary boto3 client does pick these credentials up, and they work.
    ordinary = boto3.session.Session().client(
        "s3", endpoint_url=s3.url, config=Config(s3={"addressing_style": "path"})
    )
    assert ordinary.head_object(Bucket="models", Key=KEY)["ContentLength"] == len(ARTIFACT)
    if ambient == "config file":
        assert Path(f"{helper}.ran").exists()
        Path(f"{helper}.ran").unlink()

    out = tmp_path / "out"
    with pytest.raises(FetchError) as caught:
        fetch_artifact(URI, DIGEST, out / "m", access=_access(s3), sleep=_no_sleep)
    assert "answered 403 AccessDenied" in str(caught.value)  # went unsigned, to s3.url
    assert "it needs credentials" in str(caught.value)
    assert not Path(f"{helper}.ran").exists()  # the credential_process never ran
    assert _leftovers(out) == []


# --- TLS -----------------------------------------------------------------------------------


def test_tls_with_the_stores_own_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CA bundle handed to botocore is a private temporary file: watch where it goes.
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with s3_server(tmp_path / "s3", tls=True) as s3:
        s3.create_bucket("models")
        s3.put_object("models", KEY, ARTIFACT)
        out = tmp_path / "out"
        without_ca = s3.credentials()
        without_ca = SourceCredentials(
            source_name=without_ca.source_name,
            hosts=without_ca.hosts,
            s3_access_key=without_ca.s3_access_key,
            s3_secret_key=without_ca.s3_secret_key,
        )
        with pytest.raises(FetchError) as caught:
            fetch_artifact(URI, DIGEST, out / "m", access=_access(s3, without_ca))
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert "ca.crt" in str(caught.value)
        assert _leftovers(out) == []

        bundles: list[tuple[str, int]] = []

        def watch(done: int, total: int | None) -> None:
            bundles.extend((p.name, stat.S_IMODE(p.stat().st_mode)) for p in temp.iterdir())

        # The CA from the Secret's ca.crt...
        fetch_artifact(URI, DIGEST, out / "a", access=_access(s3, s3.credentials()), progress=watch)
        # ... or from a CA file (the operator's --ca-file).
        assert s3.ca_file is not None
        fetch_artifact(URI, DIGEST, out / "b", access=_access(s3, without_ca, ca_file=s3.ca_file))
        assert (out / "a").read_bytes() == (out / "b").read_bytes() == ARTIFACT
    assert bundles
    assert all(name.startswith("modeltrust-s3-ca.") and mode == 0o600 for name, mode in bundles)
    assert list(temp.iterdir()) == []  # removed when the fetch was done


# --- the network failing -------------------------------------------------------------------


def test_the_store_going_away_mid_download_fails_cleanly(tmp_path: Path) -> None:
    big = os.urandom(48 * MIB)
    with s3_server(tmp_path / "s3") as s3:
        s3.create_bucket("models")
        s3.put_object("models", KEY, big)
        out = tmp_path / "out"
        got: list[int] = []

        def crash_after_first_chunk(done: int, total: int | None) -> None:
            got.append(done)
            if len(got) == 1:
                s3.kill()

        with pytest.raises(FetchError) as caught:
            fetch_artifact(
                URI,
                _digest(big),
                out / "m",
                access=_access(s3, s3.credentials(), timeout=5),
                progress=crash_after_first_chunk,
                sleep=_no_sleep,
            )
    message = str(caught.value)
    assert 0 < got[-1] < len(big)
    assert f"cannot reach {s3.url} for {URI}" in message
    assert "gave up after" in message
    assert _leftovers(out) == []  # no partial file


def test_a_dropped_connection_resumes_with_a_range_request(s3: S3Server, tmp_path: Path) -> None:
    big = os.urandom(24 * MIB + 5)
    s3.put_object("models", "big/model.onnx", big)
    with DroppingRelay((s3.host, s3.port), drop_after=5 * MIB) as relay:
        access = _access(s3, s3.credentials(hosts=(f"127.0.0.1:{relay.port}",)), endpoint=relay.url)
        result = fetch_artifact(
            "s3://models/big/model.onnx", _digest(big), tmp_path / "m", access=access
        )
        heads = [h.lower() for h in relay.request_heads]
    assert relay.dropped == 1
    assert result.attempts == 2
    assert (tmp_path / "m").read_bytes() == big
    gets = [h for h in heads if h.startswith("get ")]
    assert "range:" not in gets[0]
    resumed = [line for line in gets[-1].splitlines() if line.startswith("range: bytes=")]
    assert len(resumed) == 1
    assert 0 < int(resumed[0].split("=")[1].rstrip("-")) < len(big)
    assert "if-match:" in gets[-1]  # only the same object version may continue
    assert _leftovers(tmp_path) == ["m"]


def test_an_object_replaced_mid_download_is_not_spliced(s3: S3Server, tmp_path: Path) -> None:
    old, new = os.urandom(24 * MIB), os.urandom(24 * MIB)
    s3.put_object("models", "moving/model.onnx", old)
    with DroppingRelay((s3.host, s3.port), drop_after=5 * MIB) as relay:
        access = _access(s3, s3.credentials(hosts=(f"127.0.0.1:{relay.port}",)), endpoint=relay.url)

        def replace_once(done: int, total: int | None) -> None:
            if done <= 4 * MIB:  # the first chunk: replace it before the drop
                s3.put_object("models", "moving/model.onnx", new)

        with pytest.raises(FetchError) as caught:
            fetch_artifact(
                "s3://models/moving/model.onnx",
                _digest(old),
                tmp_path / "m",
                access=access,
                progress=replace_once,
            )
    assert "answered 412 PreconditionFailed" in str(caught.value)
    assert "the object changed while it was being downloaded" in str(caught.value)
    assert _leftovers(tmp_path) == []


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "options", "message"),
    [
        ("s3://", S3Options(), "names no valid bucket"),
        ("s3://models", S3Options(), "names no object"),
        ("s3://models:9000/m.onnx", S3Options(), "no host, port or credentials"),
        (URI, S3Options(addressing="dns"), "addressing 'dns' is not one of path, virtual, auto"),
        (URI, S3Options(endpoint="ftp://store"), "is not an http(s) URL"),
        (URI, S3Options(region="eu west 1"), "cannot set up an S3 client for s3://models/"),
    ],
)
def test_unusable_locations_are_refused_before_any_request(
    tmp_path: Path, uri: str, options: S3Options, message: str
) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_artifact(uri, DIGEST, tmp_path / "m", access=SourceAccess(s3=options))
    assert message in str(caught.value)


def test_a_password_in_the_uri_or_endpoint_is_refused_without_echoing_it(
    tmp_path: Path,
) -> None:
    options = S3Options(endpoint="https://reader:hunter2hunter2@store.example")
    with pytest.raises(FetchError) as caught:
        fetch_artifact(URI, DIGEST, tmp_path / "m", access=SourceAccess(s3=options))
    assert "S3 keys go in the credentials Secret" in str(caught.value)
    assert "hunter2hunter2" not in str(caught.value)
    with pytest.raises(FetchError) as caught:
        fetch_artifact("s3://reader:hunter2hunter2@models/m.onnx", DIGEST, tmp_path / "m")
    assert "holds no user:password@" in str(caught.value)
    assert "hunter2hunter2" not in str(caught.value)


def test_credentials_without_s3_keys_are_refused(tmp_path: Path) -> None:
    token_only = SourceCredentials(source_name="Secret models/web", hosts=("x",), token="t0ken")
    with pytest.raises(FetchError, match="Secret models/web holds no S3 keys"):
        fetch_artifact(URI, DIGEST, tmp_path / "m", access=SourceAccess(credentials=token_only))


# --- the command line ----------------------------------------------------------------------


def test_cli_fetch_from_s3(s3: S3Server, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "model.onnx"
    s3_options = ["--s3-endpoint", s3.url, "--s3-region", REGION, "--s3-addressing", "path"]
    result = CliRunner().invoke(
        main,
        ["fetch", "--uri", PUBLIC_URI, "--digest", DIGEST, "--dest", str(dest), *s3_options],
    )
    assert result.exit_code == 0, result.output
    assert f"verified {DIGEST} ({len(ARTIFACT)} bytes) -> {dest}" in result.stdout
    assert dest.read_bytes() == ARTIFACT

    refused = CliRunner().invoke(
        main,
        ["fetch", "--uri", URI, "--digest", DIGEST, "--dest", str(tmp_path / "x"), *s3_options],
    )
    assert refused.exit_code == 3
    assert "FetchFailed: GET s3://models/" in refused.stderr
    assert "it needs credentials" in refused.stderr

    usage = CliRunner().invoke(
        main, ["fetch", "--uri", URI, "--digest", DIGEST, "--dest", "x", "--s3-addressing", "dns"]
    )
    assert usage.exit_code == 2


# --- memory --------------------------------------------------------------------------------

_FETCH_CHILD = """
import json, sys, time
from pathlib import Path
from modeltrust.serving.credentials import SourceCredentials
from modeltrust.serving.fetch import fetch_artifact
from modeltrust.serving.sources import S3Options, SourceAccess
args = json.load(sys.stdin)
credentials = SourceCredentials(
    source_name="Secret models/s3-reader", hosts=tuple(args["hosts"]),
    s3_access_key=args["access_key"], s3_secret_key=args["secret_key"])
access = SourceAccess(credentials=credentials, s3=S3Options(endpoint=args["endpoint"],
                      region="us-east-1", addressing="path"))
start = time.perf_counter()
result = fetch_artifact(args["uri"], args["digest"], Path(args["dest"]), access=access)
seconds = time.perf_counter() - start
# VmHWM: this process's own peak RSS.
peak = next(int(line.split()[1]) for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_kib": peak, "size": result.size}))
"""


def _make_file(path: Path, size: int) -> str:
    """`size` bytes that neither compress nor repeat per MiB; returns the digest."""
    block = bytearray(os.urandom(MIB))
    hasher = hashlib.sha256()
    with path.open("wb") as f:
        for i in range(size // MIB):
            block[:8] = i.to_bytes(8, "little")
            f.write(block)
            hasher.update(block)
    return "sha256:" + hasher.hexdigest()


def _fetch_in_child(s3: S3Server, uri: str, digest: str, dest: Path) -> dict[str, float]:
    request = {
        "uri": uri,
        "digest": digest,
        "dest": str(dest),
        "endpoint": s3.url,
        "hosts": [f"127.0.0.1:{s3.port}"],
        "access_key": s3.access_key,
        "secret_key": s3.secret_key,  # on stdin, not argv: /proc/PID/cmdline is public
    }
    child = subprocess.run(
        [sys.executable, "-c", _FETCH_CHILD],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    answer: dict[str, float] = json.loads(child.stdout)
    return answer


@pytest.mark.slow  # writes and reads 1 GiB three times over: about a minute
def test_a_one_gib_object_streams_in_flat_memory(tmp_path: Path) -> None:
    with s3_server(tmp_path / "s3") as s3:
        s3.create_bucket("models")
        sizes = {"small": 16 * MIB, "large": 1 << 30}
        digests = {}
        for name, size in sizes.items():
            source = tmp_path / f"{name}.bin"
            digests[name] = _make_file(source, size)
            s3.put_object("models", f"{name}.onnx", source)
            source.unlink()  # the store holds its own copy
        measured = {
            name: _fetch_in_child(
                s3, f"s3://models/{name}.onnx", digests[name], tmp_path / f"{name}.out"
            )
            for name in sizes
        }
    small, large = measured["small"], measured["large"]
    assert large["size"] == 1 << 30
    growth_mib = (large["peak_kib"] - small["peak_kib"]) / 1024
    print(
        f"\n1 GiB s3:// fetch: {large['seconds']:.2f} s "
        f"({(1 << 30) / MIB / large['seconds']:.0f} MiB/s), peak RSS "
        f"{large['peak_kib'] / 1024:.1f} MiB (16 MiB object: {small['peak_kib'] / 1024:.1f} MiB)"
    )
    # Streaming: the peak does not grow with the object (one 4 MiB buffer, reused).
    assert growth_mib < 8, f"peak RSS grew by {growth_mib:.1f} MiB from 16 MiB to 1 GiB"
