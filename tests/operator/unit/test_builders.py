"""The owned Deployment and Service are pinned to the verified digest and locked down."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.operator.builders import (
    ANN_DIGEST,
    BuildSettings,
    VerifiedModel,
    build_deployment,
    build_service,
    resource_name,
    selector_string,
)
from modeltrust.operator.drift import detect_drift
from modeltrust.operator.types import ModelDeployment, parse_model_deployment

pytestmark = pytest.mark.unit

MdFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def md(md_body: MdFactory) -> ModelDeployment:
    return parse_model_deployment(md_body())


def verified_for(md: ModelDeployment, **kw: Any) -> VerifiedModel:
    return VerifiedModel(
        digest=md.model.digest,
        size=10_000,
        generation=md.ref.generation,
        signer_key_ids=("aa" * 32,),
        registration_index=7,
        checkpoint_size=9,
        **kw,
    )


def containers(dep: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = dep["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    (main,) = spec["containers"]
    return init, main


def test_deployment_is_owned_by_the_model_deployment(md: ModelDeployment) -> None:
    dep = build_deployment(md, verified_for(md))
    (owner,) = dep["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "resnet",
        "uid": md.ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert dep["metadata"]["namespace"] == "ml"
    assert dep["metadata"]["name"] == "resnet"


def test_pod_template_is_pinned_to_the_verified_digest(md: ModelDeployment) -> None:
    dep = build_deployment(md, verified_for(md, fetch_args=("--registration-index", "7")))
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"][ANN_DIGEST] == md.model.digest
    init, main = containers(dep)
    assert init["command"] == ["modeltrust", "fetch"]
    assert init["args"] == [
        "--uri", md.model.uri, "--digest", md.model.digest, "--dest", "/models/model.onnx",
        "--max-size", "10000", "--registration-index", "7",
    ]  # fmt: skip
    assert main["command"] == ["modeltrust", "serve"]
    assert main["args"][main["args"].index("--digest") + 1] == md.model.digest
    assert main["args"][main["args"].index("--model-name") + 1] == "resnet50"
    assert main["args"][main["args"].index("--model-path") + 1] == "/models/model.onnx"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in main["volumeMounts"]
    models = next(v for v in template["spec"]["volumes"] if v["name"] == "models")
    assert "emptyDir" in models


def test_template_refuses_a_digest_other_than_the_spec(md: ModelDeployment) -> None:
    other = VerifiedModel(digest="sha256:" + "00" * 32, size=1, generation=1)
    with pytest.raises(ValueError, match="not the pinned"):
        build_deployment(md, other)


def test_pods_follow_the_restricted_pod_security_standard(md: ModelDeployment) -> None:
    dep = build_deployment(md, verified_for(md))
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in containers(dep):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_runtime_settings_reach_the_pod(md: ModelDeployment) -> None:
    dep = build_deployment(md, verified_for(md), BuildSettings(default_image="unused"))
    pod = dep["spec"]["template"]["spec"]
    _, main = containers(dep)
    assert main["image"] == md.runtime.image
    assert main["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "2"},
    }
    assert main["env"] == [{"name": "OMP_NUM_THREADS", "value": "2"}]
    assert main["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert pod["nodeSelector"] == {"pool": "inference"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert dep["spec"]["replicas"] == 2


def test_default_image_is_used_when_the_spec_names_none(md_body: MdFactory) -> None:
    body = md_body()
    del body["spec"]["runtime"]
    md = parse_model_deployment(body)
    dep = build_deployment(md, verified_for(md), BuildSettings(default_image="img:1"))
    assert {c["image"] for c in containers(dep)} == {"img:1"}
    assert "nodeSelector" not in dep["spec"]["template"]["spec"]


def test_rollout_keeps_the_old_version_until_the_new_one_is_ready(md: ModelDeployment) -> None:
    strategy = build_deployment(md, verified_for(md))["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_replicas_override_scales_to_zero(md: ModelDeployment) -> None:
    assert build_deployment(md, verified_for(md), replicas=0)["spec"]["replicas"] == 0


def test_model_volume_is_mounted_read_only_into_the_fetch_step_only(md_body: MdFactory) -> None:
    body = md_body(uri="/data/m/a.onnx")
    body["spec"]["runtime"]["modelVolume"] = {"claimName": "models-pvc", "mountPath": "/data/m"}
    md = parse_model_deployment(body)
    dep = build_deployment(md, verified_for(md))
    init, main = containers(dep)
    assert {"name": "model-source", "mountPath": "/data/m", "readOnly": True} in init[
        "volumeMounts"
    ]
    assert all(m["name"] != "model-source" for m in main["volumeMounts"])
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-source")
    assert vol["persistentVolumeClaim"] == {"claimName": "models-pvc", "readOnly": True}


def test_source_credentials_reach_the_fetch_step_only(md_body: MdFactory) -> None:
    body = md_body(uri="s3://models/team/a.onnx")
    body["spec"]["model"]["credentials"] = {"secretName": "model-store"}
    body["spec"]["model"]["s3"] = {"endpoint": "https://s3.example.com:9000", "region": "eu-1"}
    md = parse_model_deployment(body)
    dep = build_deployment(md, verified_for(md, credential_hosts=("s3.example.com:9000",)))
    init, main = containers(dep)
    mount = {
        "name": "source-credentials",
        "mountPath": "/var/run/modeltrust/credentials",
        "readOnly": True,
    }
    assert mount in init["volumeMounts"]
    assert all(m["name"] != "source-credentials" for m in main["volumeMounts"])
    assert "envFrom" not in init
    assert "envFrom" not in main
    args = init["args"]
    assert args[args.index("--credentials-dir") + 1] == "/var/run/modeltrust/credentials"
    assert args[args.index("--credential-hosts") + 1] == "s3.example.com:9000"
    assert args[args.index("--s3-endpoint") + 1] == "https://s3.example.com:9000"
    assert args[args.index("--s3-region") + 1] == "eu-1"
    assert args[args.index("--s3-addressing") + 1] == "auto"
    volume = next(
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "source-credentials"
    )
    assert volume["secret"] == {"secretName": "model-store", "defaultMode": 0o440}
    # Without credentials, nothing of them appears.
    plain = parse_model_deployment(md_body())
    init, _ = containers(build_deployment(plain, verified_for(plain)))
    assert "--credentials-dir" not in init["args"]
    assert all(m["name"] != "source-credentials" for m in init["volumeMounts"])


def test_a_secret_chosen_from_the_service_account_is_mounted_like_a_named_one(
    md_body: MdFactory,
) -> None:
    body = md_body(uri="https://models.example.com/a.onnx")
    body["spec"]["runtime"] = {"serviceAccountName": "ml-runner"}
    md = parse_model_deployment(body)
    verified = verified_for(
        md, credential_hosts=("models.example.com",), credentials_secret="models"
    )
    dep = build_deployment(md, verified, BuildSettings(service_account_name="operator-default"))
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "ml-runner"  # the ModelDeployment's, over the default
    assert spec["automountServiceAccountToken"] is False
    init, main = containers(dep)
    assert init["args"][init["args"].index("--credential-hosts") + 1] == "models.example.com"
    volume = next(v for v in spec["volumes"] if v["name"] == "source-credentials")
    assert volume["secret"] == {"secretName": "models", "defaultMode": 0o440}
    assert all(m["name"] != "source-credentials" for m in main["volumeMounts"])
    # Without its own, the pods run as the operator's setting (and without that, default).
    plain = parse_model_deployment(md_body())
    assert (
        build_deployment(plain, verified_for(plain), BuildSettings(service_account_name="sa"))[
            "spec"
        ]["template"]["spec"]["serviceAccountName"]
        == "sa"
    )
    assert (
        "serviceAccountName"
        not in build_deployment(plain, verified_for(plain))["spec"]["template"]["spec"]
    )


def test_service_selects_the_model_server_pods(md: ModelDeployment) -> None:
    svc = build_service(md)
    dep = build_deployment(md, verified_for(md))
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["metadata"]["ownerReferences"][0]["uid"] == md.ref.uid
    assert (
        selector_string(md)
        == "app.kubernetes.io/instance=resnet,app.kubernetes.io/name=modeltrust-model-server"
    )


@pytest.mark.parametrize("name", ["a" * 200, "1model", "my.model.v2", "x" * 63 + "y"])
def test_resource_names_are_valid_service_names_and_distinct(name: str) -> None:
    rn = resource_name(name)
    assert len(rn) <= 63
    assert rn[0].isalpha()
    assert all(c.isalnum() or c == "-" for c in rn)
    assert rn != resource_name(name + "z")


def test_owned_objects_need_a_uid(md_body: MdFactory) -> None:
    body = md_body()
    del body["metadata"]["uid"]
    md = parse_model_deployment(body)
    with pytest.raises(ValueError, match="no uid"):
        build_service(md)


def test_a_fresh_build_has_no_drift(md: ModelDeployment) -> None:
    template = build_deployment(md, verified_for(md))["spec"]["template"]
    assert detect_drift(template, template) == ()
