"""Typed, validated views of ModelDeployment and ModelTrustPolicy objects.

Why one long module: one parser per CRD field, mirroring the CRD schema it re-checks;
kept in one file so it can be read against crds/ side by side.

The API server already enforces the CRD schema and CEL rules, but the operator re-checks
everything it relies on: a CRD installed without validation, an older schema version, or a
hand-written test object must produce a clear refusal, never a half-understood spec.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from kubernetes.utils.quantity import parse_quantity

from modeltrust.operator.errors import SpecError
from modeltrust.serving.sources import S3Options

GROUP = "modeltrust.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MODEL_DEPLOYMENT_KIND = "ModelDeployment"
MODEL_DEPLOYMENT_PLURAL = "modeldeployments"
POLICY_PLURAL = "modeltrustpolicies"

DEFAULT_POLICY = "default"
DEFAULT_REPLICAS = 1
MAX_REPLICAS = 1000
DEFAULT_PORT = 8080
DEFAULT_MAX_MODEL_SIZE = 2 * 1024**3
DEFAULT_REVERIFY_SECONDS = 300.0
MIN_REVERIFY_SECONDS = 10.0
MAX_REVERIFY_SECONDS = 24 * 3600.0
MIN_COSIGNATURE_AGE_SECONDS = 1.0
MAX_COSIGNATURE_AGE_SECONDS = 24 * 3600.0

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MODEL_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
# Mirrors the CRD's CEL rules; the fetch step parses the URI in full.
_OCI_URI_RE = re.compile(
    r"^oci://[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*"
    r"(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})(#.+)?$"
)
_S3_URI_RE = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERIFIER_KEY_RE = re.compile(r"^[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+={0,2}$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A container image pinned by digest: repository[:tag]@sha256:<64 hex>.
PINNED_IMAGE_RE = re.compile(
    r"^(?P<repository>[^\s@]+?)(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"@(?P<digest>sha256:[0-9a-f]{64})$"
)
_ENV_PATTERN_RE = re.compile(r"^[A-Za-z0-9_*?]+$")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


# --- small typed getters -------------------------------------------------------------------


def _mapping(obj: Mapping[str, Any], key: str, path: str, *, required: bool) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        if required:
            raise SpecError(path, "is required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object, got {type(value).__name__}")
    return value


def _string(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    *,
    default: str | None = None,
    max_length: int = 253,
) -> str:
    value = obj.get(key, default)
    if value is None:
        raise SpecError(path, "is required")
    if not isinstance(value, str):
        raise SpecError(path, f"must be a string, got {type(value).__name__}")
    if not value:
        raise SpecError(path, "must not be empty")
    if len(value) > max_length:
        raise SpecError(path, f"must be at most {max_length} characters")
    return value


def _optional_string(obj: Mapping[str, Any], key: str, path: str, *, max_length: int) -> str | None:
    if obj.get(key) in (None, ""):
        return None
    return _string(obj, key, path, max_length=max_length)


def _integer(
    obj: Mapping[str, Any], key: str, path: str, *, default: int, low: int, high: int
) -> int:
    value = obj.get(key, default)
    if value is None:
        value = default
    # bool is an int subclass; "true" replicas is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise SpecError(path, f"must be between {low} and {high}, got {value}")
    return value


def _list(obj: Mapping[str, Any], key: str, path: str, *, max_items: int) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError(path, f"must be a list, got {type(value).__name__}")
    if len(value) > max_items:
        raise SpecError(path, f"must have at most {max_items} items")
    return value


def _string_map(obj: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    raw = _mapping(obj, key, path, required=False)
    out: dict[str, str] = {}
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise SpecError(f"{path}.{k}", "must be a string or an integer")
        out[str(k)] = str(v)
    return out


# --- ModelDeployment -----------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectRef:
    """Identity of a Kubernetes object at one spec generation."""

    namespace: str
    name: str
    uid: str
    generation: int


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str
    uri: str
    digest: str
    credentials_secret: str | None = None  # a Secret in the ModelDeployment's namespace
    s3: S3Options | None = None

    @property
    def is_file(self) -> bool:
        return self.uri.startswith(("/", "file:"))

    @property
    def local_path(self) -> str:
        """The filesystem path of a file:/// URI or absolute path."""
        if self.uri.startswith("file://"):
            return self.uri[len("file://") :]
        return self.uri


