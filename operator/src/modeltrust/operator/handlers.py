"""kopf handlers: thin adapters from kopf's callbacks to the reconcile modules.

Nothing is registered at import: `register(registry, config)` adds the handlers with the
intervals of the OperatorConfig, and `python -m modeltrust.operator` runs kopf with that
registry and a memo holding the config and the watched namespaces. The startup handler
builds `Deps` from them into the memo; every other handler takes it from there.

Status is always patched explicitly; no handler returns a value (kopf would write it to
status, where the structural schema silently prunes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._core.engines import posting  # where kopf keeps its per-handler event queue
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from modeltrust.operator import builders, kube, ledger_follower, logs
from modeltrust.operator.artifact import ArtifactChecker
from modeltrust.operator.audit import audit_deletion
from modeltrust.operator.audit_outbox import AuditOutbox, drain_forever
from modeltrust.operator.builders import BuildSettings
from modeltrust.operator.config import OperatorConfig
from modeltrust.operator.deps import Deps, EventSink
from modeltrust.operator.drift_correction import on_deployment_change
from modeltrust.operator.errors import Conflict, Fatal, LedgerInconsistent, LedgerUnverified, Retry
from modeltrust.operator.ledger_access import APPENDS_UNCONFIGURED, LedgerAccess, token_reader
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.pod_failures import on_pod_change
from modeltrust.operator.policy_events import on_policy_event, refresh_ledger_conditions
from modeltrust.operator.reconcile import reconcile
from modeltrust.operator.reverify import recheck
from modeltrust.operator.runtime_policy import image_identity
from modeltrust.operator.trust_reset import first_use_refusal, handle_policy
from modeltrust.operator.types import GROUP, MODEL_DEPLOYMENT_PLURAL, POLICY_PLURAL, VERSION

log = logging.getLogger("modeltrust.operator")

FINALIZER = "modeltrust.dev/finalizer"


def _deps(memo: kopf.Memo) -> Deps:
    deps = memo.get("deps")
    if not isinstance(deps, Deps):
        raise kopf.TemporaryError("the operator is still starting", delay=2)
    return deps


def _config(memo: kopf.Memo) -> OperatorConfig:
    config = memo.get("config")
    assert isinstance(config, OperatorConfig), "run kopf with memo=operator_memo(config, ...)"
    return config


def operator_memo(config: OperatorConfig, namespaces: tuple[str, ...]) -> kopf.Memo:
    """What kopf.run is given as `memo`: the configuration and the watched namespaces."""
    return kopf.Memo(config=config, namespaces=namespaces)


def _post_event(body: Any, type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(body, type=type_, reason=reason, message=message)
    except Exception:  # events are best effort; never fail a decision over one
        log.exception("could not post event %s", reason)


def event_poster(k: kube.Kube) -> EventSink:
    """Post Events through kopf's queue where it has one (inside a resource handler), else
    through the API ourselves: kopf sets its queue only in the task of one object's handler,
    so the ledger follower, the audit outbox's drain and trust resets (background tasks)
    would otherwise lose every Event they post."""
    background: set[asyncio.Task[None]] = set()

    async def post(body: Any, type_: str, reason: str, message: str) -> None:
        try:
            await k.create_event(body, type_, reason, message, datetime.now(UTC))
        except Exception:  # best effort, as kopf's own posting
            log.exception("could not post event %s", reason)

    def sink(body: Any, type_: str, reason: str, message: str) -> None:
        if posting.event_queue_loop_var.get(None) is not None:
            _post_event(body, type_, reason, message)
            return
        task = asyncio.get_running_loop().create_task(post(body, type_, reason, message))
        background.add(task)
        task.add_done_callback(background.discard)

    return sink


def token_source(config: OperatorConfig) -> Callable[[], str]:
    """MODELTRUST_LEDGER_TOKEN (local use) or the file MODELTRUST_LEDGER_TOKEN_FILE names,
    re-read on use. Nothing else: the pod's service-account token is a credential for the
    API server and is never sent to the ledger. With neither set, audit appends fail."""
    if config.ledger_token is None and config.ledger_token_file is None:
        log.warning("%s; every audit append will fail until one is set", APPENDS_UNCONFIGURED)
    return token_reader(config.ledger_token, config.ledger_token_file)


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    config = _config(memo)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modeltrust.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="modeltrust.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # kopf's own chatter stays in logs, not Events
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = config.watch_timeout + 30
    settings.batching.worker_limit = config.workers
    kube.load_config()
    metrics = Metrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_addr, registry=metrics.registry)
    k = kube.Kube(threads=config.workers)
    namespaces = tuple(memo.get("namespaces") or ())
    # Trust boundary: first use of a ledger without a trusted-checkpoint record is refused
    # while models verified against it serve (trust_reset); decisions that cannot be
    # recorded now are kept in the audit outbox, which also audits trust events.
    ledger = LedgerAccess(
        k, config.namespace, token_source(config),
        first_use=functools.partial(first_use_refusal, k, namespaces, config.namespace),
    )  # fmt: skip
    events = event_poster(k)
    outbox = AuditOutbox(k, config.namespace, ledger, metrics, events, actor=config.actor)
    ledger.trust_events = outbox.trust_event
    deps = Deps(
        kube=k,
        ledger=ledger,
        artifacts=ArtifactChecker(
            local_root=config.local_model_root, recheck_window=config.artifact_recheck_window
        ),
        metrics=metrics,
        events=events,
        build=BuildSettings(
            default_image=config.image, service_account_name=config.model_service_account
        ),
        read_source_credentials=config.read_source_credentials,
        actor=config.actor,
        backoff=config.backoff,
        namespaces=namespaces,
        drift_check_seconds=config.drift_check_interval,
        outbox=outbox,
    )
    if image_identity(deps.build.default_image) is None:
        log.warning(
            "MODELTRUST_IMAGE %r is not pinned by digest: ModelDeployments without "
            "spec.runtime.image are refused (RuntimeImageNotPinned)", deps.build.default_image,
        )  # fmt: skip
    memo["deps"] = deps
    memo["background"] = {
        asyncio.create_task(_refresh_policies(deps, config)),
        asyncio.create_task(drain_forever(outbox, config.outbox_interval, deps.lock)),
    }
    # Revocations reach serving models within seconds, not at the next due timer tick. The
    # policies index is kopf's live view (startup handlers get it, empty until watching).
    index = kwargs["policies"]
    follow = ledger_follower.start(
        deps,
        ledger_follower.FollowSettings.from_config(config),
        lambda: watched_policies(index),
    )
    if follow is not None:
        memo["background"].add(follow)
    log.info("modeltrust operator started; trust state in namespace %s", config.namespace)


async def _refresh_policies(deps: Deps, config: OperatorConfig) -> None:
    """Keep each policy's LedgerReachable current without a kopf timer (a timer would put a
    finalizer on every policy and need patch rights on them)."""
    while True:
        await asyncio.sleep(config.policy_check_interval)
        try:
            # trust resets still pending (their ledger was unreachable when asked)
            for body in await deps.kube.list_policies():
                await handle_policy(deps, dict(body))
            await refresh_ledger_conditions(deps)
        except Exception:  # a failed round is retried at the next interval
            log.exception("refreshing policy ledger conditions failed")


async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    tasks: set[asyncio.Task[None]] = memo.get("background") or set()
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()
    deps = memo.get("deps")
    if isinstance(deps, Deps):
        await deps.ledger.close()
        deps.kube.close()


def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """kopf index of the ModelTrustPolicies as the watch last delivered them, by name (the
    timer's tick reads no policy from the API server; kopf drops a deleted one)."""
    return {name: dict(body)}


def watched_policies(index: kopf.Index[str, dict[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return {name: body for name in index for body in index[name]}


async def policy_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Policy status and re-verification of its users. A raw event handler: kopf keeps no
    state on the policy, so the operator needs only its status subresource (docs/rbac.md)."""
    deps = memo.get("deps")
    if not isinstance(deps, Deps):  # startup handlers run before watching starts: a guard
        return
    deleted = event.get("type") == "DELETED"
    with logs.about(None, body.meta.name):
        await on_policy_event(deps, dict(body), deleted=deleted)
        if not deleted:
            await handle_policy(deps, dict(body))  # an explicit trust reset (annotation)


async def model_deployment_changed(body: kopf.Body, retry: int, memo: kopf.Memo, **_: Any) -> None:
    try:
        with logs.about(body.meta.namespace, body.meta.name):
            await reconcile(_deps(memo), body, retry=retry)
    except Retry as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
    except Fatal as exc:
        raise kopf.PermanentError(str(exc)) from exc


async def periodic_reverify(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    # `policies`: the kopf index registered with id="policies" (policy_index).
    with logs.about(body.meta.namespace, body.meta.name):
        await recheck(_deps(memo), body, watched=watched_policies(kwargs["policies"]))


async def model_deployment_deleted(body: kopf.Body, retry: int, memo: kopf.Memo, **_: Any) -> None:
    deps, config = _deps(memo), _config(memo)
    try:
        with logs.about(body.meta.namespace, body.meta.name):
            await audit_deletion(deps, body)
    except (LedgerUnverified, LedgerInconsistent) as exc:
        if retry < config.delete_audit_retries:
            delay = deps.backoff.delay(deps.backoff.delete, retry)
            raise kopf.TemporaryError(f"deletion not yet audited: {exc}", delay=delay) from exc
        # Never hold a namespace hostage to a ledger that is gone: let deletion finish, loudly.
        _post_event(
            body, "Warning", "AuditFailed", f"deletion could not be recorded on the ledger: {exc}"
        )
        log.error("deletion of %s/%s not audited: %s", body.meta.namespace, body.meta.name, exc)


async def model_deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every event: the revoked-but-serving gauge follows the status the watch delivers.
    The object is gone from the API server: drop what this process kept about it."""
    deps = memo.get("deps")
    if not isinstance(deps, Deps):
        return
    deleted = event.get("type") == "DELETED"
    body = event.get("object") or {}
    deps.metrics.model_deployment_seen(body, deleted=deleted)
    if deleted:
        deps.objects.forget(str(body.get("metadata", {}).get("uid", "")))


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


async def owned_deployment_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    owner = _owner(body)
    deps = memo.get("deps")
    if owner is None or not isinstance(deps, Deps):
        return
    try:
        with logs.about(body.meta.namespace, owner["metadata"]["name"]):
            await on_deployment_change(deps, owner)
    except (Retry, Fatal, Conflict) as exc:
        log.warning("owned Deployment %s/%s: %s", body.meta.namespace, body.meta.name, exc)


async def owned_pod_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A model server pod's init step refused (or accepted) the model: pod_failures.py."""
    deps = memo.get("deps")
    if not isinstance(deps, Deps):  # startup handlers run before watching starts: a guard
        return
    try:
        with logs.about(body.meta.namespace, body.meta.name):
            await on_pod_change(deps, body)
    except (Conflict, ApiException) as exc:
        log.warning("model server pod %s/%s: %s", body.meta.namespace, body.meta.name, exc)


def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Add every handler to `registry`, with the timer interval of `config`."""
    md = (GROUP, VERSION, MODEL_DEPLOYMENT_PLURAL)
    # kopf's default registry brings its login handlers; a registry of our own needs one:
    # in-cluster credentials or KUBECONFIG, through the kubernetes client (as kube.py).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    kopf.on.startup(registry=registry)(configure)
    kopf.on.cleanup(registry=registry)(shutdown)
    kopf.index(GROUP, VERSION, POLICY_PLURAL, id="policies", registry=registry)(policy_index)
    kopf.on.event(GROUP, VERSION, POLICY_PLURAL, registry=registry)(policy_event)
    kopf.on.resume(*md, registry=registry)(model_deployment_changed)
    kopf.on.create(*md, registry=registry)(model_deployment_changed)
    kopf.on.update(*md, field="spec", registry=registry)(model_deployment_changed)
    kopf.timer(
        *md,
        interval=config.timer_interval,
        initial_delay=config.timer_interval,
        registry=registry,
    )(periodic_reverify)
    kopf.on.delete(*md, registry=registry)(model_deployment_deleted)
    kopf.on.event(*md, registry=registry)(model_deployment_event)
    kopf.on.event(
        "apps",
        "v1",
        "deployments",
        labels={builders.LABEL_MANAGED_BY: builders.MANAGED_BY},
        registry=registry,
    )(owned_deployment_event)
    kopf.on.event(
        "", "v1", "pods", labels={builders.LABEL_NAME: builders.APP_NAME}, registry=registry
    )(owned_pod_event)
