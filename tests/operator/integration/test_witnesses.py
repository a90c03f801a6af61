"""The operator's ledger access against a real ledger with two real witnesses (each a
`modeltrust.chain.witness.WitnessService` copying the ledger and cosigning its checkpoints).

A policy asking 2 of 2 cosignatures is answered while both witnesses run, and refused,
naming the missing witness, while one is down; with maxCosignatureAge, a checkpoint whose
cosignatures aged past it is refused naming each witness and the age of its cosignature;
a witness's copy edited on disk, read as the policy's ledger, fails closed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from harness.config_maps import ConfigMaps
from harness.ledger import TOKEN, LedgerKeys, LedgerThread, audit, make_keys, service_config
from harness.waiting import wait_for
from harness.witness import WitnessSetup, WitnessThread
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.signatures import public_key_pem, sign_registration
from modeltrust.operator.decisions import (
    ArtifactResult,
    Evidence,
    LoadResult,
    Reason,
    Verdict,
    decide,
)
from modeltrust.operator.errors import LedgerUnwitnessed
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess, LedgerEvidence
from modeltrust.operator.types import TrustPolicy, parse_trust_policy

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "cd" * 32


class Witnessed:
    """A ledger sending its checkpoints to witnesses a and b (restartable, same ports)."""

    def __init__(self, keys: LedgerKeys, tmp_path: Path) -> None:
        self.keys = keys
        self.setups = {n: WitnessSetup(f"witness-{n}.test", tmp_path / f"w-{n}") for n in "ab"}
        cfg = service_config(
            keys,
            tmp_path / "ledger.db",
            witnesses=tuple(s.endpoint() for s in self.setups.values()),
            witness_timeout=1.0,
            witness_refresh=0.5,
        )
        self.ledger = LedgerThread(cfg)
        self.running: dict[str, WitnessThread] = {}

    def start(self, name: str) -> None:
        setup = self.setups[name]
        thread = WitnessThread(setup.config(self.ledger.url, self.keys.signer.verifier()))
        self.running[name] = thread.__enter__()

    def stop(self, name: str) -> None:
        self.running.pop(name).__exit__(None, None, None)

    def cosigned_by(self, count: int) -> bool:
        with LedgerClient(self.ledger.url, verifier_key=self.keys.verifier_key) as c:
            note = c.checkpoint().note
        return note.count("\u2014 witness-") == count

    def policy(self, url: str | None = None, **ledger: Any) -> TrustPolicy:
        return parse_trust_policy(
            {
                "metadata": {"name": "p", "generation": 1},
                "spec": {
                    "ledger": {
                        "url": url or self.ledger.url,
                        "verifierKey": self.keys.verifier_key,
                        "witnesses": [s.verifier_key for s in self.setups.values()],
                        "witnessQuorum": 2,
                        **ledger,
                    },
                    "publishers": [
                        {
                            "name": "acme",
                            "publicKey": public_key_pem(self.keys.publisher.public_key()).decode(),
                        }
                    ],
                },
            }
        )


@pytest.fixture
def witnessed(tmp_path: Path) -> Iterator[Witnessed]:
    w = Witnessed(make_keys(tmp_path / "k"), tmp_path)
    with w.ledger:
        try:
            for name in "ab":
                w.start(name)
            with LedgerClient(w.ledger.url, verifier_key=w.keys.verifier_key, token=TOKEN) as c:
                reg = sign_registration(
                    w.keys.publisher, name="resnet", version="v1", digest=DIGEST, size=10
                )
                c.append(reg)
                c.append_many([audit(i) for i in range(5)])
            wait_for("both witnesses to cosign", lambda: w.cosigned_by(2), timeout=20)
            yield w
        finally:
            for name in list(w.running):
                w.stop(name)


def access() -> LedgerAccess:
    return LedgerAccess(cast(Kube, ConfigMaps()), "modeltrust-system", lambda: TOKEN, timeout=10)


def decide_on(ev: LedgerEvidence, policy: TrustPolicy) -> Any:
    return decide(
        Evidence(
            DIGEST, "resnet", "v1", ArtifactResult(DIGEST, 10), LoadResult(ok=True),
            ev.registrations, ev.revocations, ev.error, ev.unwitnessed, ev.inconsistent,
        ),
        policy,
    )  # fmt: skip


async def test_two_of_two_is_met_while_both_witnesses_cosign(witnessed: Witnessed) -> None:
    policy = witnessed.policy(maxCosignatureAge="10m")
    la = access()
    try:
        ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, "resnet")
        assert (ev.error, ev.unwitnessed) == (None, None)
        assert decide_on(ev, policy).verdict is Verdict.ALLOWED
    finally:
        await la.close()


async def test_two_of_two_with_a_witness_down_fails_closed_naming_it(
    witnessed: Witnessed,
) -> None:
    witnessed.stop("b")
    with LedgerClient(witnessed.ledger.url, verifier_key=witnessed.keys.verifier_key,
                      token=TOKEN) as c:  # fmt: skip
        c.append(audit(50))  # a new checkpoint: b cannot cosign it
    policy = witnessed.policy()
    la = access()
    try:
        ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, "resnet")
        assert ev.unwitnessed is not None
        assert "not cosigned by 2 of the policy's 2 witness(es)" in ev.unwitnessed
        assert "witness-a.test cosigned it" in ev.unwitnessed
        assert "witness-b.test did not cosign it" in ev.unwitnessed
        decision = decide_on(ev, policy)
        assert decision.verdict is Verdict.REFUSED
        assert decision.findings[0].reason is Reason.WITNESS_QUORUM_NOT_MET
        # It catches up and cosigns once it is back: the same access then succeeds.
        witnessed.start("b")
        wait_for("b to cosign again", lambda: witnessed.cosigned_by(2), timeout=20)
        ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, "resnet")
        assert (ev.error, ev.unwitnessed) == (None, None)
    finally:
        await la.close()


async def test_cosignatures_older_than_max_cosignature_age_do_not_count(
    witnessed: Witnessed,
) -> None:
    policy = witnessed.policy(maxCosignatureAge="3s")
    la = access()
    try:
        assert (await la.checkpoint(policy.ledger)).size == 6
        # b stops: the ledger keeps its last cosignature on the unchanged checkpoint, which
        # ages; a's is renewed every 0.5 s.
        witnessed.stop("b")
        refused = await first_refusal(la, policy, within=10)
        message = str(refused)
        assert "within maxCosignatureAge 3s" in message
        assert "witness-b.test cosigned it" in message
        assert "(too old)" in message
        assert "frozen view" in message
        ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, "resnet")
        assert ev.unwitnessed is not None
        assert decide_on(ev, policy).verdict is Verdict.REFUSED
        # A policy without a maximum age still takes the (older) cosignatures.
        assert (await la.checkpoint(witnessed.policy().ledger)).size == 6
    finally:
        await la.close()


async def first_refusal(la: LedgerAccess, policy: TrustPolicy, within: float) -> LedgerUnwitnessed:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await la.checkpoint(policy.ledger)
        except LedgerUnwitnessed as exc:
            return exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"the checkpoint was still accepted after {within} s")


async def test_a_tampered_witness_copy_read_as_the_ledger_fails_closed(
    witnessed: Witnessed,
) -> None:
    b = witnessed.setups["b"]

    def served_with_both() -> bool:
        with LedgerClient(b.url, verifier_key=witnessed.keys.verifier_key) as c:
            return c.checkpoint().note.count("\u2014 witness-") == 2

    # b serves the checkpoint with its own cosignature and a's (read from the ledger).
    wait_for("b to serve both cosignatures", served_with_both, timeout=20)
    with sqlite3.connect(b.state_dir / "copy.db") as conn:
        conn.execute("UPDATE entries SET data = CAST(? AS BLOB) WHERE idx = 2", (b'{"x":1}',))
    policy = witnessed.policy(url=b.url)  # the operator reads the log from the witness b
    la = access()
    try:
        ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, "resnet")
        assert ev.error is not None
        assert "entry 2" in ev.error
        assert decide_on(ev, policy).verdict is Verdict.REFUSED
    finally:
        await la.close()
