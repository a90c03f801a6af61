"""Serving commands: serve (model server) and fetch (download and verify, the init step)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
