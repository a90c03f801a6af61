"""The runtime is part of what is verified: which image runs the model, with what settings.

Every pod-side check (the `fetch` init step's re-verification, the server's own digest
check) runs inside the model server image, so a verified model in an image the
ModelDeployment's author chose is only as trustworthy as that image. The rules:

- Image: the image the pods would run (spec.runtime.image, else the operator's default,
  MODELTRUST_IMAGE) must be pinned by digest (`repository[:tag]@sha256:<64 hex>`), else
  RuntimeImageNotPinned. It must be allowed by the policy: listed in
  spec.runtime.allowedImages (same repository and digest; a tag is ignored, the runtime
  pulls by digest), or, when the policy lists none, be the operator's default image.
  Otherwise RuntimeImageNotAllowed. No repository wildcards: a digest pin by the
  ModelDeployment's author over an allowed repository would hand the decision to whoever
  may push to that repository.
- Environment (the only free-form pod setting the CRD exposes): every variable name must
  match a pattern in the policy's spec.runtime.allowedEnv (absent: DEFAULT_ALLOWED_ENV,
  thread-count knobs). Names that change what code runs (CODE_ENV_PATTERNS: LD_PRELOAD,
  PYTHONPATH, ...) count as allowed only when the policy names them literally; a
  wildcard such as "*" never lets them through. Otherwise RuntimeEnvNotAllowed.
- Every other runtime field (RUNTIME_FIELDS) changes where or how big the pods are, not
  what code they run; command and args are not settable at all (builders.py fixes them).

All three refusals are hard: refused under Audit as well (Audit is about the model's
publishers, not about running other code).
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from modeltrust.chain.canonical import canonical_json
from modeltrust.operator.decisions import Decision, Finding, Reason, Verdict
from modeltrust.operator.policy_scope import NamespaceReader, namespace_scope_finding
from modeltrust.operator.types import PINNED_IMAGE_RE, ModelDeployment, TrustPolicy

# Refused in every enforcement mode, at every decision and re-verification.
BOUNDARY_REASONS: Final = frozenset(
    {
        Reason.POLICY_NOT_IN_SCOPE,
        Reason.RUNTIME_IMAGE_NOT_PINNED,
        Reason.RUNTIME_IMAGE_NOT_ALLOWED,
        Reason.RUNTIME_ENV_NOT_ALLOWED,
    }
)

# What spec.runtime may hold (crds/, tests check they agree) and why each is allowed.
RUNTIME_FIELDS: Final[Mapping[str, str]] = {
    "image": "checked: pinned by digest and allowed by the policy",
    "imagePullPolicy": "when to pull; the digest pin fixes what is pulled",
    "port": "the server's listen port",
    "resources": "requests and limits: how much, not what, runs",
    "env": "checked: names allowed by the policy (code-changing names only literally)",
    "nodeSelector": "where the pods are scheduled",
    "tolerations": "where the pods are scheduled",
    "serviceAccountName": (
        "the pods' identity, not their code: its API token is never mounted "
        "(automountServiceAccountToken false); its pull secrets and, naming no Secret in "
        "spec.model.credentials, the source Secret it lists for the model's host (held "
        "to the hosts that Secret lists) are used, as anyone who may create pods there could"
    ),
    "modelVolume": "a read-only claim mounted into the fetch step, which re-checks the digest",
}

# Used when the policy has no spec.runtime.allowedEnv.
DEFAULT_ALLOWED_ENV: Final = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
)

# Variables that load or locate code, or change what the dynamic loader, Python, the
# shell or OpenSSL execute. Allowed only when the policy names them literally.
CODE_ENV_PATTERNS: Final = (
    "LD_*",  # LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT, ...
    "*_PRELOAD",
    "PYTHON*",  # PYTHONPATH, PYTHONHOME, PYTHONSTARTUP, PYTHONUSERBASE, PYTHONBREAKPOINT...
    "PATH",
    "HOME",  # Python's user site-packages and usercustomize live under it
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "MALLOC_*",
    "OPENSSL_*",  # OPENSSL_CONF loads engines and providers
    "SSL_CERT_*",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "BASH_ENV",
    "ENV",
)

ENFORCED = "Enforced"
AUDIT_ONLY = "AuditOnly"


def effective_image(md: ModelDeployment, default_image: str) -> str:
    """The image the pods run (what builders.py puts into both containers)."""
    return md.runtime.image or default_image


def image_identity(image: str) -> tuple[str, str] | None:
    """(repository, digest) of a digest-pinned reference, None when it is not pinned."""
    m = PINNED_IMAGE_RE.match(image)
    return (m.group("repository"), m.group("digest")) if m else None


def image_findings(image: str, policy: TrustPolicy, default_image: str) -> list[Finding]:
    identity = image_identity(image)
    if identity is None:
        source = "the operator's default image (MODELTRUST_IMAGE)"
        if image != default_image:
            source = "spec.runtime.image"
        return [
            Finding(
                Reason.RUNTIME_IMAGE_NOT_PINNED,
                f"runtime image {image!r} ({source}) is not pinned by digest: the pods run "
                "only an image named as repository@sha256:<64 hex>",
            )
        ]
    if policy.runtime.allowed_images:
        allowed = {image_identity(i) for i in policy.runtime.allowed_images}
        where = "spec.runtime.allowedImages"
    else:
        allowed = {image_identity(default_image)}
        where = "its spec.runtime.allowedImages is empty: only the operator's default image"
    if identity in allowed:
        return []
    return [
        Finding(
            Reason.RUNTIME_IMAGE_NOT_ALLOWED,
            f"runtime image {image!r} is not allowed by policy {policy.name!r} ({where})",
        )
    ]


def changes_code(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in CODE_ENV_PATTERNS)


def env_allowed(name: str, patterns: Sequence[str]) -> bool:
    """Whether the variable `name` may be set under the allow-list `patterns`."""
    if changes_code(name):
        return name in patterns  # named literally, never through a wildcard
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def env_findings(md: ModelDeployment, policy: TrustPolicy) -> list[Finding]:
    patterns = policy.runtime.allowed_env
    if patterns is None:
        patterns, where = DEFAULT_ALLOWED_ENV, "the default allow-list"
    else:
        where = "spec.runtime.allowedEnv"
    refused = [name for name, _ in md.runtime.env if not env_allowed(name, patterns)]
    if not refused:
        return []
    code = [n for n in refused if changes_code(n)]
    detail = (
        f"; {', '.join(code)} change(s) what code runs and must be named literally" if code else ""
    )
    return [
        Finding(
            Reason.RUNTIME_ENV_NOT_ALLOWED,
            f"spec.runtime.env sets {', '.join(refused)}, not allowed by policy "
            f"{policy.name!r} ({where}: {', '.join(patterns) or 'none'}){detail}",
        )
    ]


def runtime_findings(md: ModelDeployment, policy: TrustPolicy, default_image: str) -> list[Finding]:
    """Everything about the pods' runtime that `policy` does not allow (empty: all allowed)."""
    return [
        *image_findings(effective_image(md, default_image), policy, default_image),
        *env_findings(md, policy),
    ]


