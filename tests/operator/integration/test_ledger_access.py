"""The operator's ledger access against a real ledger, with a real proxy as the attacker.

A proxy that empties the revocation lookups does not hide a
revocation (revocations come from reading the log), and one that drops revocations from
the log itself makes the answer unverified (fail closed). A 409 is believed only when
the verified entry it names records the same decision. One client per ledger however
often the token rotates.

The trusted checkpoint's ConfigMap lives in a dict here (the ConfigMap API is the only
stand-in; the e2e tests run the same code against a real API server).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.config_maps import ConfigMaps
from harness.dead_ends import SilentServer, closed_port
from harness.ledger import TOKEN, LedgerKeys, LedgerThread, audit, make_keys, service_config
from harness.tampering_proxy import (
    TamperingProxy,
    drop_revocations_from_range_reads,
    edit_json,
    empty_revocation_lookups,
)
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import AuditEntry
from modeltrust.chain.signatures import key_id, public_key_pem, sign_registration, sign_revocation
from modeltrust.operator.decisions import (
    ArtifactResult,
    Evidence,
    LoadResult,
    Reason,
    Verdict,
    decide,
)
from modeltrust.operator.deps import Deps
from modeltrust.operator.errors import LedgerUnverified
from modeltrust.operator.keys import TrustedKeys
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess, LedgerEvidence
from modeltrust.operator.policy_events import ledger_condition
from modeltrust.operator.types import LedgerSpec, TrustPolicy, parse_trust_policy

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "ab" * 32


def access(token: Any = lambda: TOKEN) -> LedgerAccess:
    return LedgerAccess(cast(Kube, ConfigMaps()), "modeltrust-system", token, timeout=10)


@pytest.fixture
def keys(tmp_path: Path) -> LedgerKeys:
    return make_keys(tmp_path / "k")


@pytest.fixture
def ledger(keys: LedgerKeys, tmp_path: Path) -> Iterator[LedgerThread]:
    with LedgerThread(service_config(keys, tmp_path / "l.db")) as running:
        yield running


def policy_for(url: str, keys: LedgerKeys, *publishers: Ed25519PrivateKey) -> TrustPolicy:
    return parse_trust_policy(
        {
            "metadata": {"name": "p", "generation": 1},
            "spec": {
                "ledger": {"url": url, "verifierKey": keys.verifier_key},
                "publishers": [
                    {"name": f"p{i}", "publicKey": public_key_pem(k.public_key()).decode()}
                    for i, k in enumerate(publishers)
                ],
            },
        }
    )


def register_and_revoke(keys: LedgerKeys, url: str) -> tuple[int, int]:
    """The trusted publisher registers DIGEST, audit traffic follows, then it revokes it."""
    with LedgerClient(url, verifier_key=keys.verifier_key, token=TOKEN) as c:
        reg = c.append(
            sign_registration(keys.publisher, name="resnet", version="v1", digest=DIGEST, size=10)
        ).index
        c.append_many([audit(i) for i in range(20)])
        rev = c.append(
            sign_revocation(keys.publisher, target_kind="digest", target=DIGEST, reason="poisoned")
        ).index
        c.append(audit(99, key="after-revocation"))
    return reg, rev


def decide_on(ev: LedgerEvidence, policy: TrustPolicy) -> Any:
    return decide(
        Evidence(
            DIGEST, "resnet", "v1", ArtifactResult(DIGEST, 10), LoadResult(ok=True),
            ev.registrations, ev.revocations, ev.error, ev.unwitnessed, ev.inconsistent,
        ),
        policy,
    )  # fmt: skip


async def test_emptied_revocation_lookups_no_longer_hide_a_revocation(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    _, rev_index = register_and_revoke(keys, ledger.url)
    with TamperingProxy(ledger.url, empty_revocation_lookups) as proxy:
        policy = policy_for(proxy.url, keys, keys.publisher)
        tkeys = TrustedKeys.from_policy(policy)
        la = access()
        try:
            ev = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            assert ev.error is None
            assert [r.ledger_index for r in ev.revocations] == [rev_index]
            decision = decide_on(ev, policy)
            assert decision.verdict is Verdict.REFUSED
            assert decision.findings[0].reason is Reason.REVOKED
            assert "poisoned" in decision.message
        finally:
            await la.close()
        assert not any(r.startswith("GET /v1/revocations") for r in proxy.requests)


async def test_revocations_dropped_from_the_log_itself_fail_closed(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    register_and_revoke(keys, ledger.url)
    with TamperingProxy(ledger.url, drop_revocations_from_range_reads) as proxy:
        policy = policy_for(proxy.url, keys, keys.publisher)
        tkeys = TrustedKeys.from_policy(policy)
        la = access()
        try:
            ev = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            assert ev.error is not None
            assert "entry" in ev.error
            decision = decide_on(ev, policy)
            assert decision.verdict is Verdict.REFUSED
            assert decision.findings[0].reason is Reason.LEDGER_UNAVAILABLE
            again = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            assert again.error is not None
        finally:
            await la.close()


async def test_a_registration_hidden_from_the_lookup_is_noticed(
    keys: LedgerKeys, ledger: LedgerThread, tmp_path: Path
) -> None:
    # Two publishers registered the digest; B then revoked it. Hiding B's registration
    # would strip its authority over the digest, so the lookup must not be believed.
    other = Ed25519PrivateKey.generate()
    (keys.publishers_dir / "b.pem").write_bytes(public_key_pem(other.public_key()))
    with LedgerThread(service_config(keys, tmp_path / "two.db")) as two:
        with LedgerClient(two.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            for k in (keys.publisher, other):
                c.append(sign_registration(k, name="resnet", version="v1", digest=DIGEST, size=10))
            c.append(sign_revocation(other, target_kind="digest", target=DIGEST, reason="bad"))
        b_id = key_id(other.public_key())

        def hide_b(method: str, path_qs: str, status: int, body: bytes) -> tuple[int, bytes] | None:
            if not path_qs.startswith("/v1/registrations"):
                return None

            def edit(doc: Any) -> None:
                doc["entries"] = [e for e in doc["entries"] if e["entry"]["signer_key_id"] != b_id]

            return status, edit_json(body, edit)

        policy = policy_for(two.url, keys, keys.publisher, other)
        tkeys = TrustedKeys.from_policy(policy)
        la = access()
        try:
            honest = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            assert decide_on(honest, policy).findings[0].reason is Reason.REVOKED
            with TamperingProxy(two.url, hide_b) as proxy:
                lying = policy_for(proxy.url, keys, keys.publisher, other)
                ev = await la.evidence(lying.ledger, tkeys, DIGEST, "resnet")
                assert ev.error is not None
                assert "left out the registration(s) at index 1" in ev.error
                assert decide_on(ev, lying).verdict is Verdict.REFUSED
        finally:
            await la.close()


def rollout_entry(uid: str = "uid-7", decision: str = "allowed", time: str = "") -> AuditEntry:
    return AuditEntry(
        action="rollout", namespace="ml", name="resnet", uid=uid, generation=1, digest=DIGEST,
        decision=decision, reasons=("Verified",), actor="op",
        time=time or "2025-01-01T00:00:00Z", idempotency_key=f"{uid}/1/rollout/Verified",
    )  # fmt: skip


async def test_a_409_counts_as_recorded_only_with_a_matching_verified_entry(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    spec = LedgerSpec(ledger.url, keys.verifier_key)
    la = access()
    try:
        first = await la.append_audit(spec, rollout_entry())
        # A retry after a crash: same idempotency key, a later time -> the ledger answers 409
        # naming the first entry, which is read back and checked.
        again = await la.append_audit(spec, rollout_entry(time="2025-01-01T00:05:00Z"))
        assert again == first
    finally:
        await la.close()

    def fake_409(index: int) -> Any:
        def rewrite(method: str, path_qs: str, status: int, body: bytes) -> Any:
            if method == "POST":
                return 409, b'{"error": "replay", "index": %d}' % index
            return None

        return rewrite

    for index, words in ((424242, "could not be verified"), (first, "records something else")):
        with TamperingProxy(ledger.url, fake_409(index)) as proxy:
            la = access()
            try:
                # Another decision (refused) for the same object: index `first` does not record it.
                with pytest.raises(LedgerUnverified, match=words):
                    await la.append_audit(
                        LedgerSpec(proxy.url, keys.verifier_key),
                        rollout_entry(decision="refused"),
                    )
            finally:
                await la.close()


async def test_one_client_per_ledger_however_often_the_token_rotates(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    current = {"token": ""}
    la = access(lambda: current["token"])
    spec = LedgerSpec(ledger.url, keys.verifier_key)
    try:
        for stale in ("stale-0", "stale-1", "stale-2"):
            current["token"] = stale
            with pytest.raises(LedgerUnverified, match="401"):
                await la.append_audit(spec, rollout_entry(stale))
        current["token"] = TOKEN  # rotated in: the same client uses it at once
        assert await la.append_audit(spec, rollout_entry("u4")) >= 0
        assert len(la._clients) == 1
    finally:
        await la.close()


async def test_the_pods_proof_comes_from_the_verified_lookup_without_asking_again(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    register_and_revoke(keys, ledger.url)
    with TamperingProxy(ledger.url, lambda *a: None) as proxy:
        policy = policy_for(proxy.url, keys, keys.publisher)
        la = access()
        try:
            ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, "resnet")
            found = ev.entries[0]
            material = await la.provenance(
                policy.ledger, found, public_key_pem(keys.publisher.public_key()).decode()
            )
            assert material.inclusion_proof == found.inclusion_proof
            assert material.tree_size == found.checkpoint.size
        finally:
            await la.close()
        assert not any("/v1/proofs/inclusion" in r for r in proxy.requests)


async def test_the_index_reads_only_new_entries_after_the_first_read(
    keys: LedgerKeys, ledger: LedgerThread
) -> None:
    register_and_revoke(keys, ledger.url)
    with TamperingProxy(ledger.url, lambda *a: None) as proxy:
        policy = policy_for(proxy.url, keys, keys.publisher)
        tkeys = TrustedKeys.from_policy(policy)
        signer = key_id(keys.publisher.public_key())
        la = access()
        try:
            ev = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            assert len(ev.revocations) == 1
            size = la.index(policy.ledger).size
            with LedgerClient(ledger.url, verifier_key=keys.verifier_key) as c:
                c.append(
                    sign_revocation(keys.publisher, target_kind="key", target=signer, reason="lost")
                )
            ev = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            assert [f.target_kind for f in ev.revocations] == ["digest", "key"]
        finally:
            await la.close()
        reads = [r for r in proxy.requests if r.startswith("GET /v1/entries?")]
        assert reads == [
            f"GET /v1/entries?start=0&end={size}",
            f"GET /v1/entries?start={size}&end={size + 1}",
        ]


async def test_another_publisher_cannot_revoke_what_it_never_vouched_for(
    keys: LedgerKeys, tmp_path: Path
) -> None:
    # The ledger accepts B's revocations of A's key and of A's digest
    # (both are in its publisher set); the operator ignores them. A's own revocation counts.
    b = Ed25519PrivateKey.generate()
    (keys.publishers_dir / "b.pem").write_bytes(public_key_pem(b.public_key()))
    a_id = key_id(keys.publisher.public_key())
    with LedgerThread(service_config(keys, tmp_path / "ab.db")) as ab:
        with LedgerClient(ab.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append(
                sign_registration(
                    keys.publisher, name="resnet", version="v1", digest=DIGEST, size=10
                )
            )
            c.append(sign_revocation(b, target_kind="key", target=a_id, reason="B says so"))
            c.append(sign_revocation(b, target_kind="digest", target=DIGEST, reason="B says so"))
        policy = policy_for(ab.url, keys, keys.publisher, b)
        tkeys = TrustedKeys.from_policy(policy)
        la = access()
        try:
            ev = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            assert len(ev.revocations) == 2  # found and validly signed, but without authority
            assert decide_on(ev, policy).verdict is Verdict.ALLOWED
            with LedgerClient(ab.url, verifier_key=keys.verifier_key) as c:
                c.append(
                    sign_revocation(keys.publisher, target_kind="key", target=a_id, reason="lost")
                )
            ev = await la.evidence(policy.ledger, tkeys, DIGEST, "resnet")
            decision = decide_on(ev, policy)
            assert decision.verdict is Verdict.REFUSED
            assert "lost" in decision.message
            assert "B says so" not in decision.message
        finally:
            await la.close()


async def test_a_ledger_that_is_down_or_hung_is_named_in_words(keys: LedgerKeys) -> None:
    """The policy's LedgerReachable condition and a decision's message say what failed in
    words, never a library's repr (it once read `ClientConnectorError(ConnectionKey(...))`)."""
    down = f"http://127.0.0.1:{closed_port()}"
    with SilentServer() as hung:
        for url, timeout, words in (
            (down, 10.0, "connection refused"),
            (hung.url, 0.5, "no answer within 0.5 s (timed out)"),
        ):
            policy = policy_for(url, keys, keys.publisher)
            la = LedgerAccess(cast(Kube, ConfigMaps()), "modeltrust-system", lambda: TOKEN,
                              timeout=timeout)  # fmt: skip
            try:
                value, size = await ledger_condition(cast(Deps, SimpleNamespace(ledger=la)), policy)
                ev = await la.evidence(policy.ledger, TrustedKeys.from_policy(policy), DIGEST, "r")
            finally:
                await la.close()
            assert (value.status, value.reason, size) == ("False", "LedgerUnavailable", None)
            assert value.message.startswith(f"ledger at {url} did not answer: {words}")
            assert ev.error is not None
            assert f"ledger at {url} did not answer: {words}" in ev.error
            for internal in ("ClientConnectorError", "ConnectionKey", "Errno", "TimeoutError()"):
                assert internal not in value.message + ev.error
