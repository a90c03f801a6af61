"""OperatorConfig: every MODELTRUST_* variable the operator reads, parsed once, documented."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from modeltrust.operator.config import Backoff, OperatorConfig
from modeltrust.operator.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
OPERATOR_SRC = REPO / "operator" / "src" / "modeltrust" / "operator"


def documented() -> set[str]:
    """The variables named in the first column of docs/operator.md's tables."""
    text = (REPO / "docs" / "operator.md").read_text()
    return set(re.findall(r"^\| `(MODELTRUST_[A-Z_]+)` \|", text, flags=re.MULTILINE))


def test_every_field_is_documented_and_every_documented_variable_is_a_field() -> None:
    assert set(OperatorConfig.variables()) == documented()


def test_every_field_names_its_variable_once() -> None:
    names = [f.metadata["env"] for f in fields(OperatorConfig)]
    assert len(names) == len(set(names)) == len(fields(OperatorConfig))


def test_no_module_reads_the_environment_but_config() -> None:
    # __main__ hands os.environ to OperatorConfig.from_env; the model-check child sets
    # OMP_NUM_THREADS for itself (a write, not a read).
    readers = {
        path.name
        for path in OPERATOR_SRC.glob("*.py")
        for line in path.read_text().splitlines()
        if re.search(r"os\.environ(?!\.setdefault)|os\.getenv", line)
    }
    assert readers <= {"__main__.py", "config.py"}  # config.py: in its docstring


def test_defaults_and_values() -> None:
    assert OperatorConfig.from_env({}) == OperatorConfig()
    config = OperatorConfig.from_env(
        {"MODELTRUST_WORKERS": " 8 ", "MODELTRUST_TIMER_INTERVAL": "0.5",
         "MODELTRUST_LOCAL_MODEL_ROOT": "/models", "MODELTRUST_METRICS_PORT": "",
         "MODELTRUST_REFUSED_BACKOFF": "1", "MODELTRUST_LEDGER_TOKEN": "secret"}
    )  # fmt: skip
    assert (config.workers, config.timer_interval, str(config.local_model_root)) == (
        8, 0.5, "/models",
    )  # fmt: skip
    assert config.metrics_port == 0
    assert config.backoff.delay(config.backoff.refused, 3) == 8.0
    assert "secret" not in repr(config)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MODELTRUST_WORKERS", "abc", "an integer >= 1"),
        ("MODELTRUST_WORKERS", "0", "an integer >= 1"),
        ("MODELTRUST_METRICS_PORT", "70000", "an integer from 0 to 65535"),
        ("MODELTRUST_TIMER_INTERVAL", "-1", "a number of seconds > 0"),
        ("MODELTRUST_TIMER_INTERVAL", "nan", "a number of seconds > 0"),
        ("MODELTRUST_DRIFT_CHECK_INTERVAL", "soon", "a number of seconds >= 0"),
        ("MODELTRUST_LOCAL_MODEL_ROOT", "models", "an absolute path"),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_what_is_expected(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        OperatorConfig.from_env({variable: value})
    assert str(raised.value) == f"{variable}={value!r}: expected {expected}"


def test_backoff_doubles_and_is_capped() -> None:
    b = Backoff(cap=100)
    assert [b.delay(10, r) for r in range(5)] == [10, 20, 40, 80, 100]


def test_the_command_prints_one_line_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modeltrust.operator", "-n", "ml"],
        env={"MODELTRUST_WORKERS": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "modeltrust operator: MODELTRUST_WORKERS='abc': expected an integer >= 1"
    ]
