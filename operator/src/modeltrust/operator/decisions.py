"""The verification decision as a pure function of its evidence.

The handlers gather evidence (the fetched artifact's digest, registrations found on the
ledger with their signature and inclusion-proof results, revocations, the onnxruntime load
result, ledger errors) and `decide` turns it into a Decision. Nothing here does I/O, so
every path of the trust model is unit-tested without a cluster or a ledger.

Two kinds of failed checks:
- hard: the bytes are not the pinned bytes, cannot be fetched or loaded, or the ledger
  is inconsistent with a checkpoint we trusted (rollback or fork). Refused in every mode:
  the pod's own init step would refuse those bytes anyway, and a forked ledger makes every
  other answer meaningless.
- trust: registration, signature, publisher key, threshold, revocation, ledger reachable.
  Refused under Enforce; under Audit rolled out anyway, with every failure recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from modeltrust.operator.types import Enforcement, TrustPolicy


class Verdict(StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    ALLOWED_AUDIT_ONLY = "allowed-audit-only"


class Reason(StrEnum):
    """Condition reasons, most severe first: the first failing one becomes the headline."""

    # The trust boundary around the model (policy_scope, runtime_policy): refused in every
    # mode, before anything about the artifact.
    POLICY_NOT_IN_SCOPE = "PolicyNotInScope"
    RUNTIME_IMAGE_NOT_PINNED = "RuntimeImageNotPinned"
    RUNTIME_IMAGE_NOT_ALLOWED = "RuntimeImageNotAllowed"
    RUNTIME_ENV_NOT_ALLOWED = "RuntimeEnvNotAllowed"
    LEDGER_INCONSISTENT = "LedgerInconsistent"
    FETCH_FAILED = "FetchFailed"
    DIGEST_MISMATCH = "DigestMismatch"
    LOAD_FAILED = "LoadFailed"
    MODEL_TOO_LARGE = "ModelTooLarge"
    LEDGER_UNAVAILABLE = "LedgerUnavailable"
    WITNESS_QUORUM_NOT_MET = "WitnessQuorumNotMet"
    REVOKED = "Revoked"
    NOT_REGISTERED = "NotRegistered"
    INCLUSION_UNPROVEN = "InclusionUnproven"
    INVALID_SIGNATURE = "InvalidSignature"
    UNTRUSTED_KEY = "UntrustedKey"
    PUBLISHER_NOT_ALLOWED = "PublisherNotAllowed"
    NAME_MISMATCH = "RegistrationMismatch"
    BELOW_THRESHOLD = "BelowThreshold"
    VERIFIED = "Verified"
    VERIFIED_AUDIT_ONLY = "AuditOnly"


_SEVERITY = {r: i for i, r in enumerate(Reason)}
HARD_FAILURES = frozenset(
    {Reason.LEDGER_INCONSISTENT, Reason.FETCH_FAILED, Reason.DIGEST_MISMATCH, Reason.LOAD_FAILED}
)


@dataclass(frozen=True)
class ArtifactResult:
    """What fetching and hashing the artifact produced; `error` names the failed step."""

    digest: str | None = None
    size: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class LoadResult:
    """Outcome of loading the model once in onnxruntime."""

    ok: bool
    error: str | None = None
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()

    def signature_json(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }


@dataclass(frozen=True)
class RegistrationCheck:
    """One registration entry found on the ledger for the artifact's digest, with the results
    of checking it: inclusion proof against a verified checkpoint, signer key known to the
    policy, signature valid under that key."""

    ledger_index: int
    model_name: str
    model_version: str
    digest: str
    signer_key_id: str
    inclusion_verified: bool
    publisher: str | None  # trusted publisher owning signer_key_id, None if not in the policy
    signature_valid: bool
    publisher_may_vouch: bool = True  # the publisher's modelNamePatterns allow this model
    error: str | None = None  # why the signature or proof failed


@dataclass(frozen=True)
class RevocationFact:
    """A revocation entry found on the ledger, with its signature already checked."""

    ledger_index: int
    target_kind: str  # "digest" | "key"
    target: str
    reason: str
    signer_key_id: str
    signature_valid: bool  # signed by a key of a publisher in the policy


@dataclass(frozen=True)
class Evidence:
    pinned_digest: str
    model_name: str
    model_version: str
    artifact: ArtifactResult | None = None
    load: LoadResult | None = None
    registrations: Sequence[RegistrationCheck] = ()
    revocations: Sequence[RevocationFact] = ()
    ledger_error: str | None = None  # no verified answer from the ledger
    ledger_unwitnessed: str | None = None  # checkpoint lacks the policy's witness quorum
    ledger_inconsistent: str | None = None  # rollback or fork against the trusted checkpoint


@dataclass(frozen=True)
class Finding:
    reason: Reason
    message: str


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    findings: tuple[Finding, ...]  # failed checks, most severe first; empty when all passed
    signer_key_ids: tuple[str, ...] = ()
    registration_index: int | None = None
    signature_json: Mapping[str, Any] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.verdict is not Verdict.REFUSED

    @property
    def reason(self) -> Reason:
        if self.verdict is Verdict.ALLOWED:
            return Reason.VERIFIED
        if self.verdict is Verdict.ALLOWED_AUDIT_ONLY:
            return Reason.VERIFIED_AUDIT_ONLY
        return self.findings[0].reason

    @property
    def reasons(self) -> tuple[str, ...]:
        """Audit-entry reasons: one line per failed check, 'Reason: message'."""
        return tuple(f"{f.reason.value}: {f.message}" for f in self.findings)

    @property
    def message(self) -> str:
        if not self.findings:
            return (
                f"artifact matches the pin, signed by {len(self.signer_key_ids)} trusted "
                f"publisher key(s), registered at ledger index {self.registration_index}, "
                "not revoked, loads in onnxruntime"
            )
        text = "; ".join(f.message for f in self.findings)
        if self.verdict is Verdict.ALLOWED_AUDIT_ONLY:
            return f"rolled out under Audit enforcement despite: {text}"
        return text


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def applicable_revocations(
    digest: str, key_ids: Sequence[str], revocations: Sequence[RevocationFact]
) -> list[RevocationFact]:
    """The revocations that count against `digest` vouched for by `key_ids` (the signer
    keys whose registrations of `digest` counted).

    Authority rule: a revocation counts only when a publisher in the policy signed it
    (an unsigned or foreign "revocation" must not let anyone outside the policy take
    models down), and only
    - for a key: when signed by that key itself (one publisher cannot revoke another's);
    - for a digest: when signed by one of `key_ids`, i.e. a publisher who vouched for
      these bytes (a publisher cannot take down models it never registered).
    """
    keys = set(key_ids)
    return [
        r
        for r in revocations
        if r.signature_valid
        and (
            (r.target_kind == "digest" and r.target == digest and r.signer_key_id in keys)
            or (r.target_kind == "key" and r.target in keys and r.signer_key_id == r.target)
        )
    ]


def _trust_findings(
    ev: Evidence, policy: TrustPolicy
) -> tuple[list[Finding], tuple[str, ...], int | None]:
    """Registration, signature, threshold and revocation checks. Returns findings, the key
    ids whose signatures counted, and the ledger index of the first counted registration."""
    if ev.ledger_error is not None:
        return (
            [Finding(Reason.LEDGER_UNAVAILABLE, f"no verified ledger answer: {ev.ledger_error}")],
            (),
            None,
        )
    if ev.ledger_unwitnessed is not None:
        return (
            [
                Finding(
                    Reason.WITNESS_QUORUM_NOT_MET,
                    f"the ledger's answer is not witnessed: {ev.ledger_unwitnessed}",
                )
            ],
            (),
            None,
        )
    findings: list[Finding] = []
    regs = [r for r in ev.registrations if r.digest == ev.pinned_digest]
    if not regs:
        return (
            [
                Finding(
                    Reason.NOT_REGISTERED,
                    f"no registration for {ev.pinned_digest} on the ledger: the publisher must "
                    "sign and register it (modeltrust register)",
                )
            ],
            (),
            None,
        )
    counted: dict[str, RegistrationCheck] = {}
    for r in regs:
        where = f"registration at ledger index {r.ledger_index}"
        if not r.inclusion_verified:
            findings.append(
                Finding(
                    Reason.INCLUSION_UNPROVEN,
                    f"{where}: inclusion proof did not verify ({r.error})",
                )
            )
        elif r.publisher is None:
            findings.append(
                Finding(
                    Reason.UNTRUSTED_KEY,
                    f"{where} is signed by key {r.signer_key_id[:16]}..., which is not a "
                    f"publisher of policy {policy.name!r}",
                )
            )
        elif not r.signature_valid:
            findings.append(
                Finding(
                    Reason.INVALID_SIGNATURE,
                    f"{where}: signature by publisher {r.publisher!r} does not verify ({r.error})",
                )
            )
        elif (r.model_name, r.model_version) != (ev.model_name, ev.model_version):
            findings.append(
                Finding(
                    Reason.NAME_MISMATCH,
                    f"{where} is for model {r.model_name!r} version {r.model_version!r}, "
                    f"not {ev.model_name!r} version {ev.model_version!r}",
                )
            )
        elif not r.publisher_may_vouch:
            findings.append(
                Finding(
                    Reason.PUBLISHER_NOT_ALLOWED,
                    f"{where}: publisher {r.publisher!r} may not vouch for model "
                    f"{ev.model_name!r} (modelNamePatterns)",
                )
            )
        else:
            counted.setdefault(r.signer_key_id, r)
    revoked = applicable_revocations(ev.pinned_digest, list(counted), ev.revocations)
    revocation_findings: list[Finding] = []
    for rev in revoked:
        what = "the digest" if rev.target_kind == "digest" else f"signer key {rev.target[:16]}..."
        revocation_findings.append(
            Finding(
                Reason.REVOKED,
                f"revocation at ledger index {rev.ledger_index} revokes {what}: {rev.reason}",
            )
        )
        if rev.target_kind == "key":
            counted.pop(rev.target, None)
    if any(rev.target_kind == "digest" for rev in revoked):
        counted.clear()
    # A registration that does not count (a foreign key, a bad proof) is only a failure when
    # the threshold is missed: anyone the ledger accepts may register any digest, and that
    # must not veto the trusted publishers' registrations.
    if len(counted) < policy.threshold:
        findings += revocation_findings
        findings.append(
            Finding(
                Reason.BELOW_THRESHOLD,
                f"{len(counted)} valid trusted signature(s), policy {policy.name!r} requires "
                f"{policy.threshold}",
            )
        )
    else:
        findings = []
    key_ids = tuple(sorted(counted))
    first_index = min((r.ledger_index for r in counted.values()), default=None)
    return findings, key_ids, first_index


def decide(ev: Evidence, policy: TrustPolicy) -> Decision:
    """Decide whether the pinned artifact may be rolled out under `policy`."""
    hard: list[Finding] = []
    if ev.ledger_inconsistent is not None:
        hard.append(
            Finding(
                Reason.LEDGER_INCONSISTENT,
                "ledger is inconsistent with the last trusted checkpoint "
                f"({ev.ledger_inconsistent}); "
                "all rollouts are blocked until a cluster operator investigates",
            )
        )
    if ev.artifact is None:
        hard.append(Finding(Reason.FETCH_FAILED, "artifact was not fetched"))
    elif ev.artifact.error is not None:
        hard.append(Finding(Reason.FETCH_FAILED, ev.artifact.error))
    elif ev.artifact.digest != ev.pinned_digest:
        hard.append(
            Finding(
                Reason.DIGEST_MISMATCH,
                f"artifact digest {ev.artifact.digest} does not match the pinned "
                f"{ev.pinned_digest}",
            )
        )
    if ev.load is None:
        if not hard:
            hard.append(Finding(Reason.LOAD_FAILED, "model was not loaded in onnxruntime"))
    elif not ev.load.ok:
        hard.append(Finding(Reason.LOAD_FAILED, f"onnxruntime refused the model: {ev.load.error}"))

    trust, key_ids, reg_index = _trust_findings(ev, policy)
    findings = tuple(sorted([*hard, *trust], key=lambda f: _SEVERITY[f.reason]))
    signature = ev.load.signature_json() if ev.load is not None and ev.load.ok else {}
    if hard:
        verdict = Verdict.REFUSED
    elif not trust:
        verdict = Verdict.ALLOWED
    elif policy.enforcement is Enforcement.AUDIT:
        verdict = Verdict.ALLOWED_AUDIT_ONLY
    else:
        verdict = Verdict.REFUSED
    return Decision(verdict, findings, key_ids, reg_index, signature)


# No verified answer from the ledger: a re-check that finds only these cannot decide
# anything, so a running model is left running (flagged), never judged on them.
LEDGER_UNDECIDED = frozenset(
    {Reason.LEDGER_UNAVAILABLE, Reason.WITNESS_QUORUM_NOT_MET, Reason.LEDGER_INCONSISTENT}
)


def decide_serving(ev: Evidence, policy: TrustPolicy, model_size: int | None) -> Decision:
    """Decide again whether the serving version may keep running under `policy` (a policy
    change, or the periodic re-check), from the ledger and the policy alone.

    The bytes are pinned by digest; they were fetched, hashed and loaded when the version
    was rolled out, and the pod re-checks them. They are not fetched again: an unreachable
    or vanished URL must not keep a model the policy no longer trusts running. Their size,
    recorded at rollout (`model_size`, None when unknown), is held to `maxModelSize`.

    Refused means "no longer trusted": act on it (revocationAction). Under Audit, trust
    failures are flagged, except a revocation on the ledger, which is acted on in every
    mode. `undecided(decision)` says the ledger gave no verified answer: nothing to act on.
    """
    hard: list[Finding] = []
    if model_size is not None and model_size > policy.max_model_size:
        hard.append(
            Finding(
                Reason.MODEL_TOO_LARGE,
                f"the model is {model_size} bytes, over the policy's maxModelSize of "
                f"{policy.max_model_size} bytes",
            )
        )
    if ev.ledger_inconsistent is not None:
        trust: list[Finding] = [
            Finding(
                Reason.LEDGER_INCONSISTENT,
                f"ledger is inconsistent with the last trusted checkpoint "
                f"({ev.ledger_inconsistent})",
            )
        ]
        key_ids: tuple[str, ...] = ()
        reg_index: int | None = None
    else:
        trust, key_ids, reg_index = _trust_findings(ev, policy)
    findings = tuple(sorted([*hard, *trust], key=lambda f: _SEVERITY[f.reason]))
    revoked = any(f.reason is Reason.REVOKED for f in trust)
    if hard:
        verdict = Verdict.REFUSED
    elif not trust:
        verdict = Verdict.ALLOWED
    elif policy.enforcement is Enforcement.AUDIT and not revoked:
        verdict = Verdict.ALLOWED_AUDIT_ONLY
    else:
        verdict = Verdict.REFUSED
    return Decision(verdict, findings, key_ids, reg_index)


def undecided(decision: Decision) -> bool:
    """Refused only for want of a verified ledger answer (nothing is known to be wrong)."""
    return (
        decision.verdict is Verdict.REFUSED
        and bool(decision.findings)
        and all(f.reason in LEDGER_UNDECIDED for f in decision.findings)
    )


@dataclass(frozen=True)
class RevocationOutcome:
    revoked: bool
    findings: tuple[Finding, ...]

    @property
    def message(self) -> str:
        return "; ".join(f.message for f in self.findings) or "no revocation applies"


def check_revocation(
    serving_digest: str,
    signer_key_ids: Sequence[str],
    revocations: Sequence[RevocationFact],
    threshold: int,
) -> RevocationOutcome:
    """Periodic re-check of a running workload: is its digest revoked, or are so many of the
    keys that vouched for it revoked that the threshold is no longer met?"""
    revoked = applicable_revocations(serving_digest, signer_key_ids, revocations)
    if not revoked:
        return RevocationOutcome(False, ())
    digest_revoked = any(r.target_kind == "digest" for r in revoked)
    remaining = set(signer_key_ids) - {r.target for r in revoked if r.target_kind == "key"}
    findings = tuple(
        Finding(
            Reason.REVOKED,
            f"revocation at ledger index {r.ledger_index} revokes "
            + ("the digest" if r.target_kind == "digest" else f"signer key {r.target[:16]}...")
            + f": {r.reason}",
        )
        for r in revoked
    )
    return RevocationOutcome(digest_revoked or len(remaining) < threshold, findings)


def idempotency_key(uid: str, generation: int, action: str, detail: str = "") -> str:
    """The key an audit entry is deduplicated on: the same decision about the same object
    generation is recorded once, even if the operator crashes and retries mid-rollout."""
    if not uid:
        raise ValueError("idempotency key needs the object's uid")
    base = f"{uid}/{generation}/{action}"
    return f"{base}/{detail}" if detail else base


# --- drift -------------------------------------------------------------------------------------
#
# The owned Deployment is compared with the one the operator builds for the verified version,
# as a whole: every field we set must hold our value, and every field we do not set must be
# absent, unless the API server fills it in with its documented default (listed below). So
# an added probe, lifecycle hook, envFrom, hostNetwork, port or an emptied securityContext is
# drift, not only the few fields that once looked security-relevant.

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
    a_meta, e_meta = actual.get("metadata") or {}, expected.get("metadata") or {}
    a_labels = a_meta.get("labels") or {}
    for k, v in sorted((e_meta.get("labels") or {}).items()):
        if a_labels.get(k) != v:
            out.append(f"metadata.labels.{k} is {a_labels.get(k)!r}, not {v!r}")
    a_ann, e_ann = a_meta.get("annotations") or {}, e_meta.get("annotations") or {}
    for k in sorted({*a_ann, *e_ann}):
        if k.startswith(PIN_ANNOTATION_PREFIX) and a_ann.get(k) != e_ann.get(k):
            out.append(f"metadata.annotations.{k} is {a_ann.get(k)!r}, not {e_ann.get(k)!r}")
    return tuple(out)


def drift_fingerprint(expected: Mapping[str, Any]) -> str:
    """A short hash of the verified Deployment as compared (for audit idempotency keys)."""
    canon = json.dumps(
        {"spec": _deployment_spec(expected),
         "template": normalized_template((expected.get("spec") or {}).get("template") or {})},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(canon.encode()).hexdigest()[:16]
