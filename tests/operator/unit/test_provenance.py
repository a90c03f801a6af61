"""The pod's offline proof: ConfigMap content that `modeltrust fetch` verifies, its name, and
how the pod template mounts it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint
from modeltrust.chain.entries import leaf_data
from modeltrust.chain.errors import ProvenanceError
from modeltrust.chain.merkle import leaf_hash, root_from_leaf_hashes
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.provenance import verify_provenance
from modeltrust.chain.signatures import generate_private_key, public_key_pem, sign_registration
from modeltrust.operator.builders import VerifiedModel, build_deployment
from modeltrust.operator.drift import detect_drift
from modeltrust.operator.provenance import (
    FILES,
    ProvenanceMaterial,
    build_config_map,
    config_map_name,
    fetch_args,
    has_all_files,
)
from modeltrust.operator.types import ModelDeployment, parse_model_deployment

pytestmark = pytest.mark.unit

MdFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def md(md_body: MdFactory) -> ModelDeployment:
    return parse_model_deployment(md_body())


def material_for(md: ModelDeployment, *, tamper_version: bool = False) -> ProvenanceMaterial:
    """A registration at index 0 of a one-entry tree (proof: empty), signed checkpoint."""
    publisher = generate_private_key("ed25519")
    reg = sign_registration(
        publisher, name=md.model.name, version=md.model.version, digest=md.model.digest, size=10
    )
    leaf = leaf_hash(leaf_data(reg))
    signer = NoteSigner.generate("ledger.unit.test")
    note = sign_checkpoint(Checkpoint("ledger.unit.test", 1, root_from_leaf_hashes([leaf])), signer)
    return ProvenanceMaterial(
        registration=reg,
        index=0,
        leaf_hash=leaf,
        checkpoint_note=note,
        tree_size=1,
        inclusion_proof=(),
        publisher_key_pem=public_key_pem(publisher.public_key()).decode(),
        ledger_key=signer.verifier_key(),
        origin="ledger.unit.test",
    )


def verify_data(data: dict[str, str], digest: str) -> Any:
    """What `modeltrust fetch` does with the mounted files (same parser and checks)."""
    return verify_provenance(
        digest=digest,
        registration=json.loads(data["registration.json"]),
        publisher_key_pem=data["publisher.pem"].encode(),
        checkpoint_note=data["checkpoint.note"],
        ledger_verifier_key=data["ledger.key"].strip(),
        proof=json.loads(data["inclusion-proof.json"]),
        origin="ledger.unit.test",
    )


def test_config_map_content_verifies_offline(md: ModelDeployment) -> None:
    cm = build_config_map(md, material_for(md))
    proven = verify_data(cm["data"], md.model.digest)
    assert proven.registration.model_name == md.model.name
    assert proven.index == 0
    assert proven.tree_size == 1
    assert has_all_files(cm)


def test_config_map_is_immutable_owned_and_named_after_md_and_digest(md: ModelDeployment) -> None:
    material = material_for(md)
    cm = build_config_map(md, material)
    assert cm["immutable"] is True
    assert cm["metadata"]["namespace"] == md.ref.namespace
    assert cm["metadata"]["ownerReferences"][0]["uid"] == md.ref.uid
    name = cm["metadata"]["name"]
    assert name.startswith(f"{md.ref.name}-{md.model.digest[7:19]}-")
    assert set(cm["data"]) == set(FILES)


def test_names_differ_per_digest_ledger_and_registration() -> None:
    d1, d2 = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
    names = {
        config_map_name("m", d1, "k1", 3),
        config_map_name("m", d2, "k1", 3),
        config_map_name("m", d1, "k2", 3),
        config_map_name("m", d1, "k1", 4),
        config_map_name("n", d1, "k1", 3),
    }
    assert len(names) == 5
    long = config_map_name("x" * 253, d1, "k", 1)
    assert len(long) <= 253
    assert long == config_map_name("x" * 253, d1, "k", 1)


def test_a_tampered_registration_in_the_config_map_fails_offline(md: ModelDeployment) -> None:
    cm = build_config_map(md, material_for(md))
    data = dict(cm["data"])
    data["registration.json"] = data["registration.json"].replace(md.model.version, "6.6.6")
    with pytest.raises(ProvenanceError, match="signature check failed"):
        verify_data(data, md.model.digest)


def test_material_must_be_proven_by_its_checkpoint(md: ModelDeployment) -> None:
    good = material_for(md)
    with pytest.raises(ValueError, match="not below the checkpoint size"):
        ProvenanceMaterial(**{**good.__dict__, "index": 1})


def test_pod_template_mounts_the_proof_into_the_fetch_step_only(md: ModelDeployment) -> None:
    verified = VerifiedModel(
        digest=md.model.digest,
        size=10,
        generation=md.ref.generation,
        fetch_args=fetch_args("ledger.unit.test"),
        provenance_config_map="resnet-abababababab-12345678",
    )
    pod = build_deployment(md, verified)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    mount = {"name": "provenance", "mountPath": "/etc/modeltrust/provenance", "readOnly": True}
    assert mount in init["volumeMounts"]
    assert all(m["name"] != "provenance" for m in server["volumeMounts"])
    volume = next(v for v in pod["volumes"] if v["name"] == "provenance")
    assert volume["configMap"]["name"] == "resnet-abababababab-12345678"
    args = init["args"]
    for flag, file in [
        ("--registration", "registration.json"),
        ("--publisher-key", "publisher.pem"),
        ("--checkpoint", "checkpoint.note"),
        ("--ledger-key", "ledger.key"),
        ("--inclusion-proof", "inclusion-proof.json"),
    ]:
        assert args[args.index(flag) + 1] == f"/etc/modeltrust/provenance/{file}"
    assert args[args.index("--origin") + 1] == "ledger.unit.test"


def test_swapping_the_proof_config_map_is_drift(md: ModelDeployment) -> None:
    def template(cm: str) -> dict[str, Any]:
        verified = VerifiedModel(
            digest=md.model.digest, size=10, generation=1,
            fetch_args=fetch_args("o"), provenance_config_map=cm,
        )  # fmt: skip
        result: dict[str, Any] = build_deployment(md, verified)["spec"]["template"]
        return result

    assert detect_drift(template("mine"), template("mine")) == ()
    assert detect_drift(template("attacker-keys"), template("mine")) == (
        "template.spec.volumes[provenance].configMap.name differs from the verified template",
    )
