"""Which namespaces may name a ModelTrustPolicy.

A policy is cluster scoped, a ModelDeployment names it by name: without a scope, anyone
who may create a ModelDeployment anywhere gets whatever the policy grants (an Audit
policy's "roll out despite failed checks", a runtime allow-list meant for one team).

Rules (docs/operator.md, "Policy scope"):
- `spec.namespaces` and `spec.namespaceSelector` each grant: a namespace is in scope when
  it is listed, or when its labels match the selector (standard LabelSelector semantics:
  the empty selector `{}` matches every namespace, which is how a policy says "all"
  explicitly).
- Neither given: every namespace, for Enforce policies only (backwards compatible: such a
  policy grants nothing beyond verification against its publishers). An Audit policy
  without a scope is invalid (types.parse_trust_policy, and a CEL rule in the CRD).
- The namespace's labels are read at decision time (and at every re-verification), never
  cached; a namespace that does not exist has no labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from modeltrust.operator.decisions import Finding, Reason
from modeltrust.operator.types import LabelSelector, PolicyScope, SelectorRequirement, TrustPolicy


class NamespaceReader(Protocol):
    async def get_namespace(self, name: str) -> Mapping[str, object] | None: ...


def requirement_matches(req: SelectorRequirement, labels: Mapping[str, str]) -> bool:
    if req.operator == "In":
        return req.key in labels and labels[req.key] in req.values
    if req.operator == "NotIn":
        return req.key not in labels or labels[req.key] not in req.values
    if req.operator == "Exists":
        return req.key in labels
    if req.operator == "DoesNotExist":
        return req.key not in labels
    return False  # an unknown operator selects nothing


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels pair and every expression."""
    return all(labels.get(k) == v for k, v in selector.match_labels.items()) and all(
        requirement_matches(r, labels) for r in selector.match_expressions
    )


def needs_labels(scope: PolicyScope, namespace: str) -> bool:
    """Whether deciding `namespace` needs its labels (a selector the list does not settle)."""
    return scope.selector is not None and namespace not in scope.namespaces


def in_scope(scope: PolicyScope, namespace: str, labels: Mapping[str, str] | None) -> bool:
    """Whether `namespace` (with `labels`; None when not read) may name the policy."""
    if not scope.explicit:
        return True
    if namespace in scope.namespaces:
        return True
    if scope.selector is not None and labels is not None:
        return selector_matches(scope.selector, labels)
    return False


def describe(scope: PolicyScope) -> str:
    parts: list[str] = []
    if scope.namespaces:
        parts.append("namespaces " + ", ".join(scope.namespaces))
    if scope.selector is not None:
        terms = [f"{k}={v}" for k, v in sorted(scope.selector.match_labels.items())]
        terms += [
            f"{r.key} {r.operator}" + (f" ({', '.join(r.values)})" if r.values else "")
            for r in scope.selector.match_expressions
        ]
        parts.append("namespaces labelled " + (", ".join(terms) or "anything ({})"))
    return " or ".join(parts) or "every namespace"


def scope_finding(
    policy: TrustPolicy, namespace: str, labels: Mapping[str, str] | None
) -> Finding | None:
    """PolicyNotInScope when `namespace` may not name `policy`, else None."""
    if in_scope(policy.scope, namespace, labels):
        return None
    return Finding(
        Reason.POLICY_NOT_IN_SCOPE,
        f"namespace {namespace!r} may not use ModelTrustPolicy {policy.name!r}: it applies "
        f"to {describe(policy.scope)} (spec.namespaces, spec.namespaceSelector)",
    )


async def namespace_scope_finding(
    kube: NamespaceReader, policy: TrustPolicy, namespace: str
) -> Finding | None:
    """scope_finding, reading the namespace's labels when the selector needs them (an API
    error propagates: no decision is taken on a read that failed)."""
    labels: dict[str, str] | None = None
    if needs_labels(policy.scope, namespace):
        ns = await kube.get_namespace(namespace)
        meta = (ns or {}).get("metadata")
        raw = meta.get("labels") if isinstance(meta, Mapping) else None
        labels = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    return scope_finding(policy, namespace, labels)
