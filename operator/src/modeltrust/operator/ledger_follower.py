"""Following each policy's ledger, so that a revocation reaches serving models in seconds.

Why one long module: the pure matching, one follower's state machine and the
supervisor that starts and stops followers; the pure parts come first and are tested alone.

The re-verification timer alone acts on a revocation only when `reverifyInterval` has
elapsed for each model (5 minutes by default). Here one `Follower` per distinct ledger
(shared by every policy naming it; stopped when none does) polls the ledger's signed
checkpoint every `interval` seconds (the ledger has no long-poll) through the operator's
own verifying client and trust store (`LedgerAccess.checkpoint`: the note's signature,
and a consistency proof from the last trusted checkpoint, which then moves forward), and
reads only the entries appended since into the ledger's revocation index
(`RevocationIndex.advance`: a range read, the entries hashed onto the verified tree and
required to give the new checkpoint's root). Nothing here verifies anything itself.

Each revocation the index gained since the follower last looked (`revocations_since`;
also those a decision's own read brought in) is matched against the serving
ModelDeployments of the policies on that ledger with the core's authority rule
(`modeltrust.chain.trust.check_revocations` and `applicable_revocations`, with the
policy's keys, the serving digest and the signer keys that counted for it). Each one
affected is re-verified at once by `reverify`: the timer's own decision path
(`reverify.reverify_serving`), so the action (ScaleToZero, KeepAndFlag), the
conditions and the audit entry are exactly the timer's. The match only chooses whom to
re-verify now; the decision is made by the same code as always, and the timer stays the
backstop for anything the follower misses (an operator restart, a failed dispatch, a
ledger that was down).

A ledger that does not answer, or whose answer does not verify, is retried with
exponential back-off up to `max_backoff` seconds, logged once when it starts and once
when it ends; a rolled-back or forked ledger (LedgerInconsistent) is logged at ERROR once
and nothing is dispatched from it (the decisions of every other path refuse it anyway).
The follower never raises out of its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from modeltrust.chain.client import LoggedEntry, VerifiedCheckpoint
from modeltrust.chain.errors import ChainError
from modeltrust.chain.trust import applicable_revocations, check_revocations
from modeltrust.operator.conditions import REVOKED
from modeltrust.operator.config import OperatorConfig
from modeltrust.operator.deps import Deps, load_policy
from modeltrust.operator.errors import LedgerInconsistent, LedgerUnverified, SpecError
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.ledger_access import LedgerAccess, classify
from modeltrust.operator.metrics import Metrics
from modeltrust.operator.reverify import reverify_serving
from modeltrust.operator.types import (
    DEFAULT_POLICY,
    LedgerSpec,
    TrustPolicy,
    parse_model_deployment,
    parse_trust_policy,
)
from modeltrust.operator.witness import WitnessRequirement

log = logging.getLogger("modeltrust.operator.follow")

DEFAULT_INTERVAL = 1.0
DEFAULT_MAX_BACKOFF = 30.0
DISPATCH_CONCURRENCY = 8

Body = Mapping[str, Any]
Reverify = Callable[[Body], Awaitable[str]]


@dataclass(frozen=True)
class FollowSettings:
    """`interval` seconds between checkpoint polls of each ledger (0 turns following off:
    the timer alone acts on revocations); failures back off up to `max_backoff` seconds."""

    interval: float = DEFAULT_INTERVAL
    max_backoff: float = DEFAULT_MAX_BACKOFF

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @classmethod
    def from_config(cls, config: OperatorConfig) -> FollowSettings:
        interval = config.ledger_follow_interval
        return cls(interval, max(config.ledger_follow_max_backoff, interval))


# --- pure parts ---------------------------------------------------------------------------------

LedgerIdentity = tuple[str, str, str, tuple[str, ...], int, float | None]


def ledger_identity(spec: LedgerSpec) -> LedgerIdentity:
    """What makes two policies' ledgers one: where it is and what the operator trusts of it
    (the same fields LedgerAccess keys its verifying clients and revocation indexes on)."""
    return (
        spec.url,
        spec.verifier_key,
        spec.expected_origin,
        tuple(sorted(spec.witnesses)),
        spec.witness_quorum,
        spec.max_cosignature_age,
    )


@dataclass(frozen=True)
class ParsedPolicy:
    policy: TrustPolicy
    keys: TrustedKeys


@dataclass(frozen=True)
class ServingModel:
    """A ModelDeployment's serving version as its status records it."""

    namespace: str
    name: str
    uid: str
    policy: str
    digest: str
    signer_key_ids: tuple[str, ...]
    body: Body = field(compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"


def _revoked(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == REVOKED and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def serving_models(bodies: Iterable[Body]) -> list[ServingModel]:
    """The ModelDeployments serving a verified version that a revocation could still act on:
    not being deleted, and not already flagged revoked (acting again would change nothing)."""
    found = []
    for body in bodies:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        digest = status.get("servingDigest")
        if not digest or meta.get("deletionTimestamp") or _revoked(status):
            continue
        found.append(
            ServingModel(
                namespace=str(meta.get("namespace") or ""),
                name=str(meta.get("name") or ""),
                uid=str(meta.get("uid") or ""),
                policy=str((body.get("spec") or {}).get("policy") or DEFAULT_POLICY),
                digest=str(digest),
                signer_key_ids=tuple(str(k) for k in status.get("signerKeyIds") or ()),
                body=body,
            )
        )
    return found


def affected(
    revocations: Sequence[LoggedEntry],
    serving: Iterable[ServingModel],
    keys_by_policy: Mapping[str, TrustedKeys],
) -> list[ServingModel]:
    """The serving models that one of `revocations` counts against under their policy's
    authority rule (chain.trust): a valid signature by a publisher of the policy, and a key
    revocation signed by that key, or a digest revocation signed by a key whose
    registration of the digest counted for the model. Models whose policy is not in
    `keys_by_policy` (another ledger's, or unknown) are not considered."""
    if not revocations:
        return []
    facts = {
        name: check_revocations(revocations, keys.policy) for name, keys in keys_by_policy.items()
    }
    return [
        m
        for m in serving
        if m.policy in facts and applicable_revocations(m.digest, m.signer_key_ids, facts[m.policy])
    ]


def parse_policies(bodies: Mapping[str, Body]) -> dict[str, ParsedPolicy]:
    """The valid policies among `bodies` (by name), each with its keys; invalid ones are
    left out (their models are judged by nobody until fixed, as everywhere else)."""
    parsed = {}
    for name, body in bodies.items():
        try:
            policy = parse_trust_policy(body)
            keys = TrustedKeys.from_policy(policy)
            WitnessRequirement.from_ledger(policy.ledger)
        except SpecError:
            continue
        parsed[name] = ParsedPolicy(policy, keys)
    return parsed


def ledgers_named(policies: Mapping[str, ParsedPolicy]) -> dict[LedgerIdentity, LedgerSpec]:
    """One ledger spec per distinct ledger the policies name."""
    found: dict[LedgerIdentity, LedgerSpec] = {}
    for name in sorted(policies):
        spec = policies[name].policy.ledger
        found.setdefault(ledger_identity(spec), spec)
    return found


def next_delay(failures: int, settings: FollowSettings) -> float:
    """The poll interval, doubled per consecutive failure, at most `max_backoff`."""
    if failures <= 0:
        return settings.interval
    return min(settings.max_backoff, settings.interval * 2.0 ** min(failures, 20))


# --- one ledger ---------------------------------------------------------------------------------


class LedgerTail(Protocol):
    """What a follower reads of one ledger (AccessTail: the operator's LedgerAccess)."""

    @property
    def name(self) -> str: ...

    async def checkpoint(self) -> VerifiedCheckpoint:
        """The ledger's checkpoint, verified and proven consistent with the trusted one;
        raises LedgerInconsistent or LedgerUnverified."""
        ...

    async def read_to(self, checkpoint: VerifiedCheckpoint) -> None:
        """Read the log up to the verified `checkpoint` (only new entries); raises as above."""
        ...

    def revocations_since(self, start: int) -> tuple[Sequence[LoggedEntry], int]: ...


class AccessTail:
    """A ledger as the operator reads it everywhere else: LedgerAccess's verifying client,
    trust store and revocation index for `spec`."""

    def __init__(self, access: LedgerAccess, spec: LedgerSpec) -> None:
        self.access = access
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.url

    async def checkpoint(self) -> VerifiedCheckpoint:
        return await self.access.checkpoint(self.spec)

    async def read_to(self, checkpoint: VerifiedCheckpoint) -> None:
        try:
            await self.access.index(self.spec).advance(self.access.client(self.spec), checkpoint)
        except ChainError as exc:
            raise classify(exc) from exc

    def revocations_since(self, start: int) -> tuple[Sequence[LoggedEntry], int]:
        return self.access.index(self.spec).revocations_since(start)


class Step(StrEnum):
    UNCHANGED = "unchanged"  # verified; no revocation new to this follower
    REVOCATIONS = "revocations"  # verified; new revocations were dispatched
    UNAVAILABLE = "unavailable"  # no verified answer (down, refused, did not verify)
    INCONSISTENT = "inconsistent"  # rollback or fork against the trusted checkpoint
    DISPATCH_FAILED = "dispatch-failed"  # read, but acting on it failed: retried


class Follower:
    """Follows one ledger: poll the checkpoint, read the new entries, dispatch revocations.

    `dispatch` receives the revocations new to this follower (ledger order) and acts on
    them; if it raises, the same revocations are offered again at the next step."""

    def __init__(
        self,
        tail: LedgerTail,
        dispatch: Callable[[Sequence[LoggedEntry]], Awaitable[None]],
        settings: FollowSettings,
        report: Callable[[Step], None] | None = None,
    ) -> None:
        self.tail = tail
        self.dispatch = dispatch
        self.settings = settings
        self.report = report  # told every step's outcome (the ledger_up metric)
        self.checkpoint_size: int | None = None  # the newest checkpoint this follower verified
        self.cursor = 0  # revocations below this ledger index were dispatched
        self.failures = 0
        self._down_since: float | None = None

    async def step(self) -> Step:
        outcome = await self._step()
        if self.report is not None:
            self.report(outcome)
        return outcome

    async def _step(self) -> Step:
        try:
            checkpoint = await self.tail.checkpoint()
            await self.tail.read_to(checkpoint)
        except LedgerInconsistent as exc:
            return self._failed(Step.INCONSISTENT, exc)
        except LedgerUnverified as exc:
            return self._failed(Step.UNAVAILABLE, exc)
        self.checkpoint_size = checkpoint.size
        found, covered = self.tail.revocations_since(self.cursor)
        if found:
            try:
                await self.dispatch(found)
            except Exception:  # the same revocations are offered again next time
                log.exception("%s: acting on %d new revocation(s) failed; retrying",
                              self.tail.name, len(found))  # fmt: skip
                self.failures += 1
                return Step.DISPATCH_FAILED
        self.cursor = max(self.cursor, covered)
        self._recovered()
        return Step.REVOCATIONS if found else Step.UNCHANGED

    def _failed(self, step: Step, exc: Exception) -> Step:
        self.failures += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            if step is Step.INCONSISTENT:
                log.error("LEDGER INCONSISTENT (%s): following stopped acting, retrying with "
                          "back-off up to %g s: %s", self.tail.name, self.settings.max_backoff,
                          exc)  # fmt: skip
            else:
                log.warning("ledger %s: no verified checkpoint (%s); retrying with back-off up "
                            "to %g s, the timer still re-verifies", self.tail.name, exc,
                            self.settings.max_backoff)  # fmt: skip
        return step

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.info("ledger %s: following again after %.0f s (%d failed polls)",
                     self.tail.name, time.monotonic() - self._down_since,
                     self.failures)  # fmt: skip
        self._down_since = None
        self.failures = 0

    async def run(self) -> None:
        """Step forever (until cancelled); never raises anything else."""
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not end following nor the operator
                log.exception("following ledger %s: unexpected error", self.tail.name)
                self.failures += 1
            await asyncio.sleep(next_delay(self.failures, self.settings))


# --- every ledger the policies name -------------------------------------------------------------


class Followers:
    """One Follower per distinct ledger named by a valid policy, started and stopped as the
    policies (as the policy watch delivered them) change.

    `policies()`: the policy bodies by name; `list_model_deployments()`: every
    ModelDeployment the operator serves; `reverify(body)`: the timer's re-verification of
    one ModelDeployment, now."""

    def __init__(
        self,
        access: LedgerAccess,
        policies: Callable[[], Mapping[str, Body]],
        list_model_deployments: Callable[[], Awaitable[list[dict[str, Any]]]],
        reverify: Reverify,
        settings: FollowSettings,
        tail: Callable[[LedgerSpec], LedgerTail] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.access = access
        self.policies = policies
        self.list_model_deployments = list_model_deployments
        self.reverify = reverify
        self.settings = settings
        self._tail = tail or (lambda spec: AccessTail(access, spec))
        self._parsed: dict[str, tuple[tuple[str, int], ParsedPolicy | None]] = {}
        self.followers: dict[LedgerIdentity, Follower] = {}
        self._tasks: dict[LedgerIdentity, asyncio.Task[None]] = {}

    def current_policies(self) -> dict[str, ParsedPolicy]:
        """The valid policies, parsed once per (uid, generation)."""
        bodies = self.policies()
        for name in list(self._parsed):
            if name not in bodies:
                del self._parsed[name]
        result = {}
        for name, body in bodies.items():
            meta = body.get("metadata") or {}
            version = (str(meta.get("uid") or ""), int(meta.get("generation") or 0))
            cached = self._parsed.get(name)
            if cached is None or cached[0] != version:
                cached = (version, parse_policies({name: body}).get(name))
                self._parsed[name] = cached
            if cached[1] is not None:
                result[name] = cached[1]
        return result

    def sync(self) -> None:
        """Start a follower for each ledger newly named, stop those no policy names."""
        wanted = ledgers_named(self.current_policies())
        for identity in list(self._tasks):
            if identity not in wanted:
                log.info("ledger %s: no policy names it any more; stopped following", identity[0])
                self._tasks.pop(identity).cancel()
                self.followers.pop(identity, None)
                if self.metrics is not None:
                    with contextlib.suppress(KeyError):
                        self.metrics.ledger_up.remove(identity[0])
        for identity, spec in wanted.items():
            if identity in self._tasks:
                continue
            follower = Follower(
                self._tail(spec), self._dispatcher(identity), self.settings,
                self._reporter(identity[0]),
            )  # fmt: skip
            self.followers[identity] = follower
            self._tasks[identity] = asyncio.create_task(follower.run(), name=f"follow {spec.url}")
            log.info(
                "following ledger %s (checkpoint every %g s)", spec.url, self.settings.interval
            )

    def _reporter(self, url: str) -> Callable[[Step], None] | None:
        metrics = self.metrics
        if metrics is None:
            return None
        gauge = metrics.ledger_up.labels(ledger=url)

        def report(step: Step) -> None:
            gauge.set(0 if step in (Step.UNAVAILABLE, Step.INCONSISTENT) else 1)

        return report

    def _dispatcher(
        self, identity: LedgerIdentity
    ) -> Callable[[Sequence[LoggedEntry]], Awaitable[None]]:
        async def dispatch(revocations: Sequence[LoggedEntry]) -> None:
            await self.act_on(identity, revocations)

        return dispatch

    async def act_on(self, identity: LedgerIdentity, revocations: Sequence[LoggedEntry]) -> None:
        """Re-verify now every serving ModelDeployment that `revocations` count against."""
        policies = {
            name: p.keys
            for name, p in self.current_policies().items()
            if ledger_identity(p.policy.ledger) == identity
        }
        if not policies:
            return
        serving = serving_models(await self.list_model_deployments())
        hits = affected(revocations, serving, policies)
        indices = ", ".join(str(le.index) for le in revocations[:10])
        log.info("ledger %s: revocation(s) at index %s%s affect %d serving ModelDeployment(s)",
                 identity[0], indices, " ..." if len(revocations) > 10 else "",
                 len(hits))  # fmt: skip
        gate = asyncio.Semaphore(DISPATCH_CONCURRENCY)

        async def one(m: ServingModel) -> None:
            async with gate:
                try:
                    result = await self.reverify(m.body)
                except Exception:  # one object's failure must not stop the others
                    log.exception("re-verifying %s after a revocation failed", m.where)
                    return
                log.info("%s re-verified after a revocation: %s", m.where, result)

        await asyncio.gather(*(one(m) for m in hits))

    async def run(self) -> None:
        """Keep the followers matching the policies until cancelled."""
        try:
            while True:
                try:
                    self.sync()
                except Exception:  # retried at the next round
                    log.exception("updating the ledger followers failed")
                await asyncio.sleep(max(self.settings.interval, 0.2))
        finally:
            await self.stop()

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self.followers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- the operator's re-verification, as the follower calls it ------------------------------------


async def reverify_now(deps: Deps, body: Body, watched: Mapping[str, Mapping[str, Any]]) -> str:
    """Re-verify the serving version of `body` now, exactly as the timer does when due
    (reverify.reverify_serving under the policy the watch delivered)."""
    try:
        md = parse_model_deployment(body)
        policy, keys = await load_policy(deps, md, watched=watched)
    except SpecError as exc:
        return f"not re-verified (the timer reports it): {exc}"
    return await reverify_serving(deps, body, policy, keys, force=True)


async def served_model_deployments(deps: Deps) -> list[dict[str, Any]]:
    """Every ModelDeployment in the namespaces the operator serves (one list call each)."""
    found: list[dict[str, Any]] = []
    scopes: list[str | None] = list(deps.namespaces) or [None]
    for ns in scopes:
        found += await deps.kube.list_model_deployments(ns)
    return found


def start(
    deps: Deps,
    settings: FollowSettings,
    policies: Callable[[], Mapping[str, Mapping[str, Any]]],
) -> asyncio.Task[None] | None:
    """The operator's followers as one background task (None when following is off)."""
    if not settings.enabled:
        log.info("ledger following is off (MODELTRUST_LEDGER_FOLLOW_INTERVAL=0): revocations "
                 "reach serving models on the re-verification timer only")  # fmt: skip
        return None
    followers = Followers(
        deps.ledger,
        policies,
        lambda: served_model_deployments(deps),
        lambda body: reverify_now(deps, body, policies()),
        settings,
        metrics=deps.metrics,
    )
    return asyncio.create_task(followers.run(), name="ledger followers")
