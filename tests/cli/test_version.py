"""One version for the four distributions, `modeltrust --version` and the chart."""

from __future__ import annotations

import re
import tomllib
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
    source = (REPO / "chain/src/modeltrust/chain/version.py").resolve()
    for name in ("chain", "serving", "operator", "cli"):
        doc = tomllib.loads((REPO / name / "pyproject.toml").read_text())
        assert doc["project"]["dynamic"] == ["version"], name
        assert "version" not in doc["project"], name
        path = doc["tool"]["hatch"]["version"]["path"]
        assert (REPO / name / path).resolve() == source, f"{name} reads its version from {path}"


def test_the_image_tags_in_the_docs_are_it() -> None:
    # `modeltrust:X.Y.Z` in the Dockerfile and install guide: the tag the chart deploys.
    for path in (REPO / "Dockerfile", REPO / "docs" / "install.md"):
        tags = set(re.findall(r"modeltrust:(\d+\.\d+\.\d+)\b", path.read_text()))
        assert tags <= {__version__}, f"{path.name} names modeltrust:{tags - {__version__}}"
        tags_dash = set(re.findall(r"modeltrust-(\d+\.\d+\.\d+)-", path.read_text()))
        assert tags_dash <= {__version__}, path.name


def test_the_command_prints_it() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"modeltrust, version {__version__}\n"


def test_the_chart_deploys_it() -> None:
    chart = yaml.safe_load((REPO / "charts" / "modeltrust" / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert isinstance(chart["appVersion"], str)  # quoted: 0.10 is not 0.1
