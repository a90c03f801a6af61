"""The entry point's lazy command table: complete, and a fetch that imports only what it
needs (its start-up is paid by every pod's init container)."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from modeltrust.cli import audit, ledger, operator, publisher, serving
from modeltrust.cli.main import COMMANDS, main


def test_the_table_names_every_command_of_every_module_by_its_own_name() -> None:
    eager = [*publisher.COMMANDS, *audit.COMMANDS, ledger.group, *serving.COMMANDS]
    eager.append(operator.command)
    ctx = click.Context(main)

    assert sorted(c.name or "" for c in eager) == sorted(COMMANDS)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.name == name
    assert main.get_command(ctx, "no-such-command") is None


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])

    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert f"  {name} " in result.output


def test_fetch_starts_without_the_ledger_client_or_the_progress_bar() -> None:
    code = (
        "import sys\n"
        "from modeltrust.cli.main import main\n"
        "try:\n"
        "    main(['fetch', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('aiohttp', 'tqdm', 'modeltrust.cli.publisher', "
        "'modeltrust.cli.ledger') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
