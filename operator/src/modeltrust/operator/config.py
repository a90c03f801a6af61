"""The operator's configuration: every MODELTRUST_* variable it reads, read once at start.

`OperatorConfig.from_env(os.environ)` is called by `python -m modeltrust.operator` before
kopf starts; a bad value is a ConfigError naming the variable, the value and what was
expected (the command prints it and exits 2). Nothing else in the operator reads the
environment. docs/operator.md lists every variable in one table (a unit test keeps the
table and the fields below in step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from modeltrust.operator.errors import ConfigError

DEFAULT_IMAGE = "ghcr.io/modeltrust/modeltrust:latest"


def _env(name: str, parse: Callable[[str, str], Any]) -> dict[str, Any]:
    return {"env": name, "parse": parse}


def _text(name: str, raw: str) -> str:
    if not raw:
        raise ConfigError(name, raw, "a non-empty string")
    return raw


def _optional_text(name: str, raw: str) -> str | None:
    return raw or None


def _flag(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ConfigError(name, raw, "true or false")


def _optional_path(name: str, raw: str) -> Path | None:
    return Path(raw) if raw else None


def _absolute_path(name: str, raw: str) -> Path | None:
    if not raw:
        return None
    if not Path(raw).is_absolute():
        raise ConfigError(name, raw, "an absolute path")
    return Path(raw)


def _int(low: int, high: int | None = None) -> Callable[[str, str], int]:
    what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, raw, what) from None
        if value < low or (high is not None and value > high):
            raise ConfigError(name, raw, what)
        return value

    return parse


def _window() -> Callable[[str, str], float]:
    from modeltrust.operator.artifact import parse_window

    def parse(name: str, raw: str) -> float:
        try:
            return parse_window(raw)
        except ValueError as exc:
            raise ConfigError(name, raw, f"seconds or a duration up to 24h ({exc})") from None

    return parse


def _seconds(*, zero: bool = False) -> Callable[[str, str], float]:
    what = "a number of seconds" + (" >= 0" if zero else " > 0")

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, raw, what) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise ConfigError(name, raw, what)
        return value

    return parse


@dataclass(frozen=True)
class Backoff:
    """Retry delays: base * 2**retry (retry counted from 0, at most 2**10), capped."""

    retry: float = 10.0  # ledger or proof not ready: the audit entry, the pod's proof
    refused: float = 30.0  # a refused generation is decided again
    policy: float = 15.0  # the policy is missing or invalid
    delete: float = 5.0  # a deletion's audit entry
    cap: float = 300.0

    def delay(self, base: float, retry: int) -> float:
        return float(min(self.cap, base * 2.0 ** min(retry, 10)))


@dataclass(frozen=True)
class OperatorConfig:
    """One field per variable; `metadata["env"]` names it (docs/operator.md describes it)."""

    namespace: str = field(
        default="modeltrust-system", metadata=_env("MODELTRUST_NAMESPACE", _text)
    )
    image: str = field(default=DEFAULT_IMAGE, metadata=_env("MODELTRUST_IMAGE", _text))
    model_service_account: str | None = field(
        default=None, metadata=_env("MODELTRUST_MODEL_SERVICE_ACCOUNT", _optional_text)
    )
    # Set by the chart with operator.readSourceCredentials (the RBAC that allows it): look
    # up the pods' ServiceAccount for a source Secret when spec.model.credentials names none.
    read_source_credentials: bool = field(
        default=False, metadata=_env("MODELTRUST_READ_SOURCE_CREDENTIALS", _flag)
    )
    actor: str = field(default="modeltrust-operator", metadata=_env("MODELTRUST_ACTOR", _text))
    # The token is a credential: never in repr (and so never in a log line).
    ledger_token: str | None = field(
        default=None, repr=False, metadata=_env("MODELTRUST_LEDGER_TOKEN", _optional_text)
    )
    ledger_token_file: Path | None = field(
        default=None, metadata=_env("MODELTRUST_LEDGER_TOKEN_FILE", _optional_path)
    )
    local_model_root: Path | None = field(
        default=None, metadata=_env("MODELTRUST_LOCAL_MODEL_ROOT", _absolute_path)
    )
    metrics_port: int = field(default=0, metadata=_env("MODELTRUST_METRICS_PORT", _int(0, 65535)))
    metrics_addr: str = field(
        default="0.0.0.0",  # noqa: S104 (a metrics endpoint in a pod listens on its address)
        metadata=_env("MODELTRUST_METRICS_ADDR", _text),
    )
    workers: int = field(default=64, metadata=_env("MODELTRUST_WORKERS", _int(1)))
    watch_timeout: int = field(default=300, metadata=_env("MODELTRUST_WATCH_TIMEOUT", _int(1)))
    timer_interval: float = field(
        default=10.0, metadata=_env("MODELTRUST_TIMER_INTERVAL", _seconds())
    )
    drift_check_interval: float = field(
        default=60.0, metadata=_env("MODELTRUST_DRIFT_CHECK_INTERVAL", _seconds(zero=True))
    )
    policy_check_interval: float = field(
        default=60.0, metadata=_env("MODELTRUST_POLICY_CHECK_INTERVAL", _seconds())
    )
    # The ledger follower: seconds between checkpoint polls of each ledger (0: off, the timer
    # alone acts on revocations) and the longest back-off while a ledger does not answer.
    ledger_follow_interval: float = field(
        default=1.0, metadata=_env("MODELTRUST_LEDGER_FOLLOW_INTERVAL", _seconds(zero=True))
    )
    ledger_follow_max_backoff: float = field(
        default=30.0, metadata=_env("MODELTRUST_LEDGER_FOLLOW_MAX_BACKOFF", _seconds())
    )
    # How long a successful artifact check may be reused by the same ModelDeployment
    # (0: every decision reads the bytes; failures are never reused).
    artifact_recheck_window: float = field(
        default=0.0, metadata=_env("MODELTRUST_ARTIFACT_RECHECK_WINDOW", _window())
    )
    # How often the audit outbox is drained (decisions kept while their ledger was unavailable).
    outbox_interval: float = field(
        default=10.0, metadata=_env("MODELTRUST_OUTBOX_INTERVAL", _seconds())
    )
    delete_audit_retries: int = field(
        default=6, metadata=_env("MODELTRUST_DELETE_AUDIT_RETRIES", _int(0))
    )
    retry_backoff: float = field(
        default=Backoff.retry, metadata=_env("MODELTRUST_RETRY_BACKOFF", _seconds())
    )
    refused_backoff: float = field(
        default=Backoff.refused, metadata=_env("MODELTRUST_REFUSED_BACKOFF", _seconds())
    )
    policy_backoff: float = field(
        default=Backoff.policy, metadata=_env("MODELTRUST_POLICY_BACKOFF", _seconds())
    )
    delete_backoff: float = field(
        default=Backoff.delete, metadata=_env("MODELTRUST_DELETE_BACKOFF", _seconds())
    )
    backoff_cap: float = field(
        default=Backoff.cap, metadata=_env("MODELTRUST_BACKOFF_CAP", _seconds())
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> OperatorConfig:
        """Read every variable (unset or empty: the default). ConfigError on a bad value."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"], "").strip()
            if raw:
                values[f.name] = f.metadata["parse"](f.metadata["env"], raw)
        return cls(**values)

    @staticmethod
    def variables() -> dict[str, str]:
        """Field name by environment variable."""
        return {f.metadata["env"]: f.name for f in fields(OperatorConfig)}

    @property
    def backoff(self) -> Backoff:
        return Backoff(
            self.retry_backoff,
            self.refused_backoff,
            self.policy_backoff,
            self.delete_backoff,
            self.backoff_cap,
        )
