"""Drift of an owned Deployment: the live object against the one the operator builds.

The owned Deployment is compared with the one builders.py builds for the verified version,
as a whole: every field we set must hold our value, and every field we do not set must be
absent, unless the API server fills it in with its documented default (listed below). So
an added probe, lifecycle hook, envFrom, hostNetwork, port or an emptied securityContext is
drift, not only the few fields that once looked security-relevant. Pure functions; the
correction itself is drift_correction.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from kubernetes.utils.quantity import parse_quantity

PIN_ANNOTATION_PREFIX = "modeltrust.dev/"
# Pod template annotations that change nothing about what runs (`kubectl rollout restart`).
HARMLESS_TEMPLATE_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/restartedAt"})
# What the API server (k8s.io/api defaults for apps/v1) fills into the fields we leave out.
_POD_DEFAULTS: Mapping[str, Any] = {
    "restartPolicy": "Always",
    "terminationGracePeriodSeconds": 30,
    "dnsPolicy": "ClusterFirst",
    "schedulerName": "default-scheduler",
}
_CONTAINER_DEFAULTS: Mapping[str, Any] = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}
_PROBE_DEFAULTS: Mapping[str, Any] = {
    "timeoutSeconds": 1,
    "periodSeconds": 10,
    "successThreshold": 1,
    "failureThreshold": 3,
}
_DEPLOYMENT_DEFAULTS: Mapping[str, Any] = {
    "revisionHistoryLimit": 10,
    "progressDeadlineSeconds": 600,
}
_CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_QUANTITY_KEYS = frozenset({"sizeLimit"})
_QUANTITY_MAPS = frozenset({"requests", "limits", "overhead"})


def _quantity(value: Any) -> Any:
    """A canonical form of a Kubernetes quantity ("1000m" and "1" are one value)."""
    try:
        parsed = parse_quantity(value)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError):
        return value
    return format(parsed.normalize(), "f")


def _clean(value: Any, key: str = "") -> Any:
    """Drop what JSON and the API server treat as absent (null, "", [], {}); canonical
    quantities. Booleans and zeros are kept: `allowPrivilegeEscalation: false` means
    something, and its absence something else."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if key in _QUANTITY_MAPS or k in _QUANTITY_KEYS:
                v = _quantity(v)
            c = _clean(v, str(k))
            if c is not None and c != "" and c != [] and c != {}:
                out[str(k)] = c
        return out
    if isinstance(value, list):
        return [_clean(v, key) for v in value]
    return value


