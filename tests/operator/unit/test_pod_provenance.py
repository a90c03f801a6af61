"""An existing proof ConfigMap is used only if its content is what the operator writes
(a pre-created ConfigMap with the derived name and a forged controller ownerReference
must not become the pod's proof: anyone who may create ConfigMaps can forge both)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.chain.checkpoint import Checkpoint, sign_checkpoint
from modeltrust.chain.entries import leaf_data
from modeltrust.chain.merkle import leaf_hash, root_from_leaf_hashes
from modeltrust.chain.note import NoteSigner
from modeltrust.chain.signatures import (
    generate_private_key,
    key_id,
    public_key_pem,
    sign_registration,
)
from modeltrust.chain.trust import TrustedPublisher, VerificationPolicy
from modeltrust.operator.errors import ProvenancePending
from modeltrust.operator.keys import TrustedKey, TrustedKeys
from modeltrust.operator.pod_provenance import _usable, proof_problem
from modeltrust.operator.provenance import ProvenanceMaterial, build_config_map
from modeltrust.operator.types import LedgerSpec, ModelDeployment, Publisher, parse_model_deployment

pytestmark = pytest.mark.unit

ORIGIN = "ledger.unit.test"
LEDGER = NoteSigner.generate(ORIGIN)
PUBLISHER = generate_private_key("ed25519")
SPEC = LedgerSpec("http://127.0.0.1:1", LEDGER.verifier_key())


def trusted_keys() -> TrustedKeys:
    pub = PUBLISHER.public_key()
    kid = key_id(pub)
    pem = public_key_pem(pub).decode()
    policy = VerificationPolicy((TrustedPublisher("acme", pub),))
    return TrustedKeys({kid: TrustedKey(kid, Publisher("acme", pem), pub)}, policy)


@pytest.fixture
def md(md_body: Callable[..., dict[str, Any]]) -> ModelDeployment:
    return parse_model_deployment(md_body())


def material(
    md: ModelDeployment,
    *,
    publisher: Any = PUBLISHER,
    ledger: NoteSigner = LEDGER,
    size: int = 1,
) -> ProvenanceMaterial:
    """The registration at index 0 of a tree of `size` leaves (other leaves: filler)."""
    reg = sign_registration(
        publisher, name=md.model.name, version=md.model.version, digest=md.model.digest, size=10
    )
    leaves = [leaf_hash(leaf_data(reg))] + [bytes([i]) * 32 for i in range(1, size)]
    note = sign_checkpoint(Checkpoint(ORIGIN, size, root_from_leaf_hashes(leaves)), ledger)
    proof = tuple(leaves[1:2])  # the sibling of leaf 0 in a tree of 1 or 2 leaves
    return ProvenanceMaterial(
        registration=reg, index=0, leaf_hash=leaves[0], checkpoint_note=note, tree_size=size,
        inclusion_proof=proof, publisher_key_pem=public_key_pem(publisher.public_key()).decode(),
        ledger_key=ledger.verifier_key(), origin=ORIGIN,
    )  # fmt: skip


def test_the_operators_own_proof_is_used(md: ModelDeployment) -> None:
    for size in (1, 2):  # a proof at an older checkpoint is still the operator's proof
        cm = build_config_map(md, material(md, size=size))
        assert proof_problem(cm, md, SPEC, trusted_keys(), 0) is None


@pytest.mark.parametrize(
    ("forge", "words"),
    [
        # The attacker's own publisher key, signing the pinned digest.
        (lambda md: build_config_map(md, material(md, publisher=generate_private_key("ed25519"))),
         "not signed by a publisher of the policy"),
        # The attacker's own ledger key.
        (lambda md: build_config_map(md, material(md, ledger=NoteSigner.generate(ORIGIN))),
         "does not verify with the policy's keys"),
        # Genuine material plus one more file.
        (lambda md: _edit(build_config_map(md, material(md)), extra="x"),
         "differ from what the operator writes"),
        # The same files re-encoded (the pod reads them, so bytes matter).
        (lambda md: _edit(build_config_map(md, material(md)), reindent=True),
         "differ from what the operator writes"),
        # Not owned at all.
        (lambda md: _edit(build_config_map(md, material(md)), owner="someone-else"),
         "not controlled by this ModelDeployment"),
    ],
)  # fmt: skip
def test_anything_else_is_refused(
    md: ModelDeployment, forge: Callable[[ModelDeployment], dict[str, Any]], words: str
) -> None:
    problem = proof_problem(forge(md), md, SPEC, trusted_keys(), 0)
    assert problem is not None
    assert words in problem


def test_a_proof_of_another_index_is_refused(md: ModelDeployment) -> None:
    cm = build_config_map(md, material(md))
    assert "not registration 7" in (proof_problem(cm, md, SPEC, trusted_keys(), 7) or "")


def _edit(
    cm: dict[str, Any], *, extra: str = "", reindent: bool = False, owner: str = ""
) -> dict[str, Any]:
    cm = copy.deepcopy(cm)
    if extra:
        cm["data"]["extra.txt"] = extra
    if reindent:
        cm["data"]["registration.json"] = cm["data"]["registration.json"].replace("\n ", "\n  ")
    if owner:
        cm["metadata"]["ownerReferences"][0]["uid"] = owner
    return cm


class OneConfigMap:
    def __init__(self, cm: dict[str, Any]) -> None:
        self.cm = cm

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cm if name == self.cm["metadata"]["name"] else None


async def test_a_forged_config_map_stops_the_rollout_with_a_clear_error(
    md: ModelDeployment,
) -> None:
    forged = build_config_map(md, material(md, publisher=generate_private_key("ed25519")))
    kube = OneConfigMap(forged)
    with pytest.raises(ProvenancePending, match="delete it so the operator can write its own"):
        await _usable(kube, md, forged["metadata"]["name"], SPEC, trusted_keys(), 0)  # type: ignore[arg-type]
    genuine = build_config_map(md, material(md))
    assert await _usable(
        OneConfigMap(genuine),  # type: ignore[arg-type]
        md, genuine["metadata"]["name"], SPEC, trusted_keys(), 0,
    )  # fmt: skip
