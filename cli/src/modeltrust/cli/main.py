"""The single `modeltrust` entry point; each command group lives in its own module.

A command's module is imported when that command runs (or when help lists it), not at
start-up: `modeltrust fetch` starts in every pod's init container, and importing the
ledger client (aiohttp), the publisher's crypto and the operator for it cost a third of a
second each time.
"""

from __future__ import annotations

import importlib

import click

from modeltrust.chain.version import __version__
from modeltrust.cli.common import EXIT_CODES_HELP

# name -> (module, attribute); tests/cli/test_cli_main.py checks it against the modules.
COMMANDS: dict[str, tuple[str, str]] = {
    "keygen": ("modeltrust.cli.publisher", "keygen"),
    "sign": ("modeltrust.cli.publisher", "sign"),
    "register": ("modeltrust.cli.publisher", "register"),
    "revoke": ("modeltrust.cli.publisher", "revoke"),
    "verify": ("modeltrust.cli.publisher", "verify_command"),
    "audit": ("modeltrust.cli.audit", "audit"),
    "ledger": ("modeltrust.cli.ledger", "group"),
    "serve": ("modeltrust.cli.serving", "serve_command"),
    "fetch": ("modeltrust.cli.serving", "fetch_command"),
    "operator": ("modeltrust.cli.operator", "command"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(version=__version__, prog_name="modeltrust")
def main() -> None:
    """modeltrust: sign, register, verify and serve ONNX models on a tamper-evident ledger."""