def _drop_defaults(obj: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    for k, v in defaults.items():
        if obj.get(k) == v:
            del obj[k]


def default_pull_policy(image: str) -> str:
    """imagePullPolicy the API server sets when it is left out: Always for a ":latest" or
    untagged image (without a digest), IfNotPresent otherwise."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _normalize_container(c: dict[str, Any]) -> None:
    _drop_defaults(c, _CONTAINER_DEFAULTS)
    if c.get("imagePullPolicy") == default_pull_policy(str(c.get("image") or "")):
        del c["imagePullPolicy"]
    for probe_name in (*_PROBES, "lifecycle"):
        probe = c.get(probe_name)
        if not isinstance(probe, dict):
            continue
        if probe_name in _PROBES:
            _drop_defaults(probe, _PROBE_DEFAULTS)
        http = probe.get("httpGet")
        if isinstance(http, dict) and http.get("scheme") == "HTTP":
            del http["scheme"]
    for port in c.get("ports") or []:
        if isinstance(port, dict) and port.get("protocol") == "TCP":
            del port["protocol"]
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(ref, dict) and ref.get("apiVersion") == "v1":
            del ref["apiVersion"]


def normalized_template(template: Mapping[str, Any]) -> dict[str, Any]:
    """A pod template with API-server defaults and empty values taken out, so that ours
    and the live one compare equal exactly when nothing that matters differs."""
    t = _clean(template)
    meta = t.get("metadata") or {}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items()
        if k not in HARMLESS_TEMPLATE_ANNOTATIONS
    }  # fmt: skip
    # Only labels and annotations of a template reach the pods (name, uid etc. do not).
    t["metadata"] = {
        k: v for k, v in (("labels", meta.get("labels")), ("annotations", annotations)) if v
    }
    spec = t.get("spec") or {}
    _drop_defaults(spec, _POD_DEFAULTS)
    # The API server mirrors serviceAccountName into the deprecated serviceAccount.
    if "serviceAccount" in spec and spec["serviceAccount"] == spec.get("serviceAccountName"):
        del spec["serviceAccount"]
    for kind in _CONTAINER_KINDS:
        for c in spec.get(kind) or []:
            if isinstance(c, dict):
                _normalize_container(c)
    for v in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            inner = v.get(source) if isinstance(v, dict) else None
            if isinstance(inner, dict) and inner.get("defaultMode") == 0o644:
                del inner["defaultMode"]
    return {k: v for k, v in t.items() if v}


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of objects keyed by unique `name` (containers, volumes, env, ports), else None."""
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    by_name = {i["name"]: i for i in items}
    return by_name if len(by_name) == len(items) else None


def _diff(actual: Any, expected: Any, path: str, out: list[str]) -> None:
    if isinstance(actual, dict) and isinstance(expected, dict):
        for k in sorted(set(actual) | set(expected)):
            where = f"{path}.{k}" if path else k
            if k not in expected:
                out.append(f"{where} was added")
            elif k not in actual:
                out.append(f"{where} was removed")
            else:
                _diff(actual[k], expected[k], where, out)
        return
    if isinstance(actual, list) and isinstance(expected, list):
        a, e = _named(actual), _named(expected)
        if a is not None and e is not None:
            for name in [n for n in a if n not in e]:
                out.append(f"{path}[{name}] was added")
            for name in [n for n in e if n not in a]:
                out.append(f"{path}[{name}] was removed")
            common = [n for n in a if n in e]
            if common != [n for n in e if n in a]:
                out.append(f"{path} is in another order than verified")
            for name in common:
                _diff(a[name], e[name], f"{path}[{name}]", out)
            return
        if len(actual) == len(expected):
            for i, (x, y) in enumerate(zip(actual, expected, strict=True)):
                _diff(x, y, f"{path}[{i}]", out)
            return
    if actual != expected:
        out.append(f"{path} differs from the verified template")


def detect_drift(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[str, ...]:
    """Differences between an owned Deployment's pod template and the verified one, each
    naming the field (empty when they agree once API-server defaults are set aside)."""
    out: list[str] = []
    _diff(normalized_template(actual), normalized_template(expected), "template", out)
    return tuple(out)


def _deployment_spec(deployment: Mapping[str, Any]) -> dict[str, Any]:
    spec = _clean({k: v for k, v in (deployment.get("spec") or {}).items() if k != "template"})
    _drop_defaults(spec, _DEPLOYMENT_DEFAULTS)
    return dict(spec)


def detect_deployment_drift(
    actual: Mapping[str, Any], expected: Mapping[str, Any]
) -> tuple[str, ...]:
    """Drift anywhere in an owned Deployment: its spec (replicas, paused, strategy, ...),
    its pod template, and the labels and modeltrust.dev/ annotations we put on it (other
    metadata belongs to Kubernetes: the controller's revision annotation, managedFields)."""
    out: list[str] = []
    _diff(_deployment_spec(actual), _deployment_spec(expected), "spec", out)
    out += detect_drift(
        (actual.get("spec") or {}).get("template") or {},
        (expected.get("spec") or {}).get("template") or {},
    )
    out += _metadata_drift(actual, expected)
    a_meta, e_meta = actual.get("metadata") or {}, expected.get("metadata") or {}
    a_ann, e_ann = a_meta.get("annotations") or {}, e_meta.get("annotations") or {}
    for k in sorted({*a_ann, *e_ann}):
        if k.startswith(PIN_ANNOTATION_PREFIX) and a_ann.get(k) != e_ann.get(k):
            out.append(f"metadata.annotations.{k} is {a_ann.get(k)!r}, not {e_ann.get(k)!r}")
    return tuple(out)


# The Service fields that decide who receives the model's traffic and from where; the rest
# (clusterIP, ipFamilies, ...) the API server assigns. Absent and these defaults are equal.
_SERVICE_DEFAULTS: Mapping[str, Any] = {
    "sessionAffinity": "None",
    "internalTrafficPolicy": "Cluster",
    "publishNotReadyAddresses": False,
    "allocateLoadBalancerNodePorts": True,
}
_SERVICE_FIELDS = (
    "type", "selector", "ports", "externalIPs", "externalName", "loadBalancerIP",
    "loadBalancerSourceRanges", "externalTrafficPolicy", "publishNotReadyAddresses",
    "sessionAffinity", "internalTrafficPolicy", "allocateLoadBalancerNodePorts",
)  # fmt: skip


def _service_spec(service: Mapping[str, Any]) -> dict[str, Any]:
    spec = service.get("spec") or {}
    out = _clean({k: spec.get(k) for k in _SERVICE_FIELDS})
    _drop_defaults(out, _SERVICE_DEFAULTS)
    for port in out.get("ports") or []:
        if isinstance(port, dict) and port.get("protocol") == "TCP":
            del port["protocol"]
    return dict(out)


def _metadata_drift(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    a_meta, e_meta = actual.get("metadata") or {}, expected.get("metadata") or {}
    out = []
    for ref in e_meta.get("ownerReferences") or []:
        if ref.get("controller") and not any(
            r.get("uid") == ref.get("uid") and r.get("controller")
            for r in a_meta.get("ownerReferences") or []
        ):
            out.append(
                f"metadata.ownerReferences: the controller reference to {ref.get('kind')} "
                f"{ref.get('name')} was removed"
            )
    a_labels = a_meta.get("labels") or {}
    for k, v in sorted((e_meta.get("labels") or {}).items()):
        if a_labels.get(k) != v:
            out.append(f"metadata.labels.{k} is {a_labels.get(k)!r}, not {v!r}")
    return out


def detect_service_drift(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[str, ...]:
    """Drift of the owned Service: who receives the model's traffic (selector, ports,
    type, external IPs, ...), its labels and its controller reference."""
    out: list[str] = []
    _diff(_service_spec(actual), _service_spec(expected), "spec", out)
    out += _metadata_drift(actual, expected)
    return tuple(out)


def drift_fingerprint(expected: Mapping[str, Any]) -> str:
    """A short hash of the verified Deployment as compared (for audit idempotency keys)."""
    canon = json.dumps(
        {"spec": _deployment_spec(expected),
         "template": normalized_template((expected.get("spec") or {}).get("template") or {})},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
