"""No claim without a check (issue "Close the trust boundary", item 6).

The attack: a second ModelDeployment with the same URL and digest got "artifact matches
the pin" and a `rollout allowed` audit entry without any download (a cache keyed on URL
and digest, no expiry) after the bytes at that URL had changed. Now every decision reads
the bytes (MODELTRUST_ARTIFACT_RECHECK_WINDOW defaults to 0) and says when it did.
"""

from __future__ import annotations

import pytest

from harness.cluster import Cluster

from .conftest import (
    Ledger,
    ModelUri,
    RolloutFactory,
    apply,
    condition,
    deployment,
    model_deployment,
    wait_condition,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator")


def test_bytes_changed_at_the_url_are_refused_for_the_next_model_deployment(
    crds: Cluster,
    namespace: str,
    ledger: Ledger,
    policy: str,
    rolled_out: RolloutFactory,
    model_uri: ModelUri,
) -> None:
    first = rolled_out("first", policy, seed=81)
    first.path.write_bytes(first.path.read_bytes() + b"\0")  # the URL now serves other bytes
    apply(crds, model_deployment(namespace, "second", policy, model_uri(first.path), first.digest))

    md = wait_condition(crds, namespace, "second", "Verified", "False", "DigestMismatch")
    assert "does not match the pinned" in condition(md, "Verified")["message"]
    assert deployment(crds, namespace, "second") is None
    audits = wait_for("the refusal on the ledger", lambda: ledger.audits(md["metadata"]["uid"]))
    assert [(a.action, a.decision) for a in audits] == [("refuse", "refused")]
    # The first rollout's entry says when its bytes were read, as its status does.
    (rollout,) = ledger.audits(first.uid)
    assert f"artifact read: {first.md['status']['artifactReadTime']}" in rollout.reasons
