"""The CRDs against a real API server: structural schemas, defaults, CEL rejections with our
messages, status and scale subresources, printer columns, kubectl explain, and the pods the
operator builds passing the restricted Pod Security Standard."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from harness.cluster import Cluster
from modeltrust.operator.builders import VerifiedModel, build_deployment
from modeltrust.operator.types import parse_model_deployment

DIGEST = "sha256:" + "ab" * 32
PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)
VKEY = "ledger.example+7c3d1a2b+AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh"


def md(namespace: str, obj_name: str = "m1", **model: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": obj_name, "namespace": namespace},
        "spec": {
            "model": {
                "name": "resnet50",
                "version": "1.0.0",
                "uri": "https://models.example/resnet50.onnx",
                "digest": DIGEST,
            }
        },
    }
    body["spec"]["model"].update(model)
    return body


def policy(name: str = "p1", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "modeltrust.dev/v1alpha1",
        "kind": "ModelTrustPolicy",
        "metadata": {"name": name},
        "spec": {
            "ledger": {"url": "http://127.0.0.1:8443", "verifierKey": VKEY},
            "publishers": [{"name": "acme", "publicKey": PEM}],
        },
    }
    body["spec"].update(spec)
    return body


def dry_run(cluster: Cluster, obj: dict[str, Any]) -> tuple[bool, str]:
    got = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False
    )
    return got.returncode == 0, got.stdout if got.returncode == 0 else got.stderr


def test_valid_model_deployment_gets_defaults(crds: Cluster, namespace: str) -> None:
    ok, out = dry_run(crds, md(namespace))
    assert ok, out
    spec = json.loads(out)["spec"]
    assert spec["replicas"] == 1
    assert spec["policy"] == "default"
    with_runtime = md(namespace)
    with_runtime["spec"]["runtime"] = {"image": "x:1"}
    ok, out = dry_run(crds, with_runtime)
    assert ok, out
    assert json.loads(out)["spec"]["runtime"]["port"] == 8080


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"digest": "sha256:" + "AB" * 32},
            "model.digest must be 'sha256:' followed by exactly 64 lowercase hex",
        ),
        ({"digest": "sha256:abc"}, "model.digest must be 'sha256:'"),
        ({"digest": "md5:" + "ab" * 16}, "model.digest must be 'sha256:'"),
        ({"uri": "gs://bucket/model.onnx"}, "oci://registry/repository@sha256:<digest> or :tag"),
        ({"uri": "oci://registry.example.com/ml/resnet"}, "s3://bucket/key"),
        ({"uri": "s3://B/model.onnx"}, "s3://bucket/key"),
        (
            {"uri": "https://h/m.onnx", "s3": {"region": "eu-west-1"}},
            "model.s3 applies only to an s3:// uri",
        ),
        ({"credentials": {"secretName": "Bad_Name"}}, "model.credentials.secretName must be"),
        ({"uri": "models/resnet.onnx"}, "model.uri must be an https:// or http:// URL with a host"),
        ({"uri": "https:///no-host"}, "model.uri must be an https:// or http:// URL with a host"),
        ({"uri": "/mnt/models/../../etc/shadow"}, "must not contain '..' segments"),
        ({"uri": "https://models.example/a b.onnx"}, "model.uri must not contain whitespace"),
        ({"name": "-resnet"}, "model.name must start with a letter or digit"),
    ],
)
def test_cel_rejects_malformed_models_with_clear_messages(
    crds: Cluster, namespace: str, model: dict[str, Any], message: str
) -> None:
    ok, err = dry_run(crds, md(namespace, **model))
    assert not ok
    assert message in err, err


@pytest.mark.parametrize(
    "model",
    [
        {"uri": "oci://registry.example.com:5000/ml/resnet50@sha256:" + "ab" * 32},
        {"uri": "oci://registry.example.com/ml/resnet50:1.2.0#model.onnx"},
        {
            "uri": "s3://models/team/resnet50.onnx",
            "s3": {
                "endpoint": "https://s3.example.com:9000",
                "region": "eu-1",
                "addressing": "path",
            },
            "credentials": {"secretName": "model-store"},
        },
    ],
)
def test_the_api_server_accepts_every_source(
    crds: Cluster, namespace: str, model: dict[str, Any]
) -> None:
    ok, err = dry_run(crds, md(namespace, **model))
    assert ok, err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": -1}, "replicas must be between 0 and 1000"),
        ({"replicas": 100000}, "replicas must be between 0 and 1000"),
        ({"policy": "Not_A_Name"}, "policy must be the name of a ModelTrustPolicy"),
        ({"runtime": {"port": 0}}, "runtime.port must be between 1 and 65535"),
        ({"runtime": {"env": [{"name": "MODELTRUST_X"}]}}, "reserved for the operator"),
        (
            {"runtime": {"resources": {"limits": {"memory": "lots"}}}},
            "spec.runtime.resources.limits.memory",
        ),
    ],
)
def test_cel_rejects_bad_spec_fields(
    crds: Cluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    body = md(namespace)
    body["spec"].update(spec)
    ok, err = dry_run(crds, body)
    assert not ok
    assert message in err, err


def test_missing_digest_is_required(crds: Cluster, namespace: str) -> None:
    body = md(namespace)
    del body["spec"]["model"]["digest"]
    ok, err = dry_run(crds, body)
    assert not ok
    assert "spec.model.digest: Required value" in err


def test_valid_policy_gets_defaults(crds: Cluster) -> None:
    ok, out = dry_run(crds, policy())
    assert ok, out
    spec = json.loads(out)["spec"]
    assert (spec["threshold"], spec["enforcement"], spec["revocationAction"]) == (
        1, "Enforce", "ScaleToZero",
    )  # fmt: skip
    assert (spec["maxModelSize"], spec["reverifyInterval"]) == ("2Gi", "5m")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"threshold": 2}, "threshold must not exceed the number of publishers"),
        ({"threshold": 0}, "threshold must be at least 1"),
        ({"enforcement": "Warn"}, 'supported values: "Enforce", "Audit"'),
        ({"revocationAction": "Delete"}, 'supported values: "ScaleToZero", "KeepAndFlag"'),
        ({"maxModelSize": "huge"}, "maxModelSize must be a positive quantity"),
        ({"maxModelSize": "0"}, "maxModelSize must be a positive quantity"),
        ({"reverifyInterval": "1s"}, "reverifyInterval must be a duration like 30s"),
        ({"reverifyInterval": "soon"}, "reverifyInterval must be a duration like 30s"),
        (
            {"publishers": [{"name": "a", "publicKey": "ssh-ed25519 AAAA"}]},
            "publicKey must be a PEM public key",
        ),
        (
            {"ledger": {"url": "ftp://x", "verifierKey": VKEY}},
            "ledger.url must be an https:// or http:// URL",
        ),
        (
            {"ledger": {"url": "http://x", "verifierKey": "nope"}},
            "ledger.verifierKey must be a C2SP verifier key",
        ),
        (
            {"ledger": {"url": "http://x", "verifierKey": VKEY, "witnessQuorum": 1}},
            "witnessQuorum must not exceed",
        ),
        (
            {
                "ledger": {
                    "url": "http://x",
                    "verifierKey": VKEY,
                    "witnesses": [VKEY],
                    "witnessQuorum": 2,
                }
            },
            "witnessQuorum must not exceed",
        ),
        (
            {"ledger": {"url": "http://x", "verifierKey": VKEY, "maxCosignatureAge": "10m"}},
            "maxCosignatureAge needs ledger.witnessQuorum of at least 1",
        ),
        (
            {
                "ledger": {
                    "url": "http://x",
                    "verifierKey": VKEY,
                    "witnesses": [VKEY],
                    "witnessQuorum": 1,
                    "maxCosignatureAge": "0s",
                }
            },
            "maxCosignatureAge must be a duration like 30s, 10m or 1h between 1s and 24h",
        ),
        ({"enforcement": "Audit"}, "an Audit policy must name its scope"),
        ({"namespaces": ["Team_B"]}, "must be a namespace name"),
        ({"runtime": {"allowedImages": ["evil.example/backdoor:1"]}}, "pinned by digest"),
        ({"runtime": {"allowedEnv": ["LD PRELOAD"]}}, "allowedEnv entry"),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}},
            "values must be non-empty for In",
        ),
    ],
)
def test_cel_rejects_bad_policies(crds: Cluster, spec: dict[str, Any], message: str) -> None:
    ok, err = dry_run(crds, policy(**spec))
    assert not ok
    assert message in err, err


def test_explain_describes_the_fields(crds: Cluster) -> None:
    out = crds.kubectl("explain", "modeldeployment.spec.model.digest").stdout
    assert "The pin" in out
    assert "64 lowercase hex" in out
    out = crds.kubectl("explain", "mtp.spec.revocationAction").stdout
    assert "ScaleToZero" in out


def test_status_and_scale_subresources_and_columns(crds: Cluster, namespace: str) -> None:
    crds.kubectl("create", "-f", "-", input=json.dumps(md(namespace)))
    status = {
        "status": {
            "shortDigest": "abababababab",
            "replicas": 1,
            "readyReplicas": 1,
            "selector": "app=x",
            "servingSpec": {"model": {"version": "0.9.0"}},
            "mode": "Enforced",
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Available", "message": "",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Verified", "status": "False", "reason": "NotRegistered",
                 "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            ],
        }
    }  # fmt: skip
    crds.kubectl(
        "patch", "md", "m1", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    table = crds.kubectl("get", "md", "m1", "-n", namespace).stdout.splitlines()
    # What was asked next to what serves, and how it was admitted.
    assert table[0].split() == [
        "NAME", "MODEL", "REQUESTED", "SERVING", "DIGEST", "VERIFIED", "MODE", "READY",
        "AVAILABLE", "AGE",
    ]  # fmt: skip
    assert table[1].split()[:9] == [
        "m1", "resnet50", "1.0.0", "0.9.0", "abababababab", "NotRegistered", "Enforced", "True",
        "1",
    ]  # fmt: skip
    crds.kubectl("scale", "md", "m1", "-n", namespace, "--replicas=3")
    got = crds.kubectl_json("get", "md", "m1", "-n", namespace)
    assert got["spec"]["replicas"] == 3  # type: ignore[index]
    # A status write through the main resource is ignored: only the operator sets status.
    body = copy.deepcopy(got)
    body["status"]["shortDigest"] = "forged"  # type: ignore[index]
    crds.kubectl("replace", "-f", "-", input=json.dumps(body))
    again = crds.kubectl_json("get", "md", "m1", "-n", namespace)
    assert again["status"]["shortDigest"] == "abababababab"  # type: ignore[index]


def test_built_pods_pass_restricted_pod_security(crds: Cluster, namespace: str) -> None:
    crds.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    body = md(namespace)
    body["metadata"].update(uid="0b6c1f3e-2f43-4d6e-9a53-6f1f4b0e2a11", generation=1)
    body["spec"].update(replicas=1, policy="default")
    parsed = parse_model_deployment(body)
    dep = build_deployment(parsed, VerifiedModel(digest=DIGEST, size=1000, generation=1))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "pinned",
            "namespace": namespace,
            **dep["spec"]["template"]["metadata"],
        },
        "spec": dep["spec"]["template"]["spec"],
    }
    ok, out = dry_run(crds, pod)
    assert ok, out
    # The same pod with a privileged tweak is refused: the namespace really enforces.
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    ok, err = dry_run(crds, pod)
    assert not ok
    assert "violates PodSecurity" in err
    ok, out = dry_run(crds, dep)
    assert ok, out
