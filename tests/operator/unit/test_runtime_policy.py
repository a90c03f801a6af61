"""The runtime is part of what is verified: image pinning and allow-lists, environment
allow-lists, the pod template digest, and the CRD exposing nothing the rules do not cover."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeltrust.operator.builders import BuildSettings, VerifiedModel, build_pod_template
from modeltrust.operator.decisions import Decision, Finding, Reason, Verdict
from modeltrust.operator.errors import SpecError
from modeltrust.operator.runtime_policy import (
    AUDIT_ONLY,
    CODE_ENV_PATTERNS,
    ENFORCED,
    RUNTIME_FIELDS,
    audit_facts,
    boundary_findings,
    env_allowed,
    image_identity,
    pod_template_digest,
    refuse_with,
    runtime_findings,
    serving_mode,
)
from modeltrust.operator.types import (
    ModelDeployment,
    TrustPolicy,
    parse_model_deployment,
    parse_trust_policy,
)

pytestmark = pytest.mark.unit

CRDS = Path(__file__).resolve().parents[3] / "crds"
DEFAULT = "registry.example/modeltrust@sha256:" + "0d" * 32
OTHER = "registry.example/modeltrust@sha256:" + "0e" * 32
EVIL = "evil.example/backdoor@sha256:" + "66" * 32

Body = Callable[..., dict[str, Any]]


def md_with(md_body: Body, **runtime: Any) -> ModelDeployment:
    body = md_body()
    body["spec"]["runtime"] = runtime
    return parse_model_deployment(body)


def policy_with(policy_body: Callable[[], dict[str, Any]], **runtime: Any) -> TrustPolicy:
    body = policy_body()
    if runtime:
        body["spec"]["runtime"] = runtime
    return parse_trust_policy(body)


def reasons(findings: list[Finding]) -> list[Reason]:
    return [f.reason for f in findings]


def test_image_identity() -> None:
    assert image_identity(DEFAULT) == ("registry.example/modeltrust", "sha256:" + "0d" * 32)
    tagged = "host:5000/team/img:1.2@sha256:" + "0d" * 32
    assert image_identity(tagged) == ("host:5000/team/img", "sha256:" + "0d" * 32)
    for unpinned in ("img", "img:latest", "img@sha256:abc", "img@sha512:" + "0d" * 32):
        assert image_identity(unpinned) is None


def test_default_image_is_allowed_when_the_policy_lists_none(
    md_body: Body, policy_body: Callable[[], dict[str, Any]]
) -> None:
    assert runtime_findings(md_with(md_body), policy_with(policy_body), DEFAULT) == []
    # Naming the default image explicitly is the same image.
    explicit = md_with(md_body, image=DEFAULT)
    assert runtime_findings(explicit, policy_with(policy_body), DEFAULT) == []


def test_an_image_of_the_authors_choosing_is_refused(
    md_body: Body, policy_body: Callable[[], dict[str, Any]]
) -> None:
    # The attack: `image: evil.example/backdoor` rolled out with Verified=True.
    (f,) = runtime_findings(md_with(md_body, image=EVIL), policy_with(policy_body), DEFAULT)
    assert f.reason is Reason.RUNTIME_IMAGE_NOT_ALLOWED
    assert "evil.example/backdoor" in f.message
    # Listed by the policy: allowed; then the default is no longer implied.
    policy = policy_with(policy_body, allowedImages=[EVIL])
    assert runtime_findings(md_with(md_body, image=EVIL), policy, DEFAULT) == []
    assert reasons(runtime_findings(md_with(md_body), policy, DEFAULT)) == [
        Reason.RUNTIME_IMAGE_NOT_ALLOWED
    ]


def test_same_repository_other_digest_is_not_allowed(
    md_body: Body, policy_body: Callable[[], dict[str, Any]]
) -> None:
    policy = policy_with(policy_body, allowedImages=[DEFAULT])
    assert reasons(runtime_findings(md_with(md_body, image=OTHER), policy, DEFAULT)) == [
        Reason.RUNTIME_IMAGE_NOT_ALLOWED
    ]
    # A tag next to the digest changes nothing: the runtime pulls by digest.
    tagged = DEFAULT.replace("@", ":v2@")
    assert runtime_findings(md_with(md_body, image=tagged), policy, DEFAULT) == []


@pytest.mark.parametrize(
    "image", ["evil.example/backdoor", "registry.example/modeltrust:e2e", "img:latest"]
)
def test_unpinned_images_are_refused(
    md_body: Body, policy_body: Callable[[], dict[str, Any]], image: str
) -> None:
    policy = policy_with(policy_body, allowedImages=[DEFAULT])
    (f,) = runtime_findings(md_with(md_body, image=image), policy, DEFAULT)
    assert f.reason is Reason.RUNTIME_IMAGE_NOT_PINNED
    assert "spec.runtime.image" in f.message


def test_an_unpinned_operator_default_is_refused(
    md_body: Body, policy_body: Callable[[], dict[str, Any]]
) -> None:
    (f,) = runtime_findings(md_with(md_body), policy_with(policy_body), "img:latest")
    assert f.reason is Reason.RUNTIME_IMAGE_NOT_PINNED
    assert "MODELTRUST_IMAGE" in f.message


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PATH",
     "GLIBC_TUNABLES", "OPENSSL_CONF", "HOME"],
)  # fmt: skip
def test_code_changing_env_is_refused_by_default_and_under_wildcards(
    md_body: Body, policy_body: Callable[[], dict[str, Any]], name: str
) -> None:
    md = md_with(md_body, env=[{"name": name, "value": "/tmp/x"}])
    (f,) = runtime_findings(md, policy_with(policy_body), DEFAULT)
    assert f.reason is Reason.RUNTIME_ENV_NOT_ALLOWED
    assert name in f.message
    for patterns in (["*"], ["LD_*", "PYTHON*", "*PATH*", "*"]):
        (f,) = runtime_findings(md, policy_with(policy_body, allowedEnv=patterns), DEFAULT)
        assert f.reason is Reason.RUNTIME_ENV_NOT_ALLOWED, patterns
        assert "must be named literally" in f.message
    # Named literally by the policy admin: allowed.
    assert runtime_findings(md, policy_with(policy_body, allowedEnv=[name]), DEFAULT) == []


def test_env_allow_list(md_body: Body, policy_body: Callable[[], dict[str, Any]]) -> None:
    md = md_with(md_body, env=[{"name": "OMP_NUM_THREADS", "value": "2"}])
    assert runtime_findings(md, policy_with(policy_body), DEFAULT) == []  # default list
    md = md_with(md_body, env=[{"name": "APP_MODE", "value": "fast"}])
    assert reasons(runtime_findings(md, policy_with(policy_body), DEFAULT)) == [
        Reason.RUNTIME_ENV_NOT_ALLOWED
    ]
    assert runtime_findings(md, policy_with(policy_body, allowedEnv=["APP_*"]), DEFAULT) == []
    # An explicit list replaces the default one; an empty list allows nothing.
    omp = md_with(md_body, env=[{"name": "OMP_NUM_THREADS", "value": "2"}])
    assert runtime_findings(omp, policy_with(policy_body, allowedEnv=[]), DEFAULT)
    assert not env_allowed("OMP_NUM_THREADS", ["APP_*"])
    assert all(p != "*" for p in CODE_ENV_PATTERNS)


def test_image_and_env_failures_are_reported_together(
    md_body: Body, policy_body: Callable[[], dict[str, Any]]
) -> None:
    md = md_with(md_body, image=EVIL, env=[{"name": "LD_PRELOAD", "value": "/x.so"}])
    assert reasons(runtime_findings(md, policy_with(policy_body), DEFAULT)) == [
        Reason.RUNTIME_IMAGE_NOT_ALLOWED,
        Reason.RUNTIME_ENV_NOT_ALLOWED,
    ]


def test_env_value_from_is_refused_by_the_parser(md_body: Body) -> None:
    body = md_body()
    body["spec"]["runtime"]["env"] = [{"name": "X", "valueFrom": {"secretKeyRef": {}}}]
    with pytest.raises(SpecError) as err:
        parse_model_deployment(body)
    assert err.value.field == "spec.runtime.env[0].valueFrom"


@pytest.mark.parametrize(
    ("runtime", "field"),
    [
        ({"allowedImages": ["img:latest"]}, "spec.runtime.allowedImages[0]"),
        ({"allowedImages": ["img@sha256:" + "AB" * 32]}, "spec.runtime.allowedImages[0]"),
        ({"allowedEnv": ["A B"]}, "spec.runtime.allowedEnv[0]"),
    ],
)
def test_policy_runtime_fields_are_validated(
    policy_body: Callable[[], dict[str, Any]], runtime: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as err:
        policy_with(policy_body, **runtime)
    assert err.value.field == field


def test_refusal_is_hard_in_every_mode() -> None:
    boundary = [Finding(Reason.RUNTIME_IMAGE_NOT_ALLOWED, "no")]
    for verdict in Verdict:
        decision = Decision(verdict, ())
        refused = refuse_with(decision, boundary)
        assert refused.verdict is Verdict.REFUSED
        assert refused.reason is Reason.RUNTIME_IMAGE_NOT_ALLOWED
    audit_only = Decision(Verdict.ALLOWED_AUDIT_ONLY, (Finding(Reason.NOT_REGISTERED, "x"),))
    assert refuse_with(audit_only, []) is audit_only
    assert [f.reason for f in refuse_with(audit_only, boundary).findings] == [
        Reason.RUNTIME_IMAGE_NOT_ALLOWED,
        Reason.NOT_REGISTERED,
    ]


def test_serving_mode() -> None:
    assert serving_mode(Decision(Verdict.ALLOWED, ())) == ENFORCED
    assert serving_mode(Decision(Verdict.ALLOWED_AUDIT_ONLY, ())) == AUDIT_ONLY


def test_pod_template_digest_covers_everything_that_runs(md_body: Body) -> None:
    md = parse_model_deployment(md_body())
    verified = VerifiedModel(md.model.digest, size=10, generation=3)
    template = build_pod_template(md, verified, BuildSettings(default_image=DEFAULT))
    digest = pod_template_digest(template)
    assert digest.startswith("sha256:")
    assert len(digest) == 71
    assert pod_template_digest(copy.deepcopy(template)) == digest  # canonical: stable
    changed = copy.deepcopy(template)
    changed["spec"]["containers"][0]["env"].append({"name": "LD_PRELOAD", "value": "/x"})
    assert pod_template_digest(changed) != digest


def test_audit_facts() -> None:
    from datetime import UTC, datetime

    facts = audit_facts(DEFAULT, "sha256:" + "aa" * 32, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert facts == (
        f"runtime image: {DEFAULT}",
        "pod template: sha256:" + "aa" * 32,
        "artifact read: 2026-01-02T03:04:05Z",
    )
    assert audit_facts(EVIL, None, None) == (f"runtime image: {EVIL}", "pod template: none applied")


def test_every_runtime_field_of_the_crd_is_covered_by_a_rule() -> None:
    # A new pod setting in the CRD must come with a decision about it here.
    crd = yaml.safe_load((CRDS / "modeltrust.dev_modeldeployments.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    runtime = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["runtime"]
    assert set(runtime["properties"]) == set(RUNTIME_FIELDS)
    # Structural and closed: nothing the API server would keep beyond the listed fields.
    text = yaml.safe_dump(runtime)
    assert "x-kubernetes-preserve-unknown-fields" not in text
    env_item = runtime["properties"]["env"]["items"]["properties"]
    assert set(env_item) == {"name", "value"}  # no valueFrom


class Namespaces:
    def __init__(self, labels: dict[str, dict[str, str]]) -> None:
        self.labels = labels
        self.reads: list[str] = []

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        self.reads.append(name)
        if name not in self.labels:
            return None
        return {"metadata": {"name": name, "labels": self.labels[name]}}


async def test_boundary_findings_combine_scope_and_runtime(
    md_body: Body, policy_body: Callable[[], dict[str, Any]]
) -> None:
    body = policy_body()
    body["spec"]["namespaces"] = ["team-a"]
    policy = parse_trust_policy(body)
    md = md_with(md_body, image=EVIL)  # namespace "ml"
    found = await boundary_findings(Namespaces({}), md, policy, DEFAULT)
    assert reasons(found) == [Reason.POLICY_NOT_IN_SCOPE, Reason.RUNTIME_IMAGE_NOT_ALLOWED]
