"""The ledger follower against a real ledger, through the operator's own LedgerAccess
(verifying client, trusted-checkpoint store, revocation index): each new checkpoint is
verified and proven consistent with the trusted one, which moves forward; only the new
entries are read; a revocation is offered once. A stopped and restarted ledger, a
forked one, and one whose range reads drop a revocation dispatch nothing.

The trusted checkpoint's ConfigMap lives in a dict here (harness.config_maps).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from harness.config_maps import ConfigMaps
from harness.ledger import (
    TOKEN,
    LedgerKeys,
    LedgerThread,
    audit,
    free_port,
    make_keys,
    service_config,
)
from harness.tampering_proxy import TamperingProxy, drop_revocations_from_range_reads
from modeltrust.chain.client import LedgerClient, LoggedEntry
from modeltrust.chain.signatures import sign_registration, sign_revocation
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess
from modeltrust.operator.ledger_follower import AccessTail, Follower, FollowSettings, Step
from modeltrust.operator.trust_store import DATA_KEY
from modeltrust.operator.types import LedgerSpec

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "ab" * 32
SETTINGS = FollowSettings(interval=0.05, max_backoff=0.2)


@dataclass
class Recorder:
    batches: list[list[int]] = field(default_factory=list)

    async def __call__(self, found: Sequence[LoggedEntry]) -> None:
        self.batches.append([le.index for le in found])


@pytest.fixture
def keys(tmp_path: Path) -> LedgerKeys:
    return make_keys(tmp_path / "k")


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def ledger(keys: LedgerKeys, tmp_path: Path, port: int) -> Iterator[LedgerThread]:
    with LedgerThread(service_config(keys, tmp_path / "l.db", port=port)) as running:
        yield running


def append(url: str, keys: LedgerKeys, *entries: Any) -> list[int]:
    with LedgerClient(url, verifier_key=keys.verifier_key, token=TOKEN) as c:
        return [c.append(e).index for e in entries]


def registration(keys: LedgerKeys) -> Any:
    return sign_registration(keys.publisher, name="resnet", version="1", digest=DIGEST, size=9)


def revocation(keys: LedgerKeys) -> Any:
    return sign_revocation(keys.publisher, target_kind="digest", target=DIGEST, reason="poisoned")


def trusted_size(config_maps: ConfigMaps) -> int:
    (cm,) = config_maps.items.values()
    return int(json.loads(cm["data"][DATA_KEY])["size"])


async def test_new_checkpoints_move_trust_and_only_new_revocations_are_offered(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    append(ledger.url, keys, registration(keys), audit(1))
    config_maps = ConfigMaps()
    access = LedgerAccess(cast(Kube, config_maps), "modeltrust-system", lambda: TOKEN)
    spec = LedgerSpec(ledger.url, keys.verifier_key)
    seen = Recorder()
    follower = Follower(AccessTail(access, spec), seen, SETTINGS)
    try:
        assert await follower.step() is Step.UNCHANGED
        assert trusted_size(config_maps) == 2
        assert access.index(spec).size == 2

        (rev,) = append(ledger.url, keys, revocation(keys))
        append(ledger.url, keys, audit(2), audit(3))
        assert await follower.step() is Step.REVOCATIONS
        assert seen.batches == [[rev]]
        assert trusted_size(config_maps) == 5  # proven consistent with 2, then stored
        assert access.index(spec).size == 5

        assert await follower.step() is Step.UNCHANGED
        append(ledger.url, keys, audit(4))
        assert await follower.step() is Step.UNCHANGED  # an audit entry: nothing to offer
        assert seen.batches == [[rev]]
    finally:
        await access.close()


async def test_a_stopped_ledger_backs_off_and_what_was_appended_meanwhile_is_offered(
    keys: LedgerKeys, tmp_path: Path, port: int
) -> None:
    config = service_config(keys, tmp_path / "l.db", port=port)
    access = LedgerAccess(cast(Kube, ConfigMaps()), "modeltrust-system", lambda: TOKEN)
    spec = LedgerSpec(f"http://127.0.0.1:{port}", keys.verifier_key)
    seen = Recorder()
    follower = Follower(AccessTail(access, spec), seen, SETTINGS)
    try:
        with LedgerThread(config) as running:
            append(running.url, keys, registration(keys))
            assert await follower.step() is Step.UNCHANGED
        assert await follower.step() is Step.UNAVAILABLE
        assert await follower.step() is Step.UNAVAILABLE
        assert follower.failures == 2
        with LedgerThread(service_config(keys, tmp_path / "l.db", port=port)) as running:
            (rev,) = append(running.url, keys, revocation(keys))
            assert await follower.step() is Step.REVOCATIONS
            assert seen.batches == [[rev]]
            assert follower.failures == 0
    finally:
        await access.close()


async def test_a_forked_ledger_is_inconsistent_and_offers_nothing(
    keys: LedgerKeys, ledger: LedgerThread, tmp_path: Path
) -> None:
    config_maps = ConfigMaps()
    honest = LedgerAccess(cast(Kube, config_maps), "modeltrust-system", lambda: TOKEN)
    append(ledger.url, keys, registration(keys), audit(1))
    first = Follower(
        AccessTail(honest, LedgerSpec(ledger.url, keys.verifier_key)), Recorder(), SETTINGS
    )
    assert await first.step() is Step.UNCHANGED
    await honest.close()
    # The same ledger key signs another history (longer, and with a revocation): a fork.
    with LedgerThread(service_config(keys, tmp_path / "fork.db")) as fork:
        append(fork.url, keys, audit(7), registration(keys), revocation(keys))
        restarted = LedgerAccess(cast(Kube, config_maps), "modeltrust-system", lambda: TOKEN)
        seen = Recorder()
        follower = Follower(
            AccessTail(restarted, LedgerSpec(fork.url, keys.verifier_key)), seen, SETTINGS
        )
        try:
            assert await follower.step() is Step.INCONSISTENT
            assert await follower.step() is Step.INCONSISTENT
            assert seen.batches == []
            assert trusted_size(config_maps) == 2
        finally:
            await restarted.close()


async def test_range_reads_that_drop_a_revocation_offer_nothing(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    append(ledger.url, keys, registration(keys), revocation(keys))
    with TamperingProxy(ledger.url, drop_revocations_from_range_reads) as proxy:
        access = LedgerAccess(cast(Kube, ConfigMaps()), "modeltrust-system", lambda: TOKEN)
        seen = Recorder()
        follower = Follower(
            AccessTail(access, LedgerSpec(proxy.url, keys.verifier_key)), seen, SETTINGS
        )
        try:
            assert await follower.step() is Step.UNAVAILABLE
            assert seen.batches == []
            assert follower.cursor == 0
        finally:
            await access.close()
