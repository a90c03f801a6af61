"""Policy scope: which namespaces may name a cluster-scoped ModelTrustPolicy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from modeltrust.operator.decisions import Reason
from modeltrust.operator.errors import SpecError
from modeltrust.operator.policy_scope import (
    in_scope,
    namespace_scope_finding,
    needs_labels,
    scope_finding,
    selector_matches,
)
from modeltrust.operator.types import (
    LabelSelector,
    PolicyScope,
    SelectorRequirement,
    TrustPolicy,
    parse_trust_policy,
)

pytestmark = pytest.mark.unit

PolicyBody = Callable[[], dict[str, Any]]


def policy(policy_body: PolicyBody, **spec: Any) -> TrustPolicy:
    body = policy_body()
    body["spec"].update(spec)
    return parse_trust_policy(body)


def test_no_scope_means_every_namespace_for_enforce_policies(policy_body: PolicyBody) -> None:
    p = policy(policy_body)
    assert not p.scope.explicit
    assert scope_finding(p, "anything", None) is None


def test_audit_policies_must_name_their_scope(policy_body: PolicyBody) -> None:
    # The attack: team-b named an admin's unscoped Audit lab policy.
    with pytest.raises(SpecError) as err:
        policy(policy_body, enforcement="Audit")
    assert err.value.field == "spec.enforcement"
    assert "scope" in err.value.problem
    assert policy(policy_body, enforcement="Audit", namespaces=["lab"]).scope.namespaces
    everything = policy(policy_body, enforcement="Audit", namespaceSelector={})
    assert scope_finding(everything, "any", {}) is None  # "all", written explicitly


def test_namespaces_list(policy_body: PolicyBody) -> None:
    p = policy(policy_body, namespaces=["lab", "team-a"])
    assert scope_finding(p, "lab", None) is None
    f = scope_finding(p, "team-b", None)
    assert f is not None
    assert f.reason is Reason.POLICY_NOT_IN_SCOPE
    assert "'team-b'" in f.message
    assert "lab, team-a" in f.message
    assert not needs_labels(p.scope, "team-b")  # no selector: no namespace read


def test_selector_semantics() -> None:
    labels = {"team": "a", "env": "lab"}
    assert selector_matches(LabelSelector(), labels)  # the empty selector selects all
    assert selector_matches(LabelSelector({"team": "a"}), labels)
    assert not selector_matches(LabelSelector({"team": "b"}), labels)
    cases = [
        (SelectorRequirement("env", "In", ("lab", "dev")), True),
        (SelectorRequirement("env", "In", ("prod",)), False),
        (SelectorRequirement("env", "NotIn", ("prod",)), True),
        (SelectorRequirement("missing", "NotIn", ("x",)), True),
        (SelectorRequirement("team", "Exists"), True),
        (SelectorRequirement("missing", "Exists"), False),
        (SelectorRequirement("missing", "DoesNotExist"), True),
        (SelectorRequirement("team", "DoesNotExist"), False),
        (SelectorRequirement("team", "Bogus"), False),
    ]
    for req, expected in cases:
        assert selector_matches(LabelSelector(match_expressions=(req,)), labels) is expected, req
    both = LabelSelector({"team": "a"}, (SelectorRequirement("env", "In", ("prod",)),))
    assert not selector_matches(both, labels)  # every term must hold


def test_list_or_selector_each_grant() -> None:
    scope = PolicyScope(("lab",), LabelSelector({"team": "a"}))
    assert in_scope(scope, "lab", None)
    assert in_scope(scope, "x", {"team": "a"})
    assert not in_scope(scope, "x", {"team": "b"})
    assert not in_scope(scope, "x", None)  # labels unknown: not in scope


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"namespaces": []}, "spec.namespaces"),
        ({"namespaces": ["Team_B"]}, "spec.namespaces[0]"),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}},
            "spec.namespaceSelector.matchExpressions[0].values",
        ),
        (
            {"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "Near"}]}},
            "spec.namespaceSelector.matchExpressions[0].operator",
        ),
    ],
)
def test_scope_fields_are_validated(
    policy_body: PolicyBody, spec: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as err:
        policy(policy_body, **spec)
    assert err.value.field == field


class Namespaces:
    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels
        self.reads: list[str] = []

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        if name not in self.labels:
            return None
        return {"metadata": {"name": name, "labels": self.labels[name]}}


async def test_namespace_labels_are_read_only_when_the_selector_needs_them(
    policy_body: PolicyBody,
) -> None:
    p = policy(policy_body, namespaces=["lab"], namespaceSelector={"matchLabels": {"team": "a"}})
    kube = Namespaces({"team-a": {"team": "a"}, "team-b": {"team": "b"}})
    assert await namespace_scope_finding(kube, p, "lab") is None
    assert kube.reads == []
    assert await namespace_scope_finding(kube, p, "team-a") is None
    found = await namespace_scope_finding(kube, p, "team-b")
    assert found is not None
    assert found.reason is Reason.POLICY_NOT_IN_SCOPE
    assert await namespace_scope_finding(kube, p, "gone") is not None  # no labels
    assert kube.reads == ["team-a", "team-b", "gone"]
