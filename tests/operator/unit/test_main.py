"""`python -m modeltrust.operator`: the identity it gives kopf never needs a passwd entry."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import kopf
import pytest

from modeltrust.operator import __main__ as entry


def test_identity_is_the_pod_name_when_the_chart_sets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "rel-modeltrust-operator-7d9c-x2x4z")
    assert entry.operator_identity() == "rel-modeltrust-operator-7d9c-x2x4z"


def test_identity_is_host_and_pid_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    assert entry.operator_identity() == f"{socket.gethostname()}/{os.getpid()}"


def test_main_gives_kopf_an_identity_without_asking_for_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    ran: dict[str, Any] = {}
    monkeypatch.setattr("getpass.getuser", no_user)
    monkeypatch.setattr(kopf, "run", lambda **kwargs: ran.update(kwargs))
    # main() also sets process-wide state; keep it out of the other tests
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    logger = logging.getLogger("modeltrust")
    monkeypatch.setattr(logger, "level", logger.level)
    monkeypatch.setenv("POD_NAME", "op-0")
    assert entry.main(["-n", "ns", "--log-format", "plain"]) == 0
    assert ran["identity"] == "op-0"
    assert ran["standalone"] is True


def run_main(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> dict[str, Any]:
    ran: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: ran.update(kwargs))
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    logger = logging.getLogger("modeltrust")
    monkeypatch.setattr(logger, "level", logger.level)
    assert entry.main([*argv, "--log-format", "plain"]) == 0
    return ran


def test_the_given_namespaces_are_served_before_kopf_sees_them_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf watches a cluster-scoped resource (policies) only alongside a namespace it serves,
    and serves a namespace only once its listing shows it: with none of the given ones existing,
    the operator watched nothing and never wrote a policy's status."""
    ran = run_main(monkeypatch, ["-n", "team-a", "-n", "not-made-yet"])
    assert ran["namespaces"] == ["team-a", "not-made-yet"]
    assert ran["insights"].namespaces == {"team-a", "not-made-yet"}


def test_all_namespaces_serves_the_cluster_as_kopf_decides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran = run_main(monkeypatch, ["--all-namespaces"])
    assert ran["clusterwide"] is True
    assert ran["insights"].namespaces == set()
