"""Is this model trusted? The one answer, for every verifier of modeltrust.

Why one long module: it is the single copy of every trust rule; splitting it would
invite the second copies it exists to remove.

The operator (``modeltrust.operator.decisions``), ``modeltrust verify``, ``modeltrust
fetch`` (the pod's init step, through ``modeltrust.chain.provenance``) and a third-party
verifier that installs modeltrust-chain alone all ask it here, so they cannot disagree.
Nothing here does I/O or needs Kubernetes, kopf or onnxruntime: the inputs are ledger
entries the caller has already proven, and a policy.

    policy = VerificationPolicy((TrustedPublisher.from_pem("acme", pem),), threshold=1)
    read = read_ledger(client, RevocationIndex(), digest)   # revocation_index.py
    verdict = verify(Materials(Subject(digest, "resnet50", "1.2.0"), read.registrations,
                               read.revocations), policy)
    verdict.trusted, [f.reason for f in verdict.findings]

Two steps, both public so that a caller holding evidence in another form can use them:

1. ``check_registrations`` / ``check_revocations``: which publisher of the policy signed
   each entry, and does the signature verify with that publisher's key (the ledger checks
   nothing about publishers for us);
2. ``evaluate``: the trust rules over those checks, giving findings with reason codes.

The rules:
- a registration counts when it is proven in the log, signed by a key of a publisher in
  the policy, its signature verifies, it names the model (and version) asked about, and
  the publisher's model-name patterns allow that name;
- the model is trusted when at least ``threshold`` distinct publisher keys have a counting
  registration, after revocations (below) are applied;
- revocation authority (``applicable_revocations``): a revocation counts only when it is
  signed by a publisher in the policy and its signature verifies, and
  * a key revocation only when signed by the revoked key itself;
  * a digest revocation only when signed by a key whose registration of that digest
    counts for this model (a publisher that vouched for these bytes).
  One trusted publisher can therefore never take down another's key or models, and a key
  outside the policy can take down nothing. A revoked digest counts for no one; a revoked
  key's registrations stop counting.
- "not revoked" is only as good as the list of revocations: it must come from reading the
  complete, verified log (``revocation_index.RevocationIndex``), never from the ledger's
  lookup index, which cannot prove that nothing was left out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from modeltrust.chain.entries import Entry, Registration, Revocation
from modeltrust.chain.errors import ChainError, PolicyError
from modeltrust.chain.signatures import (
    PublicKey,
    key_id,
    load_public_key,
    verify_registration,
    verify_revocation,
)
from modeltrust.chain.trust_state import LedgerForkError, LedgerRollbackError


class Reason(StrEnum):
    """Why a model is (not) trusted, most severe first: the first finding is the headline.

    These are the strings of the operator's ModelDeployment conditions, of ``modeltrust
    verify`` (text and JSON) and of ``modeltrust fetch``. The artifact reasons (FetchFailed,
    DigestMismatch, LoadFailed, ModelTooLarge) come from whoever fetched the bytes.
    """

    # The operator's trust boundary around the model (who may use the policy, what runtime
    # runs the bytes): refused in every mode, before anything about the artifact.
    POLICY_NOT_IN_SCOPE = "PolicyNotInScope"
    RUNTIME_IMAGE_NOT_PINNED = "RuntimeImageNotPinned"
    RUNTIME_IMAGE_NOT_ALLOWED = "RuntimeImageNotAllowed"
    RUNTIME_ENV_NOT_ALLOWED = "RuntimeEnvNotAllowed"
    LEDGER_INCONSISTENT = "LedgerInconsistent"  # rollback or fork against a trusted checkpoint
    # No trusted checkpoint recorded while models verified against the ledger are serving:
    # trusting whatever the ledger shows now would be a silent trust reset.
    TRUST_RECORD_MISSING = "TrustRecordMissing"
    FETCH_FAILED = "FetchFailed"
    DIGEST_MISMATCH = "DigestMismatch"
    LOAD_FAILED = "LoadFailed"
    MODEL_TOO_LARGE = "ModelTooLarge"
    LEDGER_UNAVAILABLE = "LedgerUnavailable"  # no verified answer from the ledger
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


SEVERITY = {r: i for i, r in enumerate(Reason)}

# No verified answer from the ledger: nothing is known about the model, so these findings
# mean "could not check", not "not trusted".
UNDECIDED = frozenset(
    {
        Reason.LEDGER_UNAVAILABLE,
        Reason.WITNESS_QUORUM_NOT_MET,
        Reason.LEDGER_INCONSISTENT,
        Reason.TRUST_RECORD_MISSING,
    }
)


@dataclass(frozen=True)
class Finding:
    reason: Reason
    message: str


def ledger_finding(exc: ChainError) -> Finding:
    """The finding for a ledger that gave no verified answer: LedgerInconsistent for a
    rollback or fork against the trusted checkpoint, LedgerUnavailable otherwise."""
    if isinstance(exc, LedgerRollbackError | LedgerForkError):
        return Finding(
            Reason.LEDGER_INCONSISTENT,
            f"ledger is inconsistent with the last trusted checkpoint ({exc})",
        )
    return Finding(Reason.LEDGER_UNAVAILABLE, f"no verified ledger answer: {exc}")


def short_key_id(kid: str) -> str:
    """A key id as messages show it: its first 16 hex digits."""
    return f"{kid[:16]}..."


# --- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedPublisher:
    """A publisher the policy trusts: a name, one public key, and which models it may vouch
    for (``fnmatch`` patterns over the model name; none = any model)."""

    name: str
    public_key: PublicKey
    model_name_patterns: tuple[str, ...] = ()
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", key_id(self.public_key))

    @classmethod
    def from_pem(
        cls, name: str, pem: bytes | str, model_name_patterns: Iterable[str] = ()
    ) -> TrustedPublisher:
        """Raises SignatureError when ``pem`` is not an Ed25519 or P-256 public key."""
        raw = pem.encode() if isinstance(pem, str) else pem
        return cls(name, load_public_key(raw), tuple(model_name_patterns))

    def may_vouch_for(self, model_name: str) -> bool:
        if not self.model_name_patterns:
            return True
        return any(fnmatch.fnmatchcase(model_name, p) for p in self.model_name_patterns)


class Threshold(Protocol):
    """What ``evaluate`` needs of a policy (the operator's TrustPolicy has it too)."""

    @property
    def name(self) -> str: ...

    @property
    def threshold(self) -> int: ...


@dataclass(frozen=True)
class VerificationPolicy:
    """Whom to trust: publishers (one key each), how many must have signed, and a name
    for messages. Both the operator (from a ModelTrustPolicy) and ``modeltrust verify``
    (from --publisher/--threshold or --policy) build one."""

    publishers: tuple[TrustedPublisher, ...]
    threshold: int = 1
    name: str = "command line"

    def __post_init__(self) -> None:
        if not self.publishers:
            raise PolicyError("a policy must name at least one trusted publisher")
        if not 1 <= self.threshold <= len(self.publishers):
            raise PolicyError(
                f"threshold {self.threshold} must be between 1 and the number of "
                f"publishers ({len(self.publishers)})"
            )
        seen: dict[str, str] = {}
        for p in self.publishers:
            if p.key_id in seen:
                raise PolicyError(f"publishers {seen[p.key_id]!r} and {p.name!r} share one key")
            seen[p.key_id] = p.name

    def publisher(self, kid: str) -> TrustedPublisher | None:
        return next((p for p in self.publishers if p.key_id == kid), None)


# --- evidence ----------------------------------------------------------------------------------


class ProvenEntry(Protocol):
    """A ledger entry at a known index, proven by the caller (an inclusion proof against a
    verified checkpoint: client_flows.VerifiedEntry; a complete log read: LoggedEntry)."""

    @property
    def index(self) -> int: ...

    @property
    def entry(self) -> Entry: ...


@dataclass(frozen=True)
class Subject:
    """The model asked about. Name and version, when given, must be what a registration
    names; when None (``modeltrust verify`` without --name), each registration's own name
    is what the publishers' model-name patterns are checked against."""

    digest: str
    model_name: str | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class RegistrationCheck:
    """One registration of the digest with the results of checking it: inclusion proof
    against a verified checkpoint, signer key in the policy, signature under that key,
    and the publisher's model-name patterns."""

    ledger_index: int
    model_name: str
    model_version: str
    digest: str
    signer_key_id: str
    inclusion_verified: bool
    publisher: str | None  # trusted publisher owning signer_key_id, None if not in the policy
    signature_valid: bool
    publisher_may_vouch: bool = True  # the publisher's model-name patterns allow this model
    error: str | None = None  # why the signature or proof failed


@dataclass(frozen=True)
class RevocationFact:
    """A revocation entry on the ledger, with its signature checked against the policy."""

    ledger_index: int
    target_kind: str  # "digest" | "key"
    target: str
    reason: str
    signer_key_id: str
    signature_valid: bool  # signed by a key of a publisher in the policy, and it verifies


def check_registrations(
    found: Iterable[ProvenEntry], policy: VerificationPolicy, model_name: str | None = None
) -> list[RegistrationCheck]:
    """Check each proven registration's signer and signature against ``policy``.

    ``model_name`` is the name the publishers' patterns are held to (None: each
    registration's own name)."""
    checks: list[RegistrationCheck] = []
    for pe in found:
        reg = pe.entry
        if not isinstance(reg, Registration):
            continue
        trusted = policy.publisher(reg.signer_key_id)
        valid, error = False, None
        if trusted is not None:
            try:
                verify_registration(reg, trusted.public_key)
                valid = True
            except ChainError as exc:
                error = str(exc)
        name = reg.model_name if model_name is None else model_name
        checks.append(
            RegistrationCheck(
                ledger_index=pe.index,
                model_name=reg.model_name,
                model_version=reg.model_version,
                digest=reg.digest,
                signer_key_id=reg.signer_key_id,
                inclusion_verified=True,
                publisher=trusted.name if trusted else None,
                signature_valid=valid,
                publisher_may_vouch=bool(trusted and trusted.may_vouch_for(name)),
                error=error,
            )
        )
    return checks


def check_revocations(
    found: Iterable[ProvenEntry], policy: VerificationPolicy
) -> list[RevocationFact]:
    """Check each revocation's signer and signature against ``policy`` (ledger order)."""
    facts: dict[int, RevocationFact] = {}
    for pe in found:
        rev = pe.entry
        if not isinstance(rev, Revocation) or pe.index in facts:
            continue
        trusted = policy.publisher(rev.signer_key_id)
        valid = False
        if trusted is not None:
            try:
                verify_revocation(rev, trusted.public_key)
                valid = True
            except ChainError:
                valid = False
        facts[pe.index] = RevocationFact(
            ledger_index=pe.index,
            target_kind=rev.target_kind,
            target=rev.target,
            reason=rev.reason,
            signer_key_id=rev.signer_key_id,
            signature_valid=valid,
        )
    return sorted(facts.values(), key=lambda f: f.ledger_index)


# --- the rules ---------------------------------------------------------------------------------


def applicable_revocations(
    digest: str, key_ids: Iterable[str], revocations: Iterable[RevocationFact]
) -> list[RevocationFact]:
    """The revocations that count against ``digest`` vouched for by ``key_ids`` (the signer
    keys whose registrations of ``digest`` count for this model).

    Authority: only a valid signature by a publisher in the policy counts (someone outside
    the policy must not be able to take models down), and only
    - for a key: when signed by that key itself (one publisher cannot revoke another's);
    - for a digest: when signed by one of ``key_ids``, a publisher who vouched for these
      bytes (a publisher cannot take down models it never registered).
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


@dataclass(frozen=True)
class TrustVerdict:
    """What the rules concluded: failed checks (most severe first; empty when trusted), the
    key ids whose signatures counted, and the ledger index of the first counted one."""

    findings: tuple[Finding, ...]
    signer_key_ids: tuple[str, ...] = ()
    registration_index: int | None = None

    @property
    def trusted(self) -> bool:
        return not self.findings

    @property
    def undecided(self) -> bool:
        """No verified ledger answer: the model is neither trusted nor known to be untrusted."""
        return bool(self.findings) and all(f.reason in UNDECIDED for f in self.findings)

    @property
    def reason(self) -> Reason:
        return self.findings[0].reason if self.findings else Reason.VERIFIED


def _registration_finding(
    r: RegistrationCheck, subject: Subject, policy_name: str
) -> Finding | None:
    where = f"registration at ledger index {r.ledger_index}"
    if not r.inclusion_verified:
        return Finding(
            Reason.INCLUSION_UNPROVEN, f"{where}: inclusion proof did not verify ({r.error})"
        )
    if r.publisher is None:
        return Finding(
            Reason.UNTRUSTED_KEY,
            f"{where} is signed by key {short_key_id(r.signer_key_id)}, which is not a "
            f"publisher of policy {policy_name!r}",
        )
    if not r.signature_valid:
        return Finding(
            Reason.INVALID_SIGNATURE,
            f"{where}: signature by publisher {r.publisher!r} does not verify ({r.error})",
        )
    name = r.model_name if subject.model_name is None else subject.model_name
    version = r.model_version if subject.model_version is None else subject.model_version
    if (r.model_name, r.model_version) != (name, version):
        return Finding(
            Reason.NAME_MISMATCH,
            f"{where} is for model {r.model_name!r} version {r.model_version!r}, "
            f"not {name!r} version {version!r}",
        )
    if not r.publisher_may_vouch:
        return Finding(
            Reason.PUBLISHER_NOT_ALLOWED,
            f"{where}: publisher {r.publisher!r} may not vouch for model {name!r} "
            "(modelNamePatterns)",
        )
    return None


def evaluate(
    subject: Subject,
    registrations: Sequence[RegistrationCheck],
    revocations: Sequence[RevocationFact],
    policy: Threshold,
    *,
    ledger_error: str | None = None,
    ledger_unwitnessed: str | None = None,
) -> TrustVerdict:
    """The trust rules over checked evidence (see the module docstring).

    ``ledger_error`` / ``ledger_unwitnessed``: the ledger gave no verified answer (or one
    without the required witness cosignatures); the verdict is then undecided.
    """
    if ledger_error is not None:
        return TrustVerdict(
            (Finding(Reason.LEDGER_UNAVAILABLE, f"no verified ledger answer: {ledger_error}"),)
        )
    if ledger_unwitnessed is not None:
        return TrustVerdict(
            (
                Finding(
                    Reason.WITNESS_QUORUM_NOT_MET,
                    f"the ledger's answer is not witnessed: {ledger_unwitnessed}",
                ),
            )
        )
    regs = [r for r in registrations if r.digest == subject.digest]
    if not regs:
        return TrustVerdict(
            (
                Finding(
                    Reason.NOT_REGISTERED,
                    f"no registration for {subject.digest} on the ledger: the publisher must "
                    "sign and register it (modeltrust register)",
                ),
            )
        )
    findings: list[Finding] = []
    counted: dict[str, RegistrationCheck] = {}
    for r in regs:
        problem = _registration_finding(r, subject, policy.name)
        if problem is None:
            counted.setdefault(r.signer_key_id, r)
        else:
            findings.append(problem)
    revoked = applicable_revocations(subject.digest, list(counted), revocations)
    revocation_findings: list[Finding] = []
    for rev in revoked:
        what = (
            "the digest"
            if rev.target_kind == "digest"
            else f"signer key {short_key_id(rev.target)}"
        )
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
    ordered = tuple(sorted(findings, key=lambda f: SEVERITY[f.reason]))
    first_index = min((r.ledger_index for r in counted.values()), default=None)
    return TrustVerdict(ordered, tuple(sorted(counted)), first_index)


@dataclass(frozen=True)
class Materials:
    """What the ledger says about a model, every entry already proven by the caller.

    ``registrations``: every registration of ``subject.digest`` (a verified lookup, checked
    against the complete log: ``revocation_index.read_ledger``). ``revocations``: the
    revocations naming the digest or a signer key, from a complete read of the verified
    log (``RevocationIndex.revocations``), never from the ledger's lookup index.
    """

    subject: Subject
    registrations: Sequence[ProvenEntry] = ()
    revocations: Sequence[ProvenEntry] = ()
    ledger_error: str | None = None
    ledger_unwitnessed: str | None = None


def verify(materials: Materials, policy: VerificationPolicy) -> TrustVerdict:
    """Check the materials' signatures against ``policy`` and apply the trust rules."""
    m = materials
    return evaluate(
        m.subject,
        check_registrations(m.registrations, policy, m.subject.model_name),
        check_revocations(m.revocations, policy),
        policy,
        ledger_error=m.ledger_error,
        ledger_unwitnessed=m.ledger_unwitnessed,
    )
