"""Prometheus metrics of the operator (served on --metrics-port).

The registry is the operator's own (not the process-global one), so it registers the
client library's process, platform and GC collectors itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from modeltrust.chain.metrics import add_process_metrics
from modeltrust.operator.status_record import MDStatus
from modeltrust.operator.types import RevocationAction


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        add_process_metrics(r, "operator")
        self.decisions = Counter(
            "modeltrust_operator_decisions",
            "Verification decisions.",
            ["verdict", "reason"],
            registry=r,
        )
        self.audits = Counter(
            "modeltrust_operator_audit_appends",
            "Audit entry appends by result.",
            ["result"],
            registry=r,
        )
        self.ledger_errors = Counter(
            "modeltrust_operator_ledger_errors",
            "Ledger answers that were missing or did not verify.",
            ["kind"], registry=r,
        )  # fmt: skip
        self.ledger_inconsistent = Gauge(
            "modeltrust_operator_ledger_inconsistent",
            "1 when the ledger rolled back or forked relative to the trusted checkpoint.",
            ["ledger"], registry=r,
        )  # fmt: skip
        self.trust_resets = Counter(
            "modeltrust_operator_trust_resets",
            "Explicit trust resets applied (modeltrust.dev/trust-reset).",
            ["ledger"], registry=r,
        )  # fmt: skip
        self.trust_first_use = Counter(
            "modeltrust_operator_trust_first_use",
            "Ledgers trusted on first use (no record, nothing serving).",
            ["ledger"], registry=r,
        )  # fmt: skip
        self.outbox_pending = Gauge(
            "modeltrust_operator_audit_outbox_pending",
            "Decisions waiting in the audit outbox for their ledger.",
            ["ledger"], registry=r,
        )  # fmt: skip
        self.outbox_oldest_age = Gauge(
            "modeltrust_operator_audit_outbox_oldest_age_seconds",
            "Age of the oldest decision waiting in the audit outbox (0 when none).",
            ["ledger"], registry=r,
        )  # fmt: skip
        self.outbox_dropped = Counter(
            "modeltrust_operator_audit_outbox_dropped",
            "Decisions that could be neither recorded nor kept (outbox full).",
            ["ledger"], registry=r,
        )  # fmt: skip
        self.drift = Counter(
            "modeltrust_operator_drift_corrections", "Owned Deployments restored.", registry=r
        )
        self.revocations = Counter(
            "modeltrust_operator_revocations", "Revocations acted on.", ["action"], registry=r
        )
        self.verify_seconds = Histogram(
            "modeltrust_operator_verify_seconds", "Time from reconcile start to rollout.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=r,
        )  # fmt: skip
        self.ledger_up = Gauge(
            "modeltrust_operator_ledger_up",
            "1 when the ledger follower's last checkpoint poll got a verified answer, 0 when "
            "not (no answer, refused, did not verify, rolled back or forked).",
            ["ledger"], registry=r,
        )  # fmt: skip
        self.revoked_kept_serving = Gauge(
            "modeltrust_operator_revoked_kept_serving",
            "1 per ModelDeployment (namespace/name) whose model is revoked but keeps serving "
            "(KeepAndFlag), as its status on the API server says.",
            ["modeldeployment"], registry=r,
        )  # fmt: skip

    def model_deployment_seen(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Keep `revoked_kept_serving` equal to what the watch last delivered for `body`."""
        meta = body.get("metadata") or {}
        # One label, not `namespace`: the scrape's own `namespace` target label would rename it.
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        record = MDStatus.from_status(body.get("status"))
        kept = (
            not deleted
            and record.revoked
            and record.revocation_action == RevocationAction.KEEP_AND_FLAG.value
        )
        if kept:
            self.revoked_kept_serving.labels(key).set(1)
        else:
            with contextlib.suppress(KeyError):
                self.revoked_kept_serving.remove(key)
