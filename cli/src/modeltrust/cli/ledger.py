"""`modeltrust ledger ...`: serve, verify and inspect the ledger."""

from __future__ import annotations

import click


@click.group()
def group() -> None:
    """Run and check the ledger."""


group.name = "ledger"