def refuse_with(decision: Decision, findings: Sequence[Finding]) -> Decision:
    """`decision`, refused when `findings` (boundary failures) is not empty: they come
    first (they are the headline reason), whatever the enforcement mode."""
    if not findings:
        return decision
    return replace(
        decision,
        verdict=Verdict.REFUSED,
        findings=(*findings, *decision.findings),
    )


def serving_mode(decision: Decision) -> str:
    """status.mode of what is serving: Enforced (every check passed) or AuditOnly."""
    return ENFORCED if decision.verdict is Verdict.ALLOWED else AUDIT_ONLY


def pod_template_digest(template: Mapping[str, Any]) -> str:
    """SHA-256 of the RFC 8785 canonical JSON of a pod template, as "sha256:<hex>"."""
    return "sha256:" + hashlib.sha256(canonical_json(dict(template))).hexdigest()


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def audit_facts(
    image: str,
    template_digest: str | None,
    artifact_read_at: datetime | None,
) -> tuple[str, ...]:
    """Lines added to an audit entry's reasons: the runtime the decision was about and when
    the artifact's bytes were read (an auditor can tell a fresh check from a reuse)."""
    facts = [f"runtime image: {image}"]
    facts.append(
        f"pod template: {template_digest}" if template_digest else "pod template: none applied"
    )
    if artifact_read_at is not None:
        facts.append(f"artifact read: {_time(artifact_read_at)}")
    return tuple(facts)


async def boundary_findings(
    kube: NamespaceReader, md: ModelDeployment, policy: TrustPolicy, default_image: str
) -> list[Finding]:
    """The trust boundary around `md` under `policy`: its namespace is in the policy's scope
    and the policy allows its runtime. Empty when nothing is wrong."""
    scope = await namespace_scope_finding(kube, policy, md.ref.namespace)
    return [*([scope] if scope else []), *runtime_findings(md, policy, default_image)]
