"""Hidden revocations, end to end: a proxy between the operator and the ledger hides
revocations. Emptying the revocation lookups no longer works (the operator reads the log
itself); dropping revocations from the log's range reads makes the answer unverified, so
the rollout is refused instead of allowed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.cluster import Cluster
from harness.tampering_proxy import (
    TamperingProxy,
    drop_revocations_from_range_reads,
    empty_revocation_lookups,
)

from .conftest import (
    Ledger,
    Models,
    ModelUri,
    PolicyFactory,
    Publisher,
    RolloutFactory,
    apply,
    condition,
    deployment,
    model_deployment,
    wait_condition,
    wait_replicas,
)

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def proxy(ledger: Ledger) -> Iterator[TamperingProxy]:
    with TamperingProxy(ledger.url, empty_revocation_lookups) as running:
        yield running


def test_a_proxy_hiding_revocations_cannot_get_a_revoked_model_served(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    publishers: dict[str, Publisher],
    models: Models,
    model_uri: ModelUri,
    make_policy: PolicyFactory,
    proxy: TamperingProxy,
    rolled_out: RolloutFactory,
) -> None:
    policy = make_policy(ledger={"url": proxy.url, "verifierKey": ledger.verifier_key})
    trusted = publishers["trusted"]

    # Revoked before it is deployed: refused, although every revocation lookup says "none".
    pre_path, pre_digest = models.make("pre", seed=61)
    ledger.register(trusted, pre_path, "mnist", "1.0.0")
    ledger.revoke_digest(trusted, pre_digest, "backdoored weights")
    apply(crds, model_deployment(namespace, "pre", policy, model_uri(pre_path), pre_digest))
    md = wait_condition(crds, namespace, "pre", "Verified", "False", "Revoked")
    assert "backdoored weights" in condition(md, "Verified")["message"]
    assert deployment(crds, namespace, "pre") is None

    # Revoked while serving: the periodic re-check still finds it and scales to zero.
    post_digest = rolled_out("post", policy, seed=62).digest
    ledger.revoke_digest(trusted, post_digest, "training data poisoned")
    md = wait_condition(crds, namespace, "post", "Revoked", "True", timeout=90)
    assert "training data poisoned" in condition(md, "Revoked")["message"]
    wait_replicas(crds, namespace, "post", 0)
    assert any(r.startswith("GET /v1/entries?") for r in proxy.requests)
    assert not any(r.startswith("GET /v1/revocations") for r in proxy.requests)

    # The proxy now drops revocations from the log itself: the entries no longer hash to
    # the signed root, so there is no verified answer and the rollout is refused.
    proxy.rewrite = drop_revocations_from_range_reads
    late_path, late_digest = models.make("late", seed=63)
    ledger.register(trusted, late_path, "mnist", "1.0.0")
    ledger.revoke_digest(trusted, late_digest, "pulled by the publisher")
    apply(crds, model_deployment(namespace, "late", policy, model_uri(late_path), late_digest))
    md = wait_condition(crds, namespace, "late", "Verified", "False", "LedgerUnavailable")
    assert deployment(crds, namespace, "late") is None
