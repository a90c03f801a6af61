"""The ledger's bearer token comes only from MODELTRUST_LEDGER_TOKEN or the file named by
MODELTRUST_LEDGER_TOKEN_FILE; with neither, audit appends fail closed before anything is sent."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import cast

import pytest

from modeltrust.chain.entries import AuditEntry
from modeltrust.operator import handlers
from modeltrust.operator.config import OperatorConfig
from modeltrust.operator.errors import LedgerTokenMissing, LedgerUnverified
from modeltrust.operator.kube import Kube
from modeltrust.operator.ledger_access import LedgerAccess, token_reader
from modeltrust.operator.types import LedgerSpec

pytestmark = pytest.mark.unit

BOTH = r"MODELTRUST_LEDGER_TOKEN\b.*MODELTRUST_LEDGER_TOKEN_FILE"


def test_without_a_token_or_a_file_reading_fails_naming_both_variables() -> None:
    with pytest.raises(LedgerTokenMissing, match=BOTH):
        token_reader(None, None)()
    with pytest.raises(LedgerTokenMissing, match=BOTH):
        token_reader("", None)()


def test_the_token_file_is_re_read_on_every_use(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    read = token_reader(None, path)
    assert read() == "first"
    path.write_text("rotated")
    assert read() == "rotated"


def test_an_unreadable_or_empty_token_file_fails_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(LedgerTokenMissing, match=f"{missing}.*MODELTRUST_LEDGER_TOKEN_FILE"):
        token_reader(None, missing)()
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(LedgerTokenMissing, match="is empty"):
        token_reader(None, empty)()


def test_a_fixed_token_wins_over_the_file(tmp_path: Path) -> None:
    assert token_reader("static", tmp_path / "absent")() == "static"


def test_startup_warns_and_uses_no_other_credential(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MODELTRUST_LEDGER_TOKEN", raising=False)
    monkeypatch.delenv("MODELTRUST_LEDGER_TOKEN_FILE", raising=False)
    with caplog.at_level(logging.WARNING, logger="modeltrust.operator"):
        read = handlers.token_source(OperatorConfig.from_env(os.environ))
    assert any(
        "MODELTRUST_LEDGER_TOKEN_FILE" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )
    with pytest.raises(LedgerTokenMissing, match=BOTH):
        read()


def test_the_environment_selects_the_token_or_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    path.write_text("projected")
    monkeypatch.delenv("MODELTRUST_LEDGER_TOKEN", raising=False)
    monkeypatch.setenv("MODELTRUST_LEDGER_TOKEN_FILE", str(path))
    with caplog.at_level(logging.WARNING, logger="modeltrust.operator"):
        assert handlers.token_source(OperatorConfig.from_env(os.environ))() == "projected"
    monkeypatch.setenv("MODELTRUST_LEDGER_TOKEN", "static")
    with caplog.at_level(logging.WARNING, logger="modeltrust.operator"):
        assert handlers.token_source(OperatorConfig.from_env(os.environ))() == "static"
    assert not caplog.records


async def test_an_append_without_a_token_fails_closed_before_contacting_the_ledger() -> None:
    # Port 9 (discard) has no ledger: had the append been sent, the error would be a
    # connection failure, not the missing token.
    access = LedgerAccess(cast(Kube, None), "ns", token_reader(None, None), timeout=2)
    entry = AuditEntry(
        uid="u", namespace="ml", name="m", generation=1, action="rollout",
        digest="sha256:" + "ab" * 32, decision="allowed", reasons=("ok",),
        actor="modeltrust-operator", time="2025-01-01T00:00:00Z", idempotency_key="k",
    )  # fmt: skip
    try:
        with pytest.raises(LedgerUnverified, match=BOTH) as raised:
            await access.append_audit(LedgerSpec("http://127.0.0.1:9", "x+1+AQ"), entry)
        assert isinstance(raised.value, LedgerTokenMissing)
    finally:
        await access.close()
