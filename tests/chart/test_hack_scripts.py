"""Scripts under hack/ (the kind end-to-end path) pass shellcheck; they need Docker to run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chart.chartlib import REPO

pytestmark = pytest.mark.integration

SCRIPTS = sorted((REPO / "hack").glob("*.sh"))


def test_there_is_a_kind_script() -> None:
    assert REPO / "hack" / "e2e-kind.sh" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(script: Path) -> None:
    shellcheck = Path(sys.executable).with_name("shellcheck")
    assert shellcheck.exists(), "shellcheck is missing: pip install -r requirements/dev.in"
    result = subprocess.run(
        [str(shellcheck), "--severity=style", str(script)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
