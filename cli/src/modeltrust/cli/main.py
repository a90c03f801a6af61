"""The single `modeltrust` entry point; each command group lives in its own module."""

from __future__ import annotations

import click

from modeltrust.chain.version import __version__
from modeltrust.cli import audit, ledger, operator, publisher, serving
from modeltrust.cli.common import EXIT_CODES_HELP


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(version=__version__, prog_name="modeltrust")
def main() -> None:
    """modeltrust: sign, register, verify and serve ONNX models on a tamper-evident ledger."""


for command in (
    *publisher.COMMANDS,
    *audit.COMMANDS,
    ledger.group,
    *serving.COMMANDS,
    operator.command,
):
    main.add_command(command)
