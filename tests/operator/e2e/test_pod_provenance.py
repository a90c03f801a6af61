"""The pod re-verifies offline what the operator verified (docs/architecture.md, trust model).

The operator writes the registration, publisher key, signed checkpoint and inclusion proof
into an immutable ConfigMap owned by the ModelDeployment and mounts it into the init step.
The test runs the init container's exact command line locally, with the pod's paths mapped
to a directory holding the ConfigMap's files, against the model served over HTTP (on
loopback with kwok, whose pods run nothing; on the host address pods reach with a real
node, where the pods' own init step runs it too before they become Ready).
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.cluster import Cluster

from .conftest import (
    MODELTRUST,
    Ledger,
    Models,
    Publisher,
    apply,
    deployment,
    model_deployment,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator")

POD_PROVENANCE_DIR = "/etc/modeltrust/provenance"
POD_MODEL_PATH = "/models/model.onnx"


@pytest.fixture
def model_server(cluster: Cluster, models: Models) -> Iterator[str]:
    """The models directory over HTTP (what a model store would be), where pods reach it."""
    models.root.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(models.root))
    server = http.server.ThreadingHTTPServer((cluster.host_address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{cluster.host_address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    return cluster.kubectl_json(*args)


def run_init_step(
    template: dict[str, Any], config_map: dict[str, Any], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """The pod template's init container, run here with its paths mapped to `workdir`."""
    (init,) = template["spec"]["initContainers"]
    files = workdir / "provenance"
    files.mkdir(parents=True, exist_ok=True)
    for name, content in config_map["data"].items():
        (files / name).write_text(content)
    dest = workdir / "models" / "model.onnx"
    dest.parent.mkdir(parents=True, exist_ok=True)
    args = [
        a.replace(POD_PROVENANCE_DIR, str(files)).replace(POD_MODEL_PATH, str(dest))
        for a in init["args"]
    ]
    assert init["command"] == ["modeltrust", "fetch"]
    return subprocess.run(
        [str(MODELTRUST), "fetch", *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_pod_reverifies_the_registration_offline(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    model_server: str,
    tmp_path: Path,
) -> None:
    path, digest = models.make("served", seed=21)
    index = ledger.register(publishers["trusted"], path, "mnist", "1.0.0")
    apply(crds, model_deployment(namespace, "p", policy, f"{model_server}/served.onnx", digest))
    md = wait_condition(crds, namespace, "p", "Ready", "True")

    dep = deployment(crds, namespace, "p")
    assert dep is not None
    template = dep["spec"]["template"]
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "provenance")
    cm_name = volume["configMap"]["name"]
    assert cm_name.startswith(f"p-{digest[7:19]}-")
    assert md["status"]["provenance"]["configMap"] == cm_name
    (init,) = template["spec"]["initContainers"]
    assert {"name": "provenance", "mountPath": POD_PROVENANCE_DIR, "readOnly": True} in init[
        "volumeMounts"
    ]
    cm = get_json(crds, "get", "configmap", cm_name, "-n", namespace)
    assert cm["immutable"] is True
    assert cm["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]

    result = run_init_step(template, cm, tmp_path / "pod")
    assert result.returncode == 0, result.stderr
    proven = (
        f"registered: mnist 1.0.0 signed by key {publishers['trusted'].key_id}, "
        f"proven at ledger index {index}"
    )
    assert proven in result.stdout
    if crds.real_pods:
        # The pod's own init step ran it too, from the mounted ConfigMap, before Ready.
        log = crds.kubectl("logs", "deployment/p", "-n", namespace, "-c", "fetch").stdout
        assert proven in log, log
    assert (tmp_path / "pod" / "models" / "model.onnx").read_bytes() == path.read_bytes()

    # The same command refuses a ConfigMap whose publisher key was swapped.
    cm["data"]["publisher.pem"] = publishers["outsider"].pem
    refused = run_init_step(template, cm, tmp_path / "tampered")
    assert refused.returncode == 1
    assert "signer check failed" in refused.stderr
    assert not (tmp_path / "tampered" / "models" / "model.onnx").exists()


def test_a_new_version_gets_its_own_proof_and_the_old_one_stays(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    policy: str,
    model_server: str,
) -> None:
    v1, d1 = models.make("v1", seed=22)
    v2, d2 = models.make("v2", seed=23)
    ledger.register(publishers["trusted"], v1, "mnist", "1.0.0")
    ledger.register(publishers["trusted"], v2, "mnist", "2.0.0")
    apply(crds, model_deployment(namespace, "u", policy, f"{model_server}/v1.onnx", d1))
    first = wait_condition(crds, namespace, "u", "Ready", "True")["status"]["provenance"]
    apply(
        crds,
        model_deployment(namespace, "u", policy, f"{model_server}/v2.onnx", d2, version="2.0.0"),
    )

    def second() -> dict[str, Any] | None:
        md = get_json(crds, "get", "md", "u", "-n", namespace)
        return md if md.get("status", {}).get("servingDigest") == d2 else None

    md = wait_for("version 2 to roll out", second)
    new = md["status"]["provenance"]["configMap"]
    assert new != first["configMap"]
    assert new.startswith(f"u-{d2[7:19]}-")
    # Pods of the old ReplicaSet may still be running: their proof must still be there.
    names = crds.kubectl(
        "get", "configmap", "-n", namespace, "-o", "name", "-l", "modeltrust.dev/model-deployment=u"
    ).stdout.split()
    assert {f"configmap/{first['configMap']}", f"configmap/{new}"} <= set(names)
