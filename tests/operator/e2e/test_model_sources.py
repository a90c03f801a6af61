"""Models where teams keep them: an OCI registry (pushed with the ORAS CLI, pulled by tag)
and an S3-compatible store, both private, over TLS with their own CA, the credentials in a
Secret bound to the store's host. Through the operator and, on a real node, through the
pods' fetch step (Ready means the pod fetched, verified and loaded it)."""

from __future__ import annotations

from pathlib import Path

from harness.cluster import Cluster
from harness.modeltrust_objects import source_secret
from harness.oci_registry import oci_registry
from harness.s3_server import s3_server

from .conftest import (
    Ledger,
    Models,
    Operator,
    Publisher,
    apply,
    assert_never_shown,
    condition,
    deployment,
    model_deployment,
    wait_condition,
)


def _bind(cluster: Cluster) -> str:
    return cluster.host_address if cluster.real_pods else "127.0.0.1"


def test_a_model_from_a_private_oci_registry_by_tag(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    policy: str,
    publishers: dict[str, Publisher],
    models: Models,
    operator: Operator,
    tmp_path: Path,
) -> None:
    password = "registry-pw-4f1e9c"
    path, digest = models.make("oci-model", seed=311)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    with oci_registry(
        tmp_path / "registry", users={"puller": password}, bind=_bind(crds)
    ) as registry:
        manifest = registry.push(path, "ml/mnist:1.0.0")
        apply(
            crds,
            source_secret(
                namespace, "registry", registry.host,
                {"username": b"puller", "password": password.encode(),
                 "ca.crt": registry.ca.read_bytes()},
            ),
        )  # fmt: skip
        body = model_deployment(
            namespace, "from-oci", policy, f"oci://{registry.host}/ml/mnist:1.0.0", digest
        )
        body["spec"]["model"]["credentials"] = {"secretName": "registry"}
        apply(crds, body)
        md = wait_condition(crds, namespace, "from-oci", "Ready", "True")

    assert condition(md, "Verified")["status"] == "True"
    # The tag was resolved once and pinned: pods fetch exactly the manifest checked.
    pinned = f"oci://{registry.host}/ml/mnist@{manifest}"
    assert md["status"]["servingSpec"]["model"]["uri"] == pinned
    dep = deployment(crds, namespace, "from-oci")
    assert dep is not None
    (fetch,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert fetch["args"][fetch["args"].index("--uri") + 1] == pinned
    assert_never_shown(crds, md, ledger, operator, password)


def test_a_model_from_a_private_s3_store(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    policy: str,
    publishers: dict[str, Publisher],
    models: Models,
    operator: Operator,
    tmp_path: Path,
) -> None:
    path, digest = models.make("s3-model", seed=312)
    ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    with s3_server(tmp_path / "s3", tls=True, bind=_bind(crds)) as store:
        store.create_bucket("models")
        store.put_object("models", "team/mnist-1.0.0.onnx", path)
        assert store.ca_pem is not None
        apply(
            crds,
            source_secret(
                namespace, "store", f"{store.host}:{store.port}",
                {"AWS_ACCESS_KEY_ID": store.access_key.encode(),
                 "AWS_SECRET_ACCESS_KEY": store.secret_key.encode(), "ca.crt": store.ca_pem},
            ),
        )  # fmt: skip
        body = model_deployment(
            namespace, "from-s3", policy, "s3://models/team/mnist-1.0.0.onnx", digest
        )
        body["spec"]["model"]["credentials"] = {"secretName": "store"}
        body["spec"]["model"]["s3"] = {"endpoint": store.url, "addressing": "path"}
        apply(crds, body)
        md = wait_condition(crds, namespace, "from-s3", "Ready", "True")
        secret_key = store.secret_key

    assert condition(md, "Verified")["status"] == "True"
    dep = deployment(crds, namespace, "from-s3")
    assert dep is not None
    (fetch,) = dep["spec"]["template"]["spec"]["initContainers"]
    assert fetch["args"][fetch["args"].index("--s3-endpoint") + 1] == store.url
    assert_never_shown(crds, md, ledger, operator, secret_key)
