"""Fuzz the ledger API with hypothesis: whatever arrives, the answer is never a 5xx,
errors are JSON, and nothing invalid gets into the log."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.ledger import TOKEN, LedgerThread, audit, make_keys, registration, service_config
from modeltrust.chain.client import LedgerClient
from modeltrust.chain.entries import entry_to_json

pytestmark = pytest.mark.integration


class Http:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type", "")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Http, LedgerThread, Any]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    keys = make_keys(tmp / "k")
    with LedgerThread(service_config(keys, tmp / "l.db")) as thread:
        with LedgerClient(thread.url, verifier_key=keys.verifier_key, token=TOKEN) as c:
            c.append_many([audit(i) for i in range(5)])
            c.append(registration(keys, 1))
        yield Http(thread.url), thread, keys


def _check(status: int, body: bytes, ctype: str) -> None:
    assert status < 500, body[:300]
    if status >= 400:
        assert ctype.startswith("application/json")
        assert json.loads(body)["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
audit_fields = list(entry_to_json(audit(0)))


@st.composite
def mutated_entries(draw: st.DrawFn) -> dict[str, Any]:
    """Valid audit entries with one field replaced by something arbitrary."""
    doc = entry_to_json(audit(draw(st.integers(0, 10))))
    field = draw(st.sampled_from(audit_fields))
    doc[field] = draw(json_values)
    return doc


SUSPICIOUS = ["", "-1", "0", "1", "7", "18446744073709551616", "1e3", "%00", "abc", "٣", " 5", "+1"]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=200)))
def test_arbitrary_bodies_never_5xx(ledger: tuple[Http, LedgerThread, Any], body: bytes) -> None:
    http_, thread, _ = ledger
    before = thread.service.sequencer.latest.size  # type: ignore[union-attr]
    _check(*http_.request("POST", "/v1/entries", body))
    assert thread.service.sequencer.latest.size == before  # type: ignore[union-attr]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=mutated_entries())
def test_mutated_entries_never_5xx(
    ledger: tuple[Http, LedgerThread, Any], doc: dict[str, Any]
) -> None:
    http_, _, _ = ledger
    _check(*http_.request("POST", "/v1/entries", json.dumps(doc).encode()))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        [
            "/v1/entries/{a}",
            "/v1/entries?start={a}&end={b}",
            "/v1/proofs/inclusion?index={a}&size={b}",
            "/v1/proofs/consistency?from={a}&to={b}",
            "/v1/blocks/{a}",
            "/v1/blocks?start={a}&end={b}",
            "/v1/registrations?digest={a}&limit={b}",
            "/v1/revocations?key_id={a}&after={b}",
            "/v1/audit?namespace={a}&name={b}",
            "/v1/audit?uid={a}",
        ]
    ),
    a=st.sampled_from(SUSPICIOUS) | st.text(max_size=12),
    b=st.sampled_from(SUSPICIOUS) | st.text(max_size=12),
)
def test_arbitrary_queries_never_5xx(
    ledger: tuple[Http, LedgerThread, Any], path: str, a: str, b: str
) -> None:
    http_, _, _ = ledger
    _check(*http_.request("GET", path.format(a=quote(a, safe=""), b=quote(b, safe=""))))


def test_schemathesis_finds_no_server_errors_or_schema_mismatches(
    ledger: tuple[Http, LedgerThread, Any],
) -> None:
    """Property-based tests generated from /openapi.json (positive-data acceptance excluded:
    cross-field rules such as "from <= to" or valid signatures are beyond a schema)."""
    pytest.importorskip("schemathesis")
    st_cli = Path(sys.executable).with_name("st")
    _, thread, _ = ledger
    result = subprocess.run(
        [
            str(st_cli),
            "run",
            thread.url + "/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            "15",
            "--seed",
            "1",
            "-H",
            f"Authorization: Bearer {TOKEN}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
