"""The ledger follower's pure parts: which new revocations affect which serving models (the
core's authority rule), and one follower's steps (verified checkpoint, then the new
entries, then dispatch; back-off, logged once; an inconsistent ledger dispatches nothing).
Against a real ledger: tests/operator/integration/test_ledger_follower.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from modeltrust.chain.checkpoint import Checkpoint
from modeltrust.chain.client import LoggedEntry, VerifiedCheckpoint
from modeltrust.chain.entries import Revocation
from modeltrust.chain.signatures import generate_private_key, key_id, public_key_pem
from modeltrust.chain.signatures import sign_revocation as sign
from modeltrust.operator.config import OperatorConfig
from modeltrust.operator.errors import ConfigError, LedgerInconsistent, LedgerUnverified
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.ledger_follower import (
    Follower,
    Followers,
    FollowSettings,
    LedgerTail,
    ServingModel,
    Step,
    affected,
    ledger_identity,
    next_delay,
    parse_policies,
    serving_models,
)
from modeltrust.operator.types import LedgerSpec, parse_trust_policy

pytestmark = pytest.mark.unit

A = generate_private_key("ed25519")
B = generate_private_key("ed25519")
OUTSIDER = generate_private_key("ed25519")
KID_A, KID_B = key_id(A.public_key()), key_id(B.public_key())
DIGEST_1 = "sha256:" + "11" * 32
DIGEST_2 = "sha256:" + "22" * 32
VERIFIER = "ledger.example+7c3d1a2b+AQID" + "A" * 40


def policy_body(name: str, url: str = "http://ledger-1:8080", *keys: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "generation": 1, "uid": f"uid-{name}"},
        "spec": {
            "ledger": {"url": url, "verifierKey": VERIFIER},
            "publishers": [
                {"name": f"p{i}", "publicKey": public_key_pem(k.public_key()).decode()}
                for i, k in enumerate(keys or (A, B))
            ],
        },
    }


def keys_of(body: dict[str, Any]) -> TrustedKeys:
    return TrustedKeys.from_policy(parse_trust_policy(body))


def md(
    name: str, digest: str, signers: Sequence[str], policy: str = "default", **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"policy": policy},
        "status": {"servingDigest": digest, "signerKeyIds": list(signers), **status},
    }


def revocation(index: int, key: Any, kind: str, target: str) -> LoggedEntry:
    return LoggedEntry(index, sign(key, target_kind=kind, target=target, reason="bad"), b"")


def names(models: Sequence[ServingModel]) -> list[str]:
    return [m.name for m in models]


SERVING = serving_models(
    [
        md("a1", DIGEST_1, [KID_A]),  # registered by A
        md("a2", DIGEST_2, [KID_A]),
        md("b1", DIGEST_1, [KID_B]),  # same bytes, but only B's registration counted for it
        md("ab", DIGEST_2, [KID_A, KID_B]),
    ]
)
KEYS = {"default": keys_of(policy_body("default"))}


# --- which models a revocation affects ----------------------------------------------------------


def test_a_digest_revocation_affects_the_models_whose_counted_signer_signed_it() -> None:
    hits = affected([revocation(5, A, "digest", DIGEST_1)], SERVING, KEYS)
    assert names(hits) == ["a1"]  # b1 serves the same digest, vouched for by B only
    assert names(affected([revocation(5, B, "digest", DIGEST_2)], SERVING, KEYS)) == ["ab"]


def test_a_key_revocation_counts_only_when_signed_by_that_key() -> None:
    assert names(affected([revocation(5, A, "key", KID_A)], SERVING, KEYS)) == ["a1", "a2", "ab"]
    assert affected([revocation(5, B, "key", KID_A)], SERVING, KEYS) == []  # not B's to revoke


def test_a_revocation_outside_the_policy_or_with_a_bad_signature_affects_nothing() -> None:
    assert affected([revocation(5, OUTSIDER, "digest", DIGEST_1)], SERVING, KEYS) == []
    forged = revocation(6, A, "digest", DIGEST_1)
    assert isinstance(forged.entry, Revocation)
    bad = LoggedEntry(6, dataclasses.replace(forged.entry, reason="edited"), b"")
    assert affected([bad], SERVING, KEYS) == []


def test_models_of_another_ledgers_policy_are_not_considered() -> None:
    other = serving_models([md("o1", DIGEST_1, [KID_A], policy="elsewhere")])
    assert affected([revocation(5, A, "digest", DIGEST_1)], other, KEYS) == []


def test_only_serving_models_not_yet_revoked_or_deleted_are_candidates() -> None:
    revoked = md("r", DIGEST_1, [KID_A], conditions=[{"type": "Revoked", "status": "True"}])
    deleting = md("d", DIGEST_1, [KID_A])
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pending: dict[str, Any] = {"metadata": {"name": "p", "namespace": "ml"}, "spec": {}}
    flagged_false = md("f", DIGEST_1, [KID_A], conditions=[{"type": "Revoked", "status": "False"}])
    found = serving_models([revoked, deleting, pending, flagged_false])
    assert names(found) == ["f"]
    assert found[0].policy == "default"
    assert found[0].signer_key_ids == (KID_A,)


def test_one_identity_per_ledger_and_invalid_policies_are_left_out() -> None:
    bad = policy_body("bad")
    bad["spec"]["publishers"][0]["publicKey"] = "not a key"
    parsed = parse_policies(
        {
            "p1": policy_body("p1"),
            "p2": policy_body("p2", "http://ledger-1:8080", A),  # same ledger, other keys
            "p3": policy_body("p3", "http://ledger-2:8080"),
            "bad": bad,
        }
    )
    assert sorted(parsed) == ["p1", "p2", "p3"]
    identities = {ledger_identity(p.policy.ledger) for p in parsed.values()}
    assert len(identities) == 2
    w1 = LedgerSpec("u", VERIFIER, witnesses=("x", "y"), witness_quorum=1)
    w2 = LedgerSpec("u", VERIFIER, witnesses=("y", "x"), witness_quorum=1)
    assert ledger_identity(w1) == ledger_identity(w2)
    assert ledger_identity(w1) != ledger_identity(LedgerSpec("u", VERIFIER))


def settings_from_env(environ: dict[str, str]) -> FollowSettings:
    return FollowSettings.from_config(OperatorConfig.from_env(environ))


def test_settings_and_back_off() -> None:
    s = settings_from_env({})
    assert (s.interval, s.max_backoff, s.enabled) == (1.0, 30.0, True)
    assert not settings_from_env({"MODELTRUST_LEDGER_FOLLOW_INTERVAL": "0"}).enabled
    with pytest.raises(ConfigError, match="MODELTRUST_LEDGER_FOLLOW_INTERVAL"):
        settings_from_env({"MODELTRUST_LEDGER_FOLLOW_INTERVAL": "soon"})
    with pytest.raises(ConfigError, match="MODELTRUST_LEDGER_FOLLOW_MAX_BACKOFF"):
        settings_from_env({"MODELTRUST_LEDGER_FOLLOW_MAX_BACKOFF": "-1"})
    assert [next_delay(n, s) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


# --- one follower's steps -----------------------------------------------------------------------


def checkpoint(size: int) -> VerifiedCheckpoint:
    return VerifiedCheckpoint(Checkpoint("ledger.example", size, bytes([size]) * 32), "note")


@dataclass
class FakeTail:
    """A ledger whose checkpoint, reads and failures the test scripts. `revocations` are
    what the index holds once read up to a size."""

    size: int = 0
    revocations: list[LoggedEntry] = field(default_factory=list)
    fail_checkpoint: Exception | None = None
    fail_read: Exception | None = None
    read: int = 0  # the size the index covers
    calls: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "http://ledger.test"

    async def checkpoint(self) -> VerifiedCheckpoint:
        self.calls.append("checkpoint")
        if self.fail_checkpoint is not None:
            raise self.fail_checkpoint
        return checkpoint(self.size)

    async def read_to(self, to: VerifiedCheckpoint) -> None:
        self.calls.append(f"read_to {to.size}")
        if self.fail_read is not None:
            raise self.fail_read
        self.read = max(self.read, to.size)

    def revocations_since(self, start: int) -> tuple[list[LoggedEntry], int]:
        return [r for r in self.revocations if start <= r.index < self.read], self.read


@dataclass
class Recorder:
    batches: list[list[int]] = field(default_factory=list)
    fail: bool = False

    async def __call__(self, found: Sequence[LoggedEntry]) -> None:
        self.batches.append([le.index for le in found])
        if self.fail:
            raise RuntimeError("the API server is away")


SETTINGS = FollowSettings(interval=1.0, max_backoff=8.0)


async def test_a_new_checkpoint_is_verified_then_read_then_its_revocations_dispatched() -> None:
    tail = FakeTail(size=3, revocations=[revocation(1, A, "digest", DIGEST_1)])
    seen = Recorder()
    follower = Follower(tail, seen, SETTINGS)

    # Start: everything up to the first checkpoint is read; a revocation there is acted on
    # once (it may have been appended while the operator was down).
    assert await follower.step() is Step.REVOCATIONS
    assert tail.calls == ["checkpoint", "read_to 3"]
    assert seen.batches == [[1]]
    assert follower.cursor == 3
    assert follower.checkpoint_size == 3

    assert await follower.step() is Step.UNCHANGED  # same checkpoint: nothing new
    tail.size = 6
    tail.revocations += [revocation(4, A, "key", KID_A), revocation(5, B, "key", KID_B)]
    assert await follower.step() is Step.REVOCATIONS
    assert seen.batches == [[1], [4, 5]]  # only the new ones
    assert tail.calls[-2:] == ["checkpoint", "read_to 6"]


async def test_revocations_another_reader_brought_into_the_index_are_dispatched_too() -> None:
    tail = FakeTail(size=2)
    seen = Recorder()
    follower = Follower(tail, seen, SETTINGS)
    await follower.step()
    tail.read = 4  # a decision read the log up to a newer checkpoint meanwhile
    tail.revocations.append(revocation(3, A, "digest", DIGEST_1))
    assert await follower.step() is Step.REVOCATIONS
    assert seen.batches == [[3]]
    assert follower.cursor == 4


async def test_an_unavailable_ledger_backs_off_logs_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="modeltrust.operator.follow")
    tail = FakeTail(size=2)
    seen = Recorder()
    follower = Follower(tail, seen, SETTINGS)
    await follower.step()
    tail.fail_checkpoint = LedgerUnverified("connection refused")
    for expected in (1, 2, 3, 4):
        assert await follower.step() is Step.UNAVAILABLE
        assert follower.failures == expected
    assert next_delay(follower.failures, SETTINGS) == 8.0  # capped
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "connection refused" in warnings[0].getMessage()

    tail.fail_checkpoint = None
    tail.size = 5
    tail.revocations.append(revocation(3, A, "digest", DIGEST_1))
    assert await follower.step() is Step.REVOCATIONS  # what was appended meanwhile
    assert follower.failures == 0
    assert seen.batches == [[3]]
    assert any("following again" in r.getMessage() for r in caplog.records)


async def test_entries_that_do_not_verify_dispatch_nothing_and_move_nothing() -> None:
    tail = FakeTail(size=2)
    seen = Recorder()
    follower = Follower(tail, seen, SETTINGS)
    await follower.step()
    tail.size = 4
    tail.revocations.append(revocation(3, A, "digest", DIGEST_1))
    tail.fail_read = LedgerUnverified("entries 2..3 do not hash to the root")
    assert await follower.step() is Step.UNAVAILABLE
    assert seen.batches == []
    assert follower.cursor == 2
    assert follower.checkpoint_size == 2


async def test_an_inconsistent_ledger_is_refused_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tail = FakeTail(size=2, revocations=[revocation(1, A, "digest", DIGEST_1)])
    tail.fail_checkpoint = LedgerInconsistent("consistency proof from 2 to 3 fails")
    seen = Recorder()
    follower = Follower(tail, seen, SETTINGS)
    for _ in range(3):
        assert await follower.step() is Step.INCONSISTENT
    assert seen.batches == []
    assert tail.calls == ["checkpoint"] * 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "LEDGER INCONSISTENT" in errors[0].getMessage()


async def test_a_failed_dispatch_is_offered_again() -> None:
    tail = FakeTail(size=2, revocations=[revocation(1, A, "digest", DIGEST_1)])
    seen = Recorder(fail=True)
    follower = Follower(tail, seen, SETTINGS)
    assert await follower.step() is Step.DISPATCH_FAILED
    assert follower.cursor == 0
    assert follower.failures == 1
    seen.fail = False
    assert await follower.step() is Step.REVOCATIONS
    assert seen.batches == [[1], [1]]
    assert follower.cursor == 2
    assert follower.failures == 0


async def test_run_survives_anything_and_stops_only_when_cancelled() -> None:
    tail = FakeTail(size=1, fail_checkpoint=RuntimeError("a bug"))
    follower = Follower(tail, Recorder(), FollowSettings(interval=0.01, max_backoff=0.02))
    task = asyncio.create_task(follower.run())
    await asyncio.sleep(0.2)
    assert not task.done()
    assert len(tail.calls) >= 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- every ledger the policies name -------------------------------------------------------------


async def test_one_follower_per_ledger_started_and_stopped_with_the_policies() -> None:
    bodies: dict[str, dict[str, Any]] = {
        "p1": policy_body("p1"),
        "p2": policy_body("p2"),  # the same ledger
        "p3": policy_body("p3", "http://ledger-2:8080"),
    }
    tails: dict[str, FakeTail] = {}

    def tail(spec: LedgerSpec) -> LedgerTail:
        return tails.setdefault(spec.url, FakeTail(size=1))

    async def nothing() -> list[dict[str, Any]]:
        return []

    async def never(body: Any) -> str:
        raise AssertionError("nothing to re-verify")

    followers = Followers(
        cast(LedgerAccess, None), lambda: bodies, nothing, never,
        FollowSettings(interval=0.01), tail=tail,
    )  # fmt: skip
    followers.sync()
    assert sorted(i[0] for i in followers.followers) == [
        "http://ledger-1:8080",
        "http://ledger-2:8080",
    ]
    await asyncio.sleep(0.05)
    assert tails["http://ledger-1:8080"].calls  # polling
    del bodies["p1"]
    followers.sync()
    assert len(followers.followers) == 2  # p2 still names ledger-1
    del bodies["p2"]
    followers.sync()
    assert [i[0] for i in followers.followers] == ["http://ledger-2:8080"]
    polls = len(tails["http://ledger-1:8080"].calls)
    await asyncio.sleep(0.05)
    assert len(tails["http://ledger-1:8080"].calls) == polls  # stopped
    await followers.stop()
    assert followers.followers == {}


async def test_act_on_reverifies_exactly_the_affected_models_of_that_ledgers_policies() -> None:
    bodies = {
        "default": policy_body("default"),
        "elsewhere": policy_body("elsewhere", "http://ledger-2:8080"),
    }
    listed = [
        md("a1", DIGEST_1, [KID_A]),
        md("b1", DIGEST_1, [KID_B]),
        md("o1", DIGEST_1, [KID_A], policy="elsewhere"),  # another ledger
        md("gone", DIGEST_1, [KID_A], policy="deleted-policy"),
    ]
    done: list[str] = []

    async def list_all() -> list[dict[str, Any]]:
        return listed

    async def reverify(body: Any) -> str:
        done.append(body["metadata"]["name"])
        if body["metadata"]["name"] == "a1":
            raise RuntimeError("one failure does not stop the others")
        return "revoked"

    followers = Followers(
        cast(LedgerAccess, None), lambda: bodies, list_all, reverify, SETTINGS,
        tail=lambda spec: FakeTail(),
    )  # fmt: skip
    identity = ledger_identity(parse_trust_policy(bodies["default"]).ledger)
    await followers.act_on(identity, [revocation(7, A, "digest", DIGEST_1)])
    assert done == ["a1"]
    done.clear()
    await followers.act_on(
        identity, [revocation(8, A, "key", KID_A), revocation(9, B, "key", KID_B)]
    )
    assert sorted(done) == ["a1", "b1"]


async def test_ledger_up_says_whether_the_last_poll_got_a_verified_answer() -> None:
    from modeltrust.operator.metrics import Metrics

    bodies: dict[str, dict[str, Any]] = {"p1": policy_body("p1")}
    tail = FakeTail(size=1)

    async def nothing() -> list[dict[str, Any]]:
        return []

    async def never(body: Any) -> str:
        raise AssertionError("nothing to re-verify")

    metrics = Metrics()
    followers = Followers(
        cast(LedgerAccess, None), lambda: bodies, nothing, never,
        FollowSettings(interval=0.01), tail=lambda spec: tail, metrics=metrics,
    )  # fmt: skip

    def up() -> float | None:
        return metrics.registry.get_sample_value(
            "modeltrust_operator_ledger_up", {"ledger": "http://ledger-1:8080"}
        )

    followers.sync()
    follower = next(iter(followers.followers.values()))
    await follower.step()
    assert up() == 1
    tail.fail_checkpoint = LedgerUnverified("ledger at http://ledger-1:8080 did not answer")
    await follower.step()
    assert up() == 0
    tail.fail_checkpoint = LedgerInconsistent("rolled back")
    await follower.step()
    assert up() == 0
    tail.fail_checkpoint = None
    await follower.step()
    assert up() == 1
    del bodies["p1"]
    followers.sync()
    assert up() is None  # no policy names it: no series
    await followers.stop()
