"""One version for the four distributions, `modeltrust --version` and the chart."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from modeltrust.chain.version import __version__
from modeltrust.cli.main import main

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_every_distribution_has_the_one_version() -> None:
    dists = ("modeltrust-chain", "modeltrust-serving", "modeltrust-operator", "modeltrust-cli")
    assert {d: version(d) for d in dists} == dict.fromkeys(dists, __version__)


def test_every_pyproject_reads_it_from_chain() -> None:
    for name in ("chain", "serving", "operator", "cli"):
        text = (REPO / name / "pyproject.toml").read_text()
        assert 'dynamic = ["version"]' in text, name
        assert "src/modeltrust/chain/version.py" in text, name


def test_the_command_prints_it() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"modeltrust, version {__version__}\n"


def test_the_chart_deploys_it() -> None:
    chart = yaml.safe_load((REPO / "charts" / "modeltrust" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
