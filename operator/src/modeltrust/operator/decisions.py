"""The verification decision as a pure function of its evidence.

The handlers gather evidence (the fetched artifact's digest, registrations found on the
ledger with their signature and inclusion-proof results, revocations, the onnxruntime load
result, ledger errors) and `decide` turns it into a Decision. Nothing here does I/O, so
every path of the trust model is unit-tested without a cluster or a ledger.

Whether the ledger's evidence makes the model trusted (publishers, threshold, model-name
patterns, revocation authority) is not decided here but by modeltrust.chain.trust, the
rules `modeltrust verify` and `modeltrust fetch` apply too; this module adds what only
the operator knows: the fetched bytes, the onnxruntime load, maxModelSize, and what
Enforce and Audit do with a failure.

Two kinds of failed checks:
- hard: the bytes are not the pinned bytes, cannot be fetched or loaded, or the ledger
  is inconsistent with a checkpoint we trusted (rollback or fork). Refused in every mode:
  the pod's own init step would refuse those bytes anyway, and a forked ledger makes every
  other answer meaningless.
- trust: registration, signature, publisher key, threshold, revocation, ledger reachable.
  Refused under Enforce; under Audit rolled out anyway, with every failure recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from modeltrust.chain.trust import (
    SEVERITY,
    UNDECIDED,
    Finding,
    Reason,
    RegistrationCheck,
    RevocationFact,
    Subject,
    evaluate,
)
from modeltrust.operator.types import Enforcement, TrustPolicy

__all__ = [
    "ArtifactResult",
    "Decision",
    "Evidence",
    "Finding",
    "LoadResult",
    "Reason",
    "RegistrationCheck",
    "RevocationFact",
    "TensorInfo",
    "Verdict",
    "decide",
    "decide_serving",
    "idempotency_key",
    "undecided",
]


class Verdict(StrEnum):
    ALLOWED = "allowed"
    REFUSED = "refused"
    ALLOWED_AUDIT_ONLY = "allowed-audit-only"


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
    # No trusted checkpoint while models verified against this ledger serve (trust_store).
    ledger_trust_missing: str | None = None


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


def _trust_findings(
    ev: Evidence, policy: TrustPolicy
) -> tuple[list[Finding], tuple[str, ...], int | None]:
    """Registration, signature, threshold and revocation checks: the trust rules of
    modeltrust.chain.trust, which `modeltrust verify` and `modeltrust fetch` apply too.
    Returns findings, the key ids whose signatures counted, and the ledger index of the
    first counted registration."""
    verdict = evaluate(
        Subject(ev.pinned_digest, ev.model_name, ev.model_version),
        ev.registrations,
        ev.revocations,
        policy,
        ledger_error=ev.ledger_error,
        ledger_unwitnessed=ev.ledger_unwitnessed,
    )
    return list(verdict.findings), verdict.signer_key_ids, verdict.registration_index


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
    if ev.ledger_trust_missing is not None:
        hard.append(Finding(Reason.TRUST_RECORD_MISSING, ev.ledger_trust_missing))
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
    findings = tuple(sorted([*hard, *trust], key=lambda f: SEVERITY[f.reason]))
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
    elif ev.ledger_trust_missing is not None:
        trust = [Finding(Reason.TRUST_RECORD_MISSING, ev.ledger_trust_missing)]
        key_ids, reg_index = (), None
    else:
        trust, key_ids, reg_index = _trust_findings(ev, policy)
    findings = tuple(sorted([*hard, *trust], key=lambda f: SEVERITY[f.reason]))
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
        and all(f.reason in UNDECIDED for f in decision.findings)
    )


def idempotency_key(uid: str, generation: int, action: str, detail: str = "") -> str:
    """The key an audit entry is deduplicated on: the same decision about the same object
    generation is recorded once, even if the operator crashes and retries mid-rollout."""
    if not uid:
        raise ValueError("idempotency key needs the object's uid")
    base = f"{uid}/{generation}/{action}"
    return f"{base}/{detail}" if detail else base
