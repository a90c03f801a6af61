"""Policy keys are parsed and checked; readiness is computed from Deployment status."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.chain.signatures import generate_private_key, key_id, public_key_pem
from modeltrust.operator.errors import SpecError
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.status import controlled_uid, readiness
from modeltrust.operator.types import Publisher, parse_trust_policy

pytestmark = pytest.mark.unit


def test_keys_are_indexed_by_key_id(policy_body: Callable[[], dict[str, Any]]) -> None:
    ed = generate_private_key("ed25519").public_key()
    ec = generate_private_key("ecdsa-p256").public_key()
    policy = parse_trust_policy(policy_body())
    policy = dataclasses.replace(
        policy,
        publishers=(
            Publisher("a", public_key_pem(ed).decode(), key_id=key_id(ed)),
            Publisher("b", public_key_pem(ec).decode()),
        ),
    )
    keys = TrustedKeys.from_policy(policy)
    assert sorted(keys.key_ids) == sorted([key_id(ed), key_id(ec)])
    found = keys.get(key_id(ec))
    assert found is not None
    assert found.publisher.name == "b"


def test_bad_keys_and_mismatched_ids_name_the_publisher(
    policy_body: Callable[[], dict[str, Any]],
) -> None:
    ed = generate_private_key("ed25519").public_key()
    policy = parse_trust_policy(policy_body())
    wrong_id = dataclasses.replace(
        policy, publishers=(Publisher("a", public_key_pem(ed).decode(), "00" * 32),)
    )
    with pytest.raises(SpecError, match="not the declared") as err:
        TrustedKeys.from_policy(wrong_id)
    assert err.value.field == "spec.publishers[0].keyId"
    garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(SpecError, match="publisher 'x'"):
        TrustedKeys.from_policy(dataclasses.replace(policy, publishers=(Publisher("x", garbage),)))


MD_UID = "md-uid"
OWNER = {"kind": "ModelDeployment", "name": "m", "uid": MD_UID, "controller": True}


def dep(
    want: int, ready: int, updated: int, *, generation: int = 2, observed: int = 2
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation, "uid": "dep-uid", "ownerReferences": [OWNER]},
        "spec": {"replicas": want},
        "status": {"observedGeneration": observed, "replicas": want, "readyReplicas": ready,
                   "updatedReplicas": updated, "availableReplicas": ready},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("deployment", "status", "reason"),
    [
        (None, "False", "NotDeployed"),
        (dep(2, 2, 2), "True", "Available"),
        (dep(2, 1, 2), "False", "Progressing"),
        (dep(2, 2, 1), "False", "Progressing"),  # old pods still ready, new not yet
        (dep(2, 2, 2, observed=1), "False", "Progressing"),
        (dep(0, 0, 0), "True", "ScaledToZero"),
    ],
)
def test_readiness(deployment: dict[str, Any] | None, status: str, reason: str) -> None:
    r = readiness(deployment, owner_uid=MD_UID)
    assert (r.status, r.reason) == (status, reason)


def test_revoked_is_never_ready() -> None:
    assert readiness(dep(2, 2, 2), owner_uid=MD_UID, revoked=True).reason == "Revoked"


@pytest.mark.parametrize(
    "owners",
    [
        [],  # the controller reference was removed
        [{**OWNER, "controller": False}],  # still named, but not as its controller
        [{**OWNER, "uid": "another-md"}],  # another object took the name
    ],
)
def test_ready_is_never_reported_from_a_deployment_it_does_not_control(
    owners: list[dict[str, Any]],
) -> None:
    d = dep(2, 2, 2)
    d["metadata"]["ownerReferences"] = owners
    r = readiness(d, owner_uid=MD_UID)
    assert (r.status, r.reason, r.ready_replicas) == ("False", "NotControlled", 0)
    assert "not controlled by this ModelDeployment" in r.message
    assert controlled_uid(d, MD_UID) is None
    assert controlled_uid(dep(2, 2, 2), MD_UID) == "dep-uid"
