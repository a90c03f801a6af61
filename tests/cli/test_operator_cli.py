"""`modeltrust operator` hands its arguments to the operator's own entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from modeltrust.cli.main import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_operator_help_lists_the_operator_options() -> None:
    result = run_cli("operator", "--help")
    assert result.returncode == 0, result.stderr
    assert "--all-namespaces" in result.stdout
    assert "--liveness" in result.stdout


def test_operator_without_a_scope_is_a_usage_error() -> None:
    result = run_cli("operator")
    assert result.returncode == 2
    assert "--namespace" in result.stderr


def test_operator_usage_names_the_command_that_was_run() -> None:
    result = run_cli("operator", "--help")
    assert result.stdout.startswith("usage: modeltrust operator "), result.stdout
    bad = run_cli("operator", "--no-such-flag")
    assert bad.returncode == 2
    assert bad.stderr.startswith("usage: modeltrust operator "), bad.stderr
    assert "modeltrust operator: error: unrecognized arguments: --no-such-flag" in bad.stderr
