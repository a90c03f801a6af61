"""The four distributions' metadata: one Apache-2.0 license text shipped in each, a
README, classifiers that say what is true (Python 3.11, Linux), and the CLI's extras."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DISTS = ("chain", "serving", "operator", "cli")


def project(name: str) -> dict[str, Any]:
    doc = tomllib.loads((REPO / name / "pyproject.toml").read_text())
    meta: dict[str, Any] = doc["project"]
    return meta


def test_the_license_is_apache_2_and_every_distribution_ships_the_same_text() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    for name in DISTS:
        # hatchling puts the project directory's LICENSE into the wheel's dist-info; the
        # image's build context holds only the component trees, so each has its own copy.
        assert (REPO / name / "LICENSE").read_text() == text, f"{name}/LICENSE differs"


@pytest.mark.parametrize("name", DISTS)
def test_metadata_is_complete(name: str) -> None:
    meta = project(name)
    assert meta["name"] == f"modeltrust-{name}"
    assert meta["license"] == "Apache-2.0"
    assert (REPO / name / meta["readme"]).read_text().startswith(f"# modeltrust-{name}\n")
    assert meta["requires-python"] == ">=3.11"
    classifiers = meta["classifiers"]
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")], (
        "PEP 639: the SPDX expression in `license` replaces license classifiers"
    )
    assert meta["description"]
    assert meta["keywords"]


def test_the_cli_needs_no_serving_or_operator_without_extras() -> None:
    meta = project("cli")
    base = " ".join(meta["dependencies"])
    for heavy in ("modeltrust-serving", "modeltrust-operator", "onnxruntime", "numpy", "kopf"):
        assert heavy not in base
    extras = meta["optional-dependencies"]
    assert "modeltrust-serving" in extras["serving"]
    assert "modeltrust-operator" in extras["operator"]
