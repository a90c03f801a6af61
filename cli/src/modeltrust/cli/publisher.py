"""Publisher and auditor commands: keygen, sign, register, revoke, verify, audit."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
