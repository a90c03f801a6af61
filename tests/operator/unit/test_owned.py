"""Which object at an owned object's name the operator may take back, wait for, or refuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.operator.errors import NotControlled, Retry
from modeltrust.operator.owned import is_ours_orphaned, refuse_foreign
from modeltrust.operator.types import ModelDeployment, parse_model_deployment

pytestmark = pytest.mark.unit


@pytest.fixture
def md(md_body: Callable[..., dict[str, Any]]) -> ModelDeployment:
    return parse_model_deployment(md_body())


def deployment(uid: str = "d1", owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "m", "uid": uid,
                                               "ownerReferences": owners or []}}  # fmt: skip


def test_only_the_object_the_operator_made_is_taken_back_when_orphaned() -> None:
    assert is_ours_orphaned(deployment("d1"), "d1")
    assert not is_ours_orphaned(deployment("d2"), "d1")  # another object at the name
    assert not is_ours_orphaned(deployment("d1"), None)  # nothing recorded: not provable
    # Its controller reference pointed at another object: still the object it made.
    other = {"kind": "ModelDeployment", "name": "x", "uid": "o", "controller": True}
    assert is_ours_orphaned(deployment("d1", [other]), "d1")


def test_a_foreign_object_is_refused_by_name(md: ModelDeployment) -> None:
    with pytest.raises(NotControlled, match="is not controlled by this ModelDeployment"):
        refuse_foreign(deployment("d2"), md)


def test_an_earlier_model_deployments_leftover_is_waited_for(md: ModelDeployment) -> None:
    earlier = {"kind": "ModelDeployment", "name": md.ref.name, "uid": "old", "controller": True}
    with pytest.raises(Retry, match="earlier ModelDeployment"):
        refuse_foreign(deployment("d2", [earlier]), md)
    going = deployment("d2")
    going["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    with pytest.raises(Retry, match="being deleted"):
        refuse_foreign(going, md)
