"""The ledger's /metrics on a real loopback server: prometheus_client's exposition, process
metrics, bounded HTTP labels (route templates, never raw paths) and the state gauges."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness.ledger import TOKEN, audit, make_keys, registration, service_config
from modeltrust.chain.entries import entry_to_json
from modeltrust.chain.metrics import LedgerMetrics
from modeltrust.chain.service import LedgerService

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# Every metric the hand-written /metrics showed before prometheus_client: same names.
_BEFORE = (
    "modeltrust_ledger_appends_total",
    "modeltrust_ledger_append_rejections_total",
    "modeltrust_ledger_http_requests_total",
    "modeltrust_ledger_batch_entries_bucket",
    "modeltrust_ledger_commit_seconds_bucket",
    "modeltrust_ledger_append_latency_seconds_count",
    "modeltrust_ledger_tree_size",
)


async def _scrape(session: aiohttp.ClientSession, url: str) -> list[Sample]:
    async with session.get(url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = await r.text()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, [s for s in samples if s.name == name])
    return found[0]


async def test_metrics_have_process_route_templates_and_ledger_state(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    service = LedgerService(service_config(keys, tmp_path / "l.db"))
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = service.url
            body = orjson.dumps([entry_to_json(audit(i)) for i in range(3)])
            async with session.post(url + "/v1/entries", data=body, headers=AUTH) as r:
                assert r.status == 201
            reg = orjson.dumps(entry_to_json(registration(keys, 1)))
            for expected in (201, 409):  # the second is a replay: a rejection
                async with session.post(url + "/v1/entries", data=reg) as r:
                    assert r.status == expected
            for path in ("/v1/entries/0", "/v1/entries/2", "/v1/entries/99", "/no/such/a1"):
                async with session.get(url + path) as r:
                    await r.read()
            async with session.get(url + "/no/such/b2") as r:
                await r.read()
            for method in ("PROPFIND", "MKCOL"):  # WebDAV methods: one "other" series
                async with session.request(method, url + "/v1/keys") as r:
                    await r.read()
            samples = await _scrape(session, url)
    finally:
        await service.stop()

    names = {s.name for s in samples}
    for name in _BEFORE:
        assert name in names, name
    # Process and platform collectors.
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    # Route templates, method and status: two different indexes are one series.
    requests = "modeltrust_ledger_http_requests_total"
    assert _value(samples, requests, route="/v1/entries/{index}", method="GET", status="200") == 2
    assert _value(samples, requests, route="/v1/entries/{index}", method="GET", status="404") == 1
    assert _value(samples, requests, route="/v1/entries", method="POST", status="201") == 2
    assert _value(samples, requests, route="/v1/entries", method="POST", status="409") == 1
    assert _value(samples, requests, route="unmatched", method="GET", status="404") == 2
    assert _value(samples, requests, route="unmatched", method="other", status="405") == 2
    assert {s.labels["method"] for s in samples if s.name == requests} == {"GET", "POST", "other"}
    routes = {s.labels["route"] for s in samples if s.name == requests}
    assert not any("a1" in r or "b2" in r or r.endswith("/0") for r in routes), routes
    duration = "modeltrust_ledger_http_request_duration_seconds_count"
    assert _value(samples, duration, route="/v1/entries/{index}", method="GET") == 3
    # The ledger's state.
    assert _value(samples, "modeltrust_ledger_appends_total", kind="audit") == 3
    assert _value(samples, "modeltrust_ledger_append_rejections_total", reason="ReplayError") == 1
    assert _value(samples, "modeltrust_ledger_tree_size") == 4
    assert _value(samples, "modeltrust_ledger_block_height") == 1
    assert _value(samples, "modeltrust_ledger_sequencer_up") == 1
    assert time.time() - _value(samples, "modeltrust_ledger_last_checkpoint_timestamp_seconds") < 60


async def test_state_gauges_are_right_after_a_restart(tmp_path: Path) -> None:
    """The tree size and last checkpoint come from the stored state at start, not only from
    appends made since (the hand-written gauge said 0 until the next append)."""
    keys = make_keys(tmp_path / "keys")
    config = service_config(keys, tmp_path / "l.db")
    first = LedgerService(config)
    await first.start()
    async with aiohttp.ClientSession() as session:
        body = orjson.dumps([entry_to_json(audit(i)) for i in range(5)])
        async with session.post(first.url + "/v1/entries", data=body, headers=AUTH) as r:
            assert r.status == 201
        appended_at = time.time()
        await first.stop()
        second = LedgerService(config)
        await second.start()
        try:
            samples = await _scrape(session, second.url)
        finally:
            await second.stop()
    assert _value(samples, "modeltrust_ledger_tree_size") == 5
    assert _value(samples, "modeltrust_ledger_block_height") == 0
    signed_at = _value(samples, "modeltrust_ledger_last_checkpoint_timestamp_seconds")
    assert appended_at - 60 < signed_at <= appended_at + 1


def test_sequencer_up_follows_the_sequencer_and_ledgers_do_not_share_counts() -> None:
    a, b = LedgerMetrics(), LedgerMetrics()
    a.request("/v1/keys", "GET", 200, 0.001)
    text_a, text_b = a.render().decode(), b.render().decode()
    line = 'modeltrust_ledger_http_requests_total{method="GET",route="/v1/keys",status="200"} 1.0'
    assert line in text_a
    assert "route=" not in text_b
    assert "modeltrust_ledger_sequencer_up 0.0" in text_b
