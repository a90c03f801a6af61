"""Parsing ModelDeployment and ModelTrustPolicy objects into typed views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.chain.trust import TrustedPublisher
from modeltrust.operator.errors import SpecError
from modeltrust.operator.types import (
    Enforcement,
    RevocationAction,
    parse_duration,
    parse_model_deployment,
    parse_size,
    parse_trust_policy,
)

pytestmark = pytest.mark.unit

MdFactory = Callable[..., dict[str, Any]]


def test_full_model_deployment_parses(md_body: MdFactory) -> None:
    md = parse_model_deployment(md_body())
    assert md.ref.namespace == "ml"
    assert md.ref.generation == 3
    assert md.model.name == "resnet50"
    assert md.model.digest == "sha256:" + "ab" * 32
    assert md.replicas == 2
    assert md.runtime.port == 8080
    assert md.runtime.requests == {"cpu": "500m", "memory": "1Gi"}
    assert md.runtime.limits == {"memory": "2"}
    assert md.runtime.env == (("OMP_NUM_THREADS", "2"),)
    assert md.runtime.tolerations[0]["key"] == "gpu"


def test_defaults_apply_when_fields_are_absent(md_body: MdFactory) -> None:
    body = md_body()
    for key in ("replicas", "policy", "runtime"):
        del body["spec"][key]
    md = parse_model_deployment(body)
    assert (md.replicas, md.policy, md.runtime.port, md.runtime.image) == (1, "default", 8080, None)


@pytest.mark.parametrize(
    ("digest", "problem"),
    [
        ("sha256:" + "AB" * 32, "lowercase"),
        ("sha256:" + "ab" * 31, "64"),
        ("sha512:" + "ab" * 32, "sha256:"),
        ("ab" * 32, "sha256:"),
    ],
)
def test_malformed_digest_is_refused_naming_the_field(
    md_body: MdFactory, digest: str, problem: str
) -> None:
    with pytest.raises(SpecError) as err:
        parse_model_deployment(md_body(digest=digest))
    assert err.value.field == "spec.model.digest"
    assert problem in str(err.value)


@pytest.mark.parametrize(
    "uri",
    [
        "https://models.example/a.onnx",
        "http://10.0.0.1:9000/a.onnx",
        "file:///mnt/models/a.onnx",
        "/mnt/models/a.onnx",
        "oci://registry.example.com/ml/resnet50@sha256:" + "ab" * 32,
        "oci://127.0.0.1:5000/ml/resnet50:1.2.0",
        "oci://registry.example.com/ml/resnet50:v1#model.onnx",
        "s3://models/team/a.onnx",
    ],
)
def test_supported_uris_parse(md_body: MdFactory, uri: str) -> None:
    assert parse_model_deployment(md_body(uri=uri)).model.uri == uri


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("gs://bucket/a.onnx", "https://"),
        ("relative/a.onnx", "absolute path"),
        ("oci://registry.example.com/ml/resnet50", "oci://registry"),  # neither tag nor digest
        ("oci://registry.example.com/ml/Resnet50:v1", "oci://registry"),  # repository case
        ("oci://registry.example.com/ml/r@sha256:abc", "oci://registry"),
        ("s3://B/a.onnx", "bucket"),
        ("s3://bucket", "bucket"),
        ("https:///a.onnx", "host"),
        ("/mnt/models/../../etc/passwd", ".."),
        ("file:///mnt/x/..", ".."),
        ("https://models.example/a b.onnx", "whitespace"),
    ],
)
def test_bad_uris_are_refused(md_body: MdFactory, uri: str, problem: str) -> None:
    with pytest.raises(SpecError, match=r"spec\.model\.uri") as err:
        parse_model_deployment(md_body(uri=uri))
    assert problem in err.value.problem


def test_file_uri_must_lie_under_the_model_volume(md_body: MdFactory) -> None:
    body = md_body(uri="/data/models/a.onnx")
    body["spec"]["runtime"]["modelVolume"] = {"claimName": "models", "mountPath": "/data/models"}
    md = parse_model_deployment(body)
    assert md.runtime.model_volume is not None
    assert md.model.local_path == "/data/models/a.onnx"
    body["spec"]["model"]["uri"] = "/data/modelsX/a.onnx"
    with pytest.raises(SpecError, match="not under runtime"):
        parse_model_deployment(body)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("spec", "replicas"), -1, "spec.replicas"),
        (("spec", "replicas"), 1001, "spec.replicas"),
        (("spec", "replicas"), True, "spec.replicas"),
        (("spec", "policy"), "Not_A_Name", "spec.policy"),
        (("spec", "model", "name"), "-bad", "spec.model.name"),
        (("spec", "model", "version"), "", "spec.model.version"),
        (("spec", "runtime", "port"), 70000, "spec.runtime.port"),
        (("spec", "runtime", "imagePullPolicy"), "Sometimes", "spec.runtime.imagePullPolicy"),
        (
            ("spec", "runtime", "env"),
            [{"name": "MODELTRUST_X", "value": "1"}],
            "spec.runtime.env[0].name",
        ),
        (("spec", "runtime", "env"), [{"name": "A"}, {"name": "A"}], "spec.runtime.env[1].name"),
        (("spec", "model"), None, "spec.model"),
    ],
)
def test_invalid_fields_name_their_path(
    md_body: MdFactory, path: tuple[str, ...], value: object, field: str
) -> None:
    body = md_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SpecError) as err:
        parse_model_deployment(body)
    assert err.value.field == field


def test_policy_parses_with_defaults(policy_body: Callable[[], dict[str, Any]]) -> None:
    policy = parse_trust_policy(policy_body())
    assert policy.name == "default"
    assert policy.ledger.url == "http://127.0.0.1:8443"  # trailing slash dropped
    assert policy.ledger.expected_origin == "ledger.example"
    assert policy.enforcement is Enforcement.ENFORCE
    assert policy.revocation_action is RevocationAction.SCALE_TO_ZERO
    assert policy.max_model_size == 2 * 1024**3
    assert policy.reverify_seconds == 300
    assert [p.name for p in policy.publishers] == ["acme", "vision"]


def test_publisher_name_patterns(policy_body: Callable[[], dict[str, Any]]) -> None:
    # Patterns are applied by the trust rules (modeltrust.chain.trust) to the policy's keys.
    acme, vision = (
        TrustedPublisher.from_pem(p.name, p.public_key_pem, p.model_name_patterns)
        for p in parse_trust_policy(policy_body()).publishers
    )
    assert acme.may_vouch_for("anything")
    assert vision.may_vouch_for("resnet50")
    assert not vision.may_vouch_for("bert")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda s: s.update(threshold=3), "spec.threshold"),
        (lambda s: s.update(threshold=0), "spec.threshold"),
        (lambda s: s.update(enforcement="Warn"), "spec.enforcement"),
        (lambda s: s.update(revocationAction="Delete"), "spec.revocationAction"),
        (lambda s: s.update(publishers=[]), "spec.publishers"),
        (lambda s: s["publishers"].append(dict(s["publishers"][0])), "spec.publishers[2].name"),
        (
            lambda s: s["publishers"][0].update(publicKey="ssh-ed25519 AAAA"),
            "spec.publishers[0].publicKey",
        ),
        (lambda s: s["publishers"][0].update(keyId="XYZ"), "spec.publishers[0].keyId"),
        (lambda s: s["ledger"].update(url="ftp://ledger"), "spec.ledger.url"),
        (lambda s: s["ledger"].update(verifierKey="nokey"), "spec.ledger.verifierKey"),
        (lambda s: s["ledger"].update(witnessQuorum=1), "spec.ledger.witnessQuorum"),
        (lambda s: s["ledger"].update(maxCosignatureAge="5m"), "spec.ledger.maxCosignatureAge"),
        (
            lambda s: s["ledger"].update(
                witnesses=[WITNESS_KEY], witnessQuorum=1, maxCosignatureAge="0s"
            ),
            "spec.ledger.maxCosignatureAge",
        ),
        (
            lambda s: s["ledger"].update(
                witnesses=[WITNESS_KEY], witnessQuorum=1, maxCosignatureAge="ten minutes"
            ),
            "spec.ledger.maxCosignatureAge",
        ),
        (lambda s: s["ledger"].update(mirrors=["witness-a:8081"]), "spec.ledger.mirrors[0]"),
        (lambda s: s["ledger"].update(mirrors="http://w"), "spec.ledger.mirrors"),
        (lambda s: s.update(maxModelSize="lots"), "spec.maxModelSize"),
        (lambda s: s.update(maxModelSize="0"), "spec.maxModelSize"),
        (lambda s: s.update(reverifyInterval="1s"), "spec.reverifyInterval"),
        (lambda s: s.update(reverifyInterval="5 minutes"), "spec.reverifyInterval"),
    ],
)
def test_invalid_policy_fields_name_their_path(
    policy_body: Callable[[], dict[str, Any]], mutate: Callable[[dict[str, Any]], None], field: str
) -> None:
    body = policy_body()
    mutate(body["spec"])
    with pytest.raises(SpecError) as err:
        parse_trust_policy(body)
    assert err.value.field == field


WITNESS_KEY = "witness.example.org+f6fa284b+BJkEUYTx5mQTbzk+tl4kF/z/98+TaA2DL3CdY7LEvnXG"


def test_max_cosignature_age_is_parsed_with_the_witnesses(
    policy_body: Callable[[], dict[str, Any]],
) -> None:
    body = policy_body()
    body["spec"]["ledger"].update(witnesses=[WITNESS_KEY], witnessQuorum=1, maxCosignatureAge="3s")
    ledger = parse_trust_policy(body).ledger
    assert ledger.max_cosignature_age == 3.0
    assert parse_trust_policy(policy_body()).ledger.max_cosignature_age is None


def test_mirrors_are_read_in_order_without_trailing_slashes(
    policy_body: Callable[[], dict[str, Any]],
) -> None:
    body = policy_body()
    body["spec"]["ledger"]["mirrors"] = ["http://witness-b:8081/", "https://witness-a.example"]
    ledger = parse_trust_policy(body).ledger
    assert ledger.mirrors == ("http://witness-b:8081", "https://witness-a.example")
    assert parse_trust_policy(policy_body()).ledger.mirrors == ()


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2h", 7200)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


@pytest.mark.parametrize(
    ("text", "size"), [("2Gi", 2 * 1024**3), ("500M", 500_000_000), (1024, 1024)]
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text, "x") == size


def test_credentials_and_s3_options_parse(md_body: MdFactory) -> None:
    body = md_body(uri="s3://models/a.onnx")
    body["spec"]["model"]["credentials"] = {"secretName": "model-store"}
    body["spec"]["model"]["s3"] = {
        "endpoint": "https://minio.example.com:9000",
        "region": "eu-west-1",
        "addressing": "path",
    }
    model = parse_model_deployment(body).model
    assert model.credentials_secret == "model-store"
    assert model.s3 is not None
    assert (model.s3.endpoint, model.s3.region, model.s3.addressing) == (
        "https://minio.example.com:9000",
        "eu-west-1",
        "path",
    )
    assert parse_model_deployment(md_body(uri="s3://models/a.onnx")).model.s3 is None


@pytest.mark.parametrize(
    ("model", "path", "problem"),
    [
        ({"credentials": {"secretName": "Not_A_Name"}}, "credentials.secretName", "Secret name"),
        ({"credentials": {}}, "credentials.secretName", "required"),
        ({"s3": {"endpoint": "ftp://x"}}, "s3.endpoint", "https://"),
        ({"s3": {"region": "EU"}}, "s3.region", "lowercase"),
        ({"s3": {"addressing": "dns"}}, "s3.addressing", "auto, path or virtual"),
        ({"uri": "https://h/a.onnx", "s3": {"region": "eu"}}, "spec.model.s3", "s3:// uri"),
    ],
)
def test_bad_source_options_are_refused(
    md_body: MdFactory, model: dict[str, Any], path: str, problem: str
) -> None:
    body = md_body(uri="s3://models/a.onnx")
    body["spec"]["model"].update(model)
    with pytest.raises(SpecError) as err:
        parse_model_deployment(body)
    assert path in err.value.field
    assert problem in err.value.problem


def test_the_pods_service_account_parses_and_must_be_a_name(md_body: MdFactory) -> None:
    body = md_body()
    body["spec"]["runtime"] = {"serviceAccountName": "ml-runner"}
    assert parse_model_deployment(body).runtime.service_account_name == "ml-runner"
    assert parse_model_deployment(md_body()).runtime.service_account_name is None
    body["spec"]["runtime"] = {"serviceAccountName": "Not_A_Name"}
    with pytest.raises(SpecError) as err:
        parse_model_deployment(body)
    assert err.value.field == "spec.runtime.serviceAccountName"
    assert "ServiceAccount name" in err.value.problem