@dataclass(frozen=True)
class ModelVolume:
    claim_name: str
    mount_path: str


@dataclass(frozen=True)
class RuntimeSpec:
    image: str | None = None
    image_pull_policy: str | None = None
    port: int = DEFAULT_PORT
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    env: tuple[tuple[str, str], ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    model_volume: ModelVolume | None = None
    # The pods' ServiceAccount (None: the operator's MODELTRUST_MODEL_SERVICE_ACCOUNT, else
    # the namespace's default); its Secrets may carry the source credentials.
    service_account_name: str | None = None


@dataclass(frozen=True)
class ModelDeployment:
    ref: ObjectRef
    model: ModelRef
    replicas: int
    policy: str
    runtime: RuntimeSpec


def validate_digest(digest: str, path: str = "spec.model.digest") -> str:
    if not DIGEST_RE.match(digest):
        raise SpecError(path, "must be 'sha256:' followed by exactly 64 lowercase hex characters")
    return digest


def validate_uri(uri: str, path: str = "spec.model.uri") -> str:
    if any(c.isspace() for c in uri):
        raise SpecError(path, "must not contain whitespace")
    if uri.startswith(("https://", "http://")):
        host = uri.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
        if not host or host.startswith(":"):
            raise SpecError(path, "an http(s) URL needs a host")
        return uri
    if uri.startswith("file:///") or uri.startswith("/"):
        local = uri[len("file://") :] if uri.startswith("file://") else uri
        if "/../" in local or local.endswith("/.."):
            raise SpecError(path, "file paths must not contain '..' segments")
        return uri
    if uri.startswith("oci://"):
        if not _OCI_URI_RE.match(uri):
            raise SpecError(
                path,
                "an oci:// URI is oci://registry[:port]/repository@sha256:<64 hex> or "
                "oci://registry[:port]/repository:tag, optionally #<layer title>",
            )
        return uri
    if uri.startswith("s3://"):
        if not _S3_URI_RE.match(uri):
            raise SpecError(path, "an s3:// URI is s3://bucket/key (a valid bucket name)")
        return uri
    raise SpecError(
        path,
        "must be an https:// or http:// URL, an oci:// or s3:// URI, a file:/// URL, "
        "or an absolute path",
    )


def _parse_runtime(spec: Mapping[str, Any]) -> RuntimeSpec:
    rt = _mapping(spec, "runtime", "spec.runtime", required=False)
    resources = _mapping(rt, "resources", "spec.runtime.resources", required=False)
    env: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(_list(rt, "env", "spec.runtime.env", max_items=64)):
        p = f"spec.runtime.env[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(p, "must be an object with name and value")
        name = _string(item, "name", f"{p}.name", max_length=256)
        if not _ENV_NAME_RE.match(name):
            raise SpecError(f"{p}.name", "must be a C identifier (letters, digits, '_')")
        if name.startswith("MODELTRUST_"):
            raise SpecError(f"{p}.name", "names starting with MODELTRUST_ are reserved")
        if name in seen:
            raise SpecError(f"{p}.name", f"duplicate variable {name!r}")
        seen.add(name)
        value = item.get("value", "")
        if not isinstance(value, str):
            raise SpecError(f"{p}.value", "must be a string")
        if item.get("valueFrom") is not None:
            # Not in the CRD (the API server prunes it): a value read at pod start from a
            # Secret or ConfigMap is not part of the template the operator verified.
            raise SpecError(f"{p}.valueFrom", "is not supported; give a literal value")
        env.append((name, value))
    tolerations: list[Mapping[str, Any]] = []
    for i, tol in enumerate(_list(rt, "tolerations", "spec.runtime.tolerations", max_items=32)):
        if not isinstance(tol, Mapping):
            raise SpecError(f"spec.runtime.tolerations[{i}]", "must be an object")
        tolerations.append(dict(tol))
    volume: ModelVolume | None = None
    if rt.get("modelVolume") is not None:
        mv = _mapping(rt, "modelVolume", "spec.runtime.modelVolume", required=True)
        mount = _string(mv, "mountPath", "spec.runtime.modelVolume.mountPath", max_length=1024)
        if not mount.startswith("/") or ".." in mount:
            raise SpecError(
                "spec.runtime.modelVolume.mountPath", "must be an absolute path without '..'"
            )
        volume = ModelVolume(
            claim_name=_string(mv, "claimName", "spec.runtime.modelVolume.claimName"),
            mount_path=mount.rstrip("/") or "/",
        )
    pull = _optional_string(rt, "imagePullPolicy", "spec.runtime.imagePullPolicy", max_length=16)
    if pull is not None and pull not in ("Always", "IfNotPresent", "Never"):
        raise SpecError("spec.runtime.imagePullPolicy", "must be Always, IfNotPresent or Never")
    account = _optional_string(
        rt, "serviceAccountName", "spec.runtime.serviceAccountName", max_length=253
    )
    if account is not None and not _DNS_SUBDOMAIN_RE.match(account):
        raise SpecError(
            "spec.runtime.serviceAccountName",
            "must be a ServiceAccount name (lowercase DNS subdomain)",
        )
    return RuntimeSpec(
        service_account_name=account or None,
        image=_optional_string(rt, "image", "spec.runtime.image", max_length=1024),
        image_pull_policy=pull,
        port=_integer(rt, "port", "spec.runtime.port", default=DEFAULT_PORT, low=1, high=65535),
        requests=_string_map(resources, "requests", "spec.runtime.resources.requests"),
        limits=_string_map(resources, "limits", "spec.runtime.resources.limits"),
        env=tuple(env),
        node_selector=_string_map(rt, "nodeSelector", "spec.runtime.nodeSelector"),
        tolerations=tuple(tolerations),
        model_volume=volume,
    )


def parse_object_ref(body: Mapping[str, Any]) -> ObjectRef:
    """Identity (namespace, name, uid, generation) of any namespaced object."""
    meta = _mapping(body, "metadata", "metadata", required=True)
    return ObjectRef(
        namespace=_string(meta, "namespace", "metadata.namespace"),
        name=_string(meta, "name", "metadata.name"),
        uid=str(meta.get("uid") or ""),
        generation=_integer(
            meta, "generation", "metadata.generation", default=1, low=0, high=2**63 - 1
        ),
    )


def _parse_credentials(model: Mapping[str, Any]) -> str | None:
    if model.get("credentials") is None:
        return None
    credentials = _mapping(model, "credentials", "spec.model.credentials", required=True)
    name = _string(credentials, "secretName", "spec.model.credentials.secretName", max_length=253)
    if not _DNS_SUBDOMAIN_RE.match(name):
        raise SpecError(
            "spec.model.credentials.secretName", "must be a Secret name (lowercase DNS subdomain)"
        )
    return name


def _parse_s3(model: Mapping[str, Any], uri: str) -> S3Options | None:
    s3 = _mapping(model, "s3", "spec.model.s3", required=False)
    if not s3:
        return None
    if not uri.startswith("s3://"):
        raise SpecError("spec.model.s3", "applies only to an s3:// uri")
    endpoint = _optional_string(s3, "endpoint", "spec.model.s3.endpoint", max_length=2048)
    if endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise SpecError(
                "spec.model.s3.endpoint", "must be an https:// or http:// URL with a host"
            )
    region = _optional_string(s3, "region", "spec.model.s3.region", max_length=64)
    if region and not re.match(r"^[a-z0-9][a-z0-9-]*$", region):
        raise SpecError("spec.model.s3.region", "must be lowercase letters, digits and '-'")
    addressing = _optional_string(s3, "addressing", "spec.model.s3.addressing", max_length=16)
    addressing = addressing or "auto"
    if addressing not in ("auto", "path", "virtual"):
        raise SpecError("spec.model.s3.addressing", "must be auto, path or virtual")
    return S3Options(endpoint=endpoint or None, region=region or None, addressing=addressing)


def parse_model_deployment(body: Mapping[str, Any]) -> ModelDeployment:
    """Parse a ModelDeployment object (as the API server returns it) into a typed view."""
    ref = parse_object_ref(body)
    spec = _mapping(body, "spec", "spec", required=True)
    model = _mapping(spec, "model", "spec.model", required=True)
    name = _string(model, "name", "spec.model.name")
    if not _MODEL_NAME_RE.match(name):
        raise SpecError(
            "spec.model.name", "must start with a letter or digit and use only [A-Za-z0-9._-]"
        )
    version = _string(model, "version", "spec.model.version", max_length=128)
    if not _MODEL_VERSION_RE.match(version):
        raise SpecError(
            "spec.model.version", "must start with a letter or digit and use only [A-Za-z0-9._+-]"
        )
    uri = validate_uri(_string(model, "uri", "spec.model.uri", max_length=2048))
    digest = validate_digest(_string(model, "digest", "spec.model.digest", max_length=71))
    credentials_secret = _parse_credentials(model)
    s3 = _parse_s3(model, uri)
    policy = _string(spec, "policy", "spec.policy", default=DEFAULT_POLICY)
    if not _DNS_SUBDOMAIN_RE.match(policy):
        raise SpecError("spec.policy", "must be a ModelTrustPolicy name (lowercase DNS subdomain)")
    runtime = _parse_runtime(spec)
    if runtime.model_volume is not None and ModelRef(name, version, uri, digest).is_file:
        local = ModelRef(name, version, uri, digest).local_path
        if not local.startswith(runtime.model_volume.mount_path.rstrip("/") + "/"):
            raise SpecError(
                "spec.model.uri",
                f"file path {local!r} is not under runtime.modelVolume.mountPath "
                f"{runtime.model_volume.mount_path!r}",
            )
    return ModelDeployment(
        ref=ref,
        model=ModelRef(
            name=name,
            version=version,
            uri=uri,
            digest=digest,
            credentials_secret=credentials_secret,
            s3=s3,
        ),
        replicas=_integer(
            spec, "replicas", "spec.replicas", default=DEFAULT_REPLICAS, low=0, high=MAX_REPLICAS
        ),
        policy=policy,
        runtime=runtime,
    )


# --- ModelTrustPolicy ----------------------------------------------------------------------


class Enforcement(StrEnum):
    ENFORCE = "Enforce"
    AUDIT = "Audit"


class RevocationAction(StrEnum):
    SCALE_TO_ZERO = "ScaleToZero"
    KEEP_AND_FLAG = "KeepAndFlag"


@dataclass(frozen=True)
class Publisher:
    name: str
    public_key_pem: str
    key_id: str | None = None
    model_name_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpointRef:
    """A tree named by its size and root hash (what a trust anchor or a reset names)."""

    size: int
    root_hash: bytes

    def describe(self) -> str:
        return f"size {self.size}, root {base64.b64encode(self.root_hash).decode()}"


def parse_checkpoint_ref(obj: Mapping[str, Any], path: str) -> CheckpointRef:
    """{size, rootHash (base64 of 32 bytes)}; size at least 1 (a tree of size 0 is empty,
    and a consistency proof from it proves nothing)."""
    size = _integer(obj, "size", f"{path}.size", default=0, low=1, high=2**63 - 1)
    text = _string(obj, "rootHash", f"{path}.rootHash", max_length=64)
    try:
        root = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError(f"{path}.rootHash", "must be standard base64") from None
    if len(root) != 32:
        raise SpecError(f"{path}.rootHash", f"must be 32 bytes (SHA-256), got {len(root)}")
    return CheckpointRef(size, root)


@dataclass(frozen=True)
class LedgerSpec:
    url: str
    verifier_key: str
    origin: str | None = None
    witnesses: tuple[str, ...] = ()
    witness_quorum: int = 0
    # spec.ledger.minimumCheckpoint: a tree the ledger must contain (its size and root);
    # a ledger below it or inconsistent with it is refused (trust anchor, ledger_access).
    minimum_checkpoint: CheckpointRef | None = None
    # spec.ledger.maxCosignatureAge in seconds: a witness cosignature older than this does
    # not count toward witnessQuorum (witness.py); None: any age counts.
    max_cosignature_age: float | None = None
    # spec.ledger.mirrors: read-only copies of the log (witnesses) asked when the ledger
    # gives no answer. Their answers are verified like the ledger's: they add availability,
    # never trust.
    mirrors: tuple[str, ...] = ()

    @property
    def expected_origin(self) -> str:
        return self.origin or self.verifier_key.split("+", 1)[0]


@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    """A standard Kubernetes LabelSelector (the empty selector selects everything)."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[SelectorRequirement, ...] = ()


@dataclass(frozen=True)
class PolicyScope:
    """Which namespaces may name the policy: listed in `namespaces` or selected by
    `selector`. Neither given: every namespace (Enforce policies only, see policy_scope)."""

    namespaces: tuple[str, ...] = ()
    selector: LabelSelector | None = None

    @property
    def explicit(self) -> bool:
        return bool(self.namespaces) or self.selector is not None


@dataclass(frozen=True)
class RuntimeRules:
    """What a ModelDeployment under the policy may run (see runtime_policy).

    `allowed_images`: digest-pinned references; empty means only the operator's default
    image. `allowed_env`: shell-style name patterns; None (field absent) means the
    built-in thread-count knobs only."""

    allowed_images: tuple[str, ...] = ()
    allowed_env: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TrustPolicy:
    name: str
    generation: int
    ledger: LedgerSpec
    publishers: tuple[Publisher, ...]
    threshold: int = 1
    enforcement: Enforcement = Enforcement.ENFORCE
    revocation_action: RevocationAction = RevocationAction.SCALE_TO_ZERO
    max_model_size: int = DEFAULT_MAX_MODEL_SIZE
    reverify_seconds: float = DEFAULT_REVERIFY_SECONDS
    uid: str = ""
    scope: PolicyScope = field(default_factory=PolicyScope)
    runtime: RuntimeRules = field(default_factory=RuntimeRules)


def parse_duration(text: str, path: str) -> float:
    """Parse a Go-style duration made of h/m/s parts ("90s", "5m", "1h30m") into seconds."""
    m = _DURATION_RE.match(text)
    if not text or not m:
        raise SpecError(path, f"must be a duration like 30s, 5m or 1h, got {text!r}")
    hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def parse_size(text: str | int, path: str) -> int:
    """Parse a Kubernetes quantity ("2Gi", "500M", 1024) into a positive number of bytes."""
    try:
        value = parse_quantity(text)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise SpecError(path, f"must be a quantity such as 500Mi or 4Gi, got {text!r}") from exc
    if value <= 0:
        raise SpecError(path, "must be positive")
    return int(value)


def _parse_publishers(spec: Mapping[str, Any]) -> tuple[Publisher, ...]:
    items = _list(spec, "publishers", "spec.publishers", max_items=64)
    if not items:
        raise SpecError("spec.publishers", "must name at least one trusted publisher")
    publishers: list[Publisher] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        p = f"spec.publishers[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(p, "must be an object")
        name = _string(item, "name", f"{p}.name")
        if name in names:
            raise SpecError(f"{p}.name", f"duplicate publisher {name!r}")
        names.add(name)
        pem = _string(item, "publicKey", f"{p}.publicKey", max_length=8192)
        if "-----BEGIN PUBLIC KEY-----" not in pem:
            raise SpecError(
                f"{p}.publicKey", "must be a PEM public key (-----BEGIN PUBLIC KEY-----)"
            )
        key_id = _optional_string(item, "keyId", f"{p}.keyId", max_length=64)
        if key_id is not None and not _KEY_ID_RE.match(key_id):
            raise SpecError(f"{p}.keyId", "must be 64 lowercase hex characters")
        patterns = _list(item, "modelNamePatterns", f"{p}.modelNamePatterns", max_items=64)
        if not all(isinstance(x, str) and x for x in patterns):
            raise SpecError(f"{p}.modelNamePatterns", "must be non-empty strings")
        publishers.append(Publisher(name, pem, key_id, tuple(patterns)))
    return tuple(publishers)


def _parse_selector(spec: Mapping[str, Any], path: str) -> LabelSelector | None:
    if spec.get("namespaceSelector") is None:
        return None
    raw = _mapping(spec, "namespaceSelector", path, required=True)
    requirements: list[SelectorRequirement] = []
    items = _list(raw, "matchExpressions", f"{path}.matchExpressions", max_items=32)
    for i, item in enumerate(items):
        p = f"{path}.matchExpressions[{i}]"
        if not isinstance(item, Mapping):
            raise SpecError(p, "must be an object with key, operator and values")
        op = _string(item, "operator", f"{p}.operator", max_length=16)
        if op not in SELECTOR_OPERATORS:
            raise SpecError(f"{p}.operator", "must be In, NotIn, Exists or DoesNotExist")
        values = _list(item, "values", f"{p}.values", max_items=64)
        if not all(isinstance(v, str) for v in values):
            raise SpecError(f"{p}.values", "must be strings")
        if (op in ("In", "NotIn")) != bool(values):
            raise SpecError(f"{p}.values", "must be non-empty for In and NotIn, empty otherwise")
        requirements.append(
            SelectorRequirement(_string(item, "key", f"{p}.key", max_length=317), op, tuple(values))
        )
    return LabelSelector(
        match_labels=_string_map(raw, "matchLabels", f"{path}.matchLabels"),
        match_expressions=tuple(requirements),
    )


def _parse_scope(spec: Mapping[str, Any]) -> PolicyScope:
    namespaces = _list(spec, "namespaces", "spec.namespaces", max_items=256)
    for i, ns in enumerate(namespaces):
        if not isinstance(ns, str) or not _DNS_LABEL_RE.match(ns):
            raise SpecError(f"spec.namespaces[{i}]", "must be a namespace name (a DNS label)")
    if spec.get("namespaces") is not None and not namespaces:
        raise SpecError("spec.namespaces", "must name at least one namespace when given")
    return PolicyScope(tuple(namespaces), _parse_selector(spec, "spec.namespaceSelector"))


def _parse_runtime_rules(spec: Mapping[str, Any]) -> RuntimeRules:
    rt = _mapping(spec, "runtime", "spec.runtime", required=False)
    images = _list(rt, "allowedImages", "spec.runtime.allowedImages", max_items=64)
    for i, image in enumerate(images):
        if not isinstance(image, str) or not PINNED_IMAGE_RE.match(image):
            raise SpecError(
                f"spec.runtime.allowedImages[{i}]",
                "must be an image pinned by digest: repository@sha256:<64 lowercase hex>",
            )
    env: tuple[str, ...] | None = None
    if rt.get("allowedEnv") is not None:
        patterns = _list(rt, "allowedEnv", "spec.runtime.allowedEnv", max_items=64)
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not _ENV_PATTERN_RE.match(pattern):
                raise SpecError(
                    f"spec.runtime.allowedEnv[{i}]",
                    "must be a variable name or a pattern of letters, digits, '_', '*', '?'",
                )
        env = tuple(patterns)
    return RuntimeRules(allowed_images=tuple(images), allowed_env=env)


def parse_trust_policy(body: Mapping[str, Any]) -> TrustPolicy:
    """Parse a ModelTrustPolicy object into a typed view (keys are parsed later, in keys.py)."""
    meta = _mapping(body, "metadata", "metadata", required=True)
    spec = _mapping(body, "spec", "spec", required=True)
    ledger = _mapping(spec, "ledger", "spec.ledger", required=True)
    url = _string(ledger, "url", "spec.ledger.url", max_length=2048)
    if not url.startswith(("https://", "http://")):
        raise SpecError("spec.ledger.url", "must be an https:// or http:// URL")
    vkey = _string(ledger, "verifierKey", "spec.ledger.verifierKey", max_length=1024)
    if not _VERIFIER_KEY_RE.match(vkey):
        raise SpecError("spec.ledger.verifierKey", "must be a C2SP verifier key name+hexid+base64")
    mirrors = _list(ledger, "mirrors", "spec.ledger.mirrors", max_items=8)
    for i, m in enumerate(mirrors):
        if not isinstance(m, str) or not m.startswith(("https://", "http://")) or len(m) > 2048:
            raise SpecError(f"spec.ledger.mirrors[{i}]", "must be an https:// or http:// URL")
    witnesses = _list(ledger, "witnesses", "spec.ledger.witnesses", max_items=16)
    for i, w in enumerate(witnesses):
        if not isinstance(w, str) or not _VERIFIER_KEY_RE.match(w):
            raise SpecError(f"spec.ledger.witnesses[{i}]", "must be a C2SP verifier key")
    quorum = _integer(
        ledger, "witnessQuorum", "spec.ledger.witnessQuorum", default=0, low=0, high=len(witnesses)
    )
    max_age = None
    if ledger.get("maxCosignatureAge") is not None:
        path = "spec.ledger.maxCosignatureAge"
        max_age = parse_duration(_string(ledger, "maxCosignatureAge", path, max_length=32), path)
        if not MIN_COSIGNATURE_AGE_SECONDS <= max_age <= MAX_COSIGNATURE_AGE_SECONDS:
            raise SpecError(path, "must be between 1s and 24h")
        if quorum == 0:
            raise SpecError(
                path, "needs spec.ledger.witnessQuorum of at least 1 (whose cosignatures' age?)"
            )
    minimum = None
    if ledger.get("minimumCheckpoint") is not None:
        minimum = parse_checkpoint_ref(
            _mapping(ledger, "minimumCheckpoint", "spec.ledger.minimumCheckpoint", required=True),
            "spec.ledger.minimumCheckpoint",
        )
    publishers = _parse_publishers(spec)
    threshold = _integer(
        spec, "threshold", "spec.threshold", default=1, low=1, high=len(publishers)
    )
    enforcement_text = _string(spec, "enforcement", "spec.enforcement", default="Enforce")
    try:
        enforcement = Enforcement(enforcement_text)
    except ValueError as exc:
        raise SpecError("spec.enforcement", "must be Enforce or Audit") from exc
    action_text = _string(spec, "revocationAction", "spec.revocationAction", default="ScaleToZero")
    try:
        action = RevocationAction(action_text)
    except ValueError as exc:
        raise SpecError("spec.revocationAction", "must be ScaleToZero or KeepAndFlag") from exc
    scope = _parse_scope(spec)
    if enforcement is Enforcement.AUDIT and not scope.explicit:
        # Audit rolls out models that failed their checks: whose namespaces get that must
        # be written down, never implied (an unscoped policy serves every namespace).
        raise SpecError(
            "spec.enforcement",
            "an Audit policy must name its scope (spec.namespaces or spec.namespaceSelector)",
        )
    max_size_raw = spec.get("maxModelSize", "2Gi")
    max_size = parse_size(max_size_raw, "spec.maxModelSize")
    reverify = parse_duration(
        _string(spec, "reverifyInterval", "spec.reverifyInterval", default="5m", max_length=32),
        "spec.reverifyInterval",
    )
    if not MIN_REVERIFY_SECONDS <= reverify <= MAX_REVERIFY_SECONDS:
        raise SpecError("spec.reverifyInterval", "must be between 10s and 24h")
    return TrustPolicy(
        name=_string(meta, "name", "metadata.name"),
        generation=_integer(
            meta, "generation", "metadata.generation", default=1, low=0, high=2**63 - 1
        ),
        ledger=LedgerSpec(
            url=url.rstrip("/"),
            verifier_key=vkey,
            origin=_optional_string(ledger, "origin", "spec.ledger.origin", max_length=1024),
            witnesses=tuple(witnesses),
            witness_quorum=quorum,
            minimum_checkpoint=minimum,
            max_cosignature_age=max_age,
            mirrors=tuple(str(m).rstrip("/") for m in mirrors),
        ),
        publishers=publishers,
        threshold=threshold,
        enforcement=enforcement,
        revocation_action=action,
        max_model_size=max_size,
        reverify_seconds=reverify,
        uid=str(meta.get("uid") or ""),
        scope=scope,
        runtime=_parse_runtime_rules(spec),
    )
