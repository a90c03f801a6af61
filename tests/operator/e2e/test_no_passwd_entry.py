"""The operator and the ledger as the image runs them in a pod: a uid with no passwd entry
and no HOME (tests/harness/nopasswd.py). kopf's default identity asks getpass.getuser(),
which fails there, so the operator crash-looped in every real pod; it now names itself
(POD_NAME, else host name and pid). This rolls a verified model out with both processes
running that way: watch, download, digest, ledger proofs, onnxruntime, Deployment."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cluster import Cluster
from harness.nopasswd import environment_is_passwdless

from .conftest import (
    Ledger,
    Operator,
    OperatorFactory,
    Publisher,
    RolloutFactory,
)


@pytest.fixture
def ledger(cluster: Cluster, tmp_path: Path, publishers: dict[str, Publisher]) -> Iterator[Ledger]:
    led = Ledger(
        tmp_path / "ledger", list(publishers.values()), host=cluster.host_address, no_passwd=True
    )
    led.start()
    try:
        yield led
    finally:
        led.stop()


@pytest.fixture
def operator(start_operator: OperatorFactory) -> Operator:
    environment_is_passwdless()
    return start_operator(no_passwd=True)


def test_operator_with_no_passwd_entry_rolls_out_a_verified_model(
    operator: Operator, policy: str, rolled_out: RolloutFactory
) -> None:
    try:
        rolled_out("nopasswd", policy, seed=11)  # waits for Ready=True
    except AssertionError as exc:  # the operator's log says why (it may have crashed)
        raise AssertionError(f"{exc}\noperator log:\n{operator.log_tail()}") from exc
    time.sleep(2)  # a few more timer rounds: a late crash would show here
    assert operator.pid  # raises with the log tail if it exited
    log = operator.log()
    assert "Traceback" not in log, operator.log_tail()
    assert "getpwuid" not in log, operator.log_tail()
