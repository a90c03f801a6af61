"""The chart ships the CRDs as byte-for-byte copies of crds/ (the source of truth)."""

from __future__ import annotations

import pytest

from chart.chartlib import CHART, REPO

pytestmark = pytest.mark.unit

SOURCE = REPO / "crds"
SHIPPED = CHART / "crds"
FIX = "cp crds/*.yaml charts/modeltrust/crds/"


def test_chart_ships_every_crd_and_nothing_else() -> None:
    source = sorted(p.name for p in SOURCE.glob("*.yaml"))
    shipped = sorted(p.name for p in SHIPPED.iterdir())
    assert source, "crds/ holds no CRD"
    assert shipped == source, f"charts/modeltrust/crds/ differs from crds/ in its files; run: {FIX}"


@pytest.mark.parametrize("name", sorted(p.name for p in SOURCE.glob("*.yaml")))
def test_shipped_crd_is_identical_to_the_source(name: str) -> None:
    shipped = SHIPPED / name
    assert shipped.exists(), f"the chart does not ship {name}; run: {FIX}"
    assert shipped.read_bytes() == (SOURCE / name).read_bytes(), (
        f"charts/modeltrust/crds/{name} drifted from crds/{name}; run: {FIX}"
    )
