"""kopf handlers: thin adapters from kopf's callbacks to reconcile.py.

Status is always patched explicitly by reconcile.py; no handler returns a value (kopf
would write it to status, where the structural schema silently prunes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from modeltrust.operator import builders, kube
from modeltrust.operator.artifact import ArtifactChecker
from modeltrust.operator.builders import BuildSettings
from modeltrust.operator.ledger_access import (
    APPENDS_UNCONFIGURED,
    LedgerAccess,
    LedgerInconsistent,
    LedgerUnverified,
    token_reader,
)
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.pod_failures import on_pod_change
from modeltrust.operator.policy_reconcile import (
    on_policy_event,
    recheck,
    refresh_ledger_conditions,
)
from modeltrust.operator.reconcile import (
    Deps,
    Fatal,
    Retry,
    audit_deletion,
    backoff,
    on_deployment_change,
    reconcile,
)
from modeltrust.operator.types import GROUP, MODEL_DEPLOYMENT_PLURAL, POLICY_PLURAL, VERSION

log = logging.getLogger("modeltrust.operator")

FINALIZER = "modeltrust.dev/finalizer"
TIMER_INTERVAL = float(os.environ.get("MODELTRUST_TIMER_INTERVAL", "10"))
DELETE_AUDIT_RETRIES = int(os.environ.get("MODELTRUST_DELETE_AUDIT_RETRIES", "6"))
POLICY_CHECK_INTERVAL = float(os.environ.get("MODELTRUST_POLICY_CHECK_INTERVAL", "60"))
DRIFT_CHECK_INTERVAL = float(os.environ.get("MODELTRUST_DRIFT_CHECK_INTERVAL", "60"))
# Set by __main__ from --namespace (empty: every namespace).
WATCHED_NAMESPACES: tuple[str, ...] = ()

_deps: Deps | None = None
_background: set[asyncio.Task[None]] = set()


def deps() -> Deps:
    if _deps is None:
        raise kopf.TemporaryError("the operator is still starting", delay=2)
    return _deps


def _post_event(body: Any, type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(body, type=type_, reason=reason, message=message)
    except Exception:  # events are best effort; never fail a decision over one
        log.exception("could not post event %s", reason)


def _token_source() -> Callable[[], str]:
    """MODELTRUST_LEDGER_TOKEN (local use) or the file MODELTRUST_LEDGER_TOKEN_FILE names,
    re-read on use. Nothing else: the pod's service-account token is a credential for the
    API server and is never sent to the ledger. With neither set, audit appends fail."""
    token = os.environ.get("MODELTRUST_LEDGER_TOKEN", "").strip() or None
    token_file = os.environ.get("MODELTRUST_LEDGER_TOKEN_FILE", "").strip() or None
    if token is None and token_file is None:
        log.warning("%s; every audit append will fail until one is set", APPENDS_UNCONFIGURED)
    return token_reader(token, Path(token_file) if token_file else None)


def _local_model_root() -> Path | None:
    """MODELTRUST_LOCAL_MODEL_ROOT: the only directory local model paths may name (unset:
    local paths are refused; "/" allows every path, deliberately)."""
    root = os.environ.get("MODELTRUST_LOCAL_MODEL_ROOT", "").strip()
    if not root:
        return None
    if not Path(root).is_absolute():
        raise SystemExit(f"MODELTRUST_LOCAL_MODEL_ROOT must be an absolute path, got {root!r}")
    return Path(root)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _deps
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modeltrust.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="modeltrust.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # kopf's own chatter stays in logs, not Events
    settings.watching.server_timeout = int(os.environ.get("MODELTRUST_WATCH_TIMEOUT", "300"))
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.batching.worker_limit = int(os.environ.get("MODELTRUST_WORKERS", "64"))
    kube.load_config()
    namespace = os.environ.get("MODELTRUST_NAMESPACE", "modeltrust-system")
    token = _token_source()
    metrics = Metrics()
    port = int(os.environ.get("MODELTRUST_METRICS_PORT", "0") or 0)
    if port:
        start_http_server(
            port,
            addr=os.environ.get("MODELTRUST_METRICS_ADDR", "0.0.0.0"),  # noqa: S104
            registry=metrics.registry,
        )
    k = kube.Kube(threads=settings.batching.worker_limit)
    _deps = Deps(
        kube=k,
        ledger=LedgerAccess(k, namespace, token),
        artifacts=ArtifactChecker(local_root=_local_model_root()),
        metrics=metrics,
        events=_post_event,
        build=BuildSettings(
            default_image=os.environ.get("MODELTRUST_IMAGE", BuildSettings.default_image),
            service_account_name=os.environ.get("MODELTRUST_MODEL_SERVICE_ACCOUNT") or None,
        ),
        actor=os.environ.get("MODELTRUST_ACTOR", "modeltrust-operator"),
        namespaces=WATCHED_NAMESPACES,
        drift_check_seconds=DRIFT_CHECK_INTERVAL,
    )
    task = asyncio.create_task(_refresh_policies(_deps))
    _background.add(task)
    log.info("modeltrust operator started; trust state in namespace %s", namespace)


async def _refresh_policies(d: Deps) -> None:
    """Keep each policy's LedgerReachable current without a kopf timer (a timer would put a
    finalizer on every policy and need patch rights on them)."""
    while True:
        await asyncio.sleep(POLICY_CHECK_INTERVAL)
        try:
            await refresh_ledger_conditions(d)
        except Exception:  # a failed round is retried at the next interval
            log.exception("refreshing policy ledger conditions failed")


@kopf.on.cleanup()
async def shutdown(**_: Any) -> None:
    for task in _background:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    _background.clear()
    if _deps is not None:
        await _deps.ledger.close()
        _deps.kube.close()


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL)
async def policy_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    """Policy status and re-verification of its users. A raw event handler: kopf keeps no
    state on the policy, so the operator needs only its status subresource (docs/rbac.md)."""
    if _deps is None:  # startup handlers run before watching starts; this is a guard
        return
    await on_policy_event(_deps, dict(body), deleted=event.get("type") == "DELETED")


async def _reconcile(body: kopf.Body, retry: int) -> None:
    try:
        await reconcile(deps(), body, retry=retry)
    except Retry as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
    except Fatal as exc:
        raise kopf.PermanentError(str(exc)) from exc


@kopf.on.resume(GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL)
@kopf.on.create(GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL)
@kopf.on.update(GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL, field="spec")
async def model_deployment_changed(body: kopf.Body, retry: int, **_: Any) -> None:
    await _reconcile(body, retry)


@kopf.timer(
    GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL, interval=TIMER_INTERVAL, initial_delay=TIMER_INTERVAL
)
async def periodic_reverify(body: kopf.Body, **_: Any) -> None:
    await recheck(deps(), body)


@kopf.on.delete(GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL)
async def model_deployment_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
    try:
        await audit_deletion(deps(), body)
    except (LedgerUnverified, LedgerInconsistent) as exc:
        if retry < DELETE_AUDIT_RETRIES:
            raise kopf.TemporaryError(
                f"deletion not yet audited: {exc}", delay=backoff(retry, base=5)
            ) from exc
        # Never hold a namespace hostage to a ledger that is gone: let deletion finish, loudly.
        _post_event(
            body, "Warning", "AuditFailed", f"deletion could not be recorded on the ledger: {exc}"
        )
        log.error("deletion of %s/%s not audited: %s", body.meta.namespace, body.meta.name, exc)


def _owner(body: kopf.Body) -> dict[str, Any] | None:
    for ref in body.meta.get("ownerReferences") or []:
        if ref.get("kind") == "ModelDeployment" and ref.get("controller"):
            return {
                "metadata": {
                    "name": ref["name"],
                    "uid": ref["uid"],
                    "namespace": body.meta.namespace,
                }
            }
    return None


@kopf.on.event("apps", "v1", "deployments", labels={builders.LABEL_MANAGED_BY: builders.MANAGED_BY})
async def owned_deployment_event(body: kopf.Body, **_: Any) -> None:
    owner = _owner(body)
    if owner is None or _deps is None:
        return
    try:
        await on_deployment_change(_deps, owner)
    except (Retry, Fatal, kube.Conflict) as exc:
        log.warning("owned Deployment %s/%s: %s", body.meta.namespace, body.meta.name, exc)


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_NAME: builders.APP_NAME})
async def owned_pod_event(body: kopf.Body, **_: Any) -> None:
    """A model server pod's init step refused (or accepted) the model: pod_failures.py."""
    if _deps is None:
        return
    try:
        await on_pod_change(_deps, body)
    except (kube.Conflict, ApiException) as exc:
        log.warning("model server pod %s/%s: %s", body.meta.namespace, body.meta.name, exc)
