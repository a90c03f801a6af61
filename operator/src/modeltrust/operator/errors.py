"""The operator's errors: one root, one class per meaning.

    OperatorError
    ├── ConfigError          a MODELTRUST_* variable has a value the operator cannot use
    ├── SpecError            a spec field the operator cannot act on (also a ValueError)
    │   └── PolicyNotFound   the ModelTrustPolicy a ModelDeployment names does not exist
    ├── Conflict             the API server answered 409 (changed since read, or exists)
    ├── LedgerUnverified     no verified answer from a ledger
    │   ├── LedgerUnwitnessed    its checkpoint lacks the policy's witness quorum
    │   └── LedgerTokenMissing   no bearer token for audit appends
    ├── LedgerInconsistent   the ledger rolled back or forked against the trusted checkpoint
    ├── ModelCheckFailed     the model file is not one the operator will load (onnx_check)
    ├── ProvenancePending    the pod's offline proof could not be written; the rollout waits
    ├── Retry                try again after `delay` seconds (kopf.TemporaryError)
    └── Fatal                nothing changes until the object does (kopf.PermanentError)

Errors of the ledger client and the serving runtime (modeltrust.chain, modeltrust.serving)
are theirs; the operator converts them at its edge (ledger_access.classify).
"""

from __future__ import annotations


class OperatorError(Exception):
    """Every error the operator raises on purpose."""


class ConfigError(OperatorError):
    """A configuration variable with a value the operator cannot use."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        super().__init__(f"{variable}={value!r}: expected {expected}")
        self.variable = variable
        self.value = value
        self.expected = expected


class SpecError(OperatorError, ValueError):
    """A spec field the operator cannot act on. `field` is the dotted path, as kubectl shows it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class PolicyNotFound(SpecError):
    """The ModelTrustPolicy named by spec.policy does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__("spec.policy", f"ModelTrustPolicy {name!r} does not exist")
        self.name = name


class Conflict(OperatorError):
    """409: the object changed since it was read (or already exists)."""


class LedgerUnverified(OperatorError):
    """No verified answer from the ledger (unreachable, refused, or did not verify)."""


class LedgerUnwitnessed(LedgerUnverified):
    """The ledger's checkpoint lacks the witness cosignatures the policy requires."""


class LedgerTokenMissing(LedgerUnverified):
    """No bearer token for audit appends. The operator never falls back to another
    credential (such as the pod's service-account token, which the API server accepts and
    so must never be handed to the ledger): without one, appends fail closed."""


class LedgerTrustMissing(LedgerUnverified):
    """No trusted checkpoint is recorded and trust on first use was refused (models
    verified against this ledger are serving): an explicit trust reset is needed."""


class LedgerInconsistent(OperatorError):
    """The ledger rolled back or forked relative to the trusted checkpoint."""


class ModelCheckFailed(OperatorError):
    """The model file fails the operator's structural check before onnxruntime loads it."""


class ProvenancePending(OperatorError):
    """The pod's offline proof could not be written; the rollout waits for it."""


class Retry(OperatorError):
    """Try again later (kopf.TemporaryError in the handlers)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Fatal(OperatorError):
    """Nothing will change until the object changes (kopf.PermanentError)."""


class NotControlled(Fatal):
    """An object at the name of an owned one is not controlled by the ModelDeployment and
    is not the object the operator made: it is reported, never taken over or served from."""


def condition_reason(exc: SpecError) -> str:
    """The Verified reason for a ModelDeployment whose policy cannot be used."""
    return "PolicyNotFound" if isinstance(exc, PolicyNotFound) else "InvalidPolicy"
