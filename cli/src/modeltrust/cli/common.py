"""What every `modeltrust` command shares: the exit codes, failing with one, reading keys,
and the verifying ledger client with its options.

Exit codes (the same for every command; scripts and init containers rely on them):

  0  OK: verified, or done.
  1  REFUSED: the check ran and the answer is no. The model is not trusted (a reason
     code says why), the bytes are not the pinned bytes, an entry, proof or signature
     does not verify, the ledger contradicts a checkpoint already trusted (rollback,
     fork), or the command refused to act (for example, to overwrite a key).
  2  USAGE: the command line is wrong (click's own code).
  3  UNCHECKED: could not check. The ledger or the artifact's server did not answer or
     refused the request, or an input file or key could not be read or parsed, or the
     command needs an optional part of modeltrust that is not installed (an extra, see
     requires_extra). Nothing is known about the model: try again, or fix the input.

A ledger that answers with something that does not verify is REFUSED (1), not UNCHECKED:
a forged or rolled-back answer is a finding, and waiting will not make it go away.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

import click

from modeltrust.chain.errors import ChainError

# The ledger client (aiohttp) is imported by the commands that talk to a ledger, not at
# start-up: `modeltrust fetch` runs in every pod's init container and never needs it.
if TYPE_CHECKING:
    from modeltrust.chain.client import LedgerClient

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNCHECKED = 3

EXIT_CODES_HELP = (
    "\b\nExit codes (every command):\n"
    "  0  ok: verified, or done\n"
    "  1  refused: checked, and the answer is no (not trusted, digest mismatch, a proof\n"
    "     or signature that does not verify, ledger rollback or fork)\n"
    "  2  usage error\n"
    "  3  could not check: ledger or server unreachable or refusing, unreadable input,\n"
    "     or an extra the command needs is not installed"
)

# The optional parts of `pip install modeltrust-cli[...]`: what each brings and which
# commands need it. keygen, sign, register, revoke, verify, audit and ledger need none.
EXTRAS = {
    "serving": "modeltrust-serving: onnxruntime, numpy (modeltrust serve, modeltrust fetch)",
    "operator": "modeltrust-operator: kopf, kubernetes, onnx (modeltrust operator, "
    "modeltrust verify --policy)",
}

F = TypeVar("F", bound=Callable[..., Any])


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether STREAM (default: stderr) is a terminal. Progress bars are drawn only there:
    redirected to a file, a pipe or a log collector they would be kilobytes of carriage
    returns and half-drawn bars."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def requires_extra(extra: str, command: str) -> Iterator[None]:
    """Imports in this block need the EXTRA of modeltrust-cli; without it, exit UNCHECKED
    with a message naming the extra to install (not an ImportError traceback)."""
    try:
        yield
    except ModuleNotFoundError as e:
        fail(
            f"`modeltrust {command}` needs the {extra!r} extra of modeltrust-cli "
            f"({EXTRAS[extra]}), which is not installed (no module {e.name!r}). "
            f"Install it: pip install 'modeltrust-cli[{extra}]' (see docs/install.md)",
            EXIT_UNCHECKED,
        )


def ledger_exit_code(exc: ChainError) -> int:
    """UNCHECKED when the ledger gave no answer (unreachable, or it refused the request),
    REFUSED when its answer does not verify (bad signature or proof, rollback, fork)."""
    from modeltrust.chain.client import LedgerClientError

    return EXIT_UNCHECKED if isinstance(exc, LedgerClientError) else EXIT_REFUSED


def read_verifier_key(value: str) -> str:
    """A C2SP verifier key given inline (name+id+key), or the path of a file holding it."""
    if "+" not in value and Path(value).is_file():
        try:
            return Path(value).read_text(encoding="utf-8").strip()
        except OSError as e:
            fail(f"cannot read verifier key file {value}: {e.strerror or e}", EXIT_UNCHECKED)
    return value.strip()


def ledger_options(f: F) -> F:
    """--ledger, --ledger-key, --origin and --trust-state (or MODELTRUST_LEDGER...)."""
    options = [
        click.option(
            "--ledger",
            "ledger_url",
            envvar="MODELTRUST_LEDGER",
            help="Ledger URL, e.g. http://ledger:8080.",
        ),
        click.option(
            "--ledger-key",
            envvar="MODELTRUST_LEDGER_KEY",
            help="Ledger checkpoint verifier key (name+id+key) or a file holding it.",
        ),
        click.option(
            "--origin",
            envvar="MODELTRUST_LEDGER_ORIGIN",
            help="Expected checkpoint origin (default: the verifier key's name).",
        ),
        click.option(
            "--trust-state",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="MODELTRUST_TRUST_STATE",
            help="File remembering the newest verified checkpoint, so a rolled-back "
            "or forked ledger is detected across runs.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def open_ledger(
    url: str | None, ledger_key: str | None, origin: str | None, trust_state: Path | None
) -> LedgerClient:
    """A verifying client, or exit (USAGE without a URL or key, UNCHECKED on bad ones)."""
    if not url or not ledger_key:
        raise click.UsageError("give --ledger and --ledger-key (or MODELTRUST_LEDGER/_KEY)")
    from modeltrust.chain.client import LedgerClient
    from modeltrust.chain.trust_state import FileTrustStateStore

    try:
        store = FileTrustStateStore(trust_state) if trust_state else None
        return LedgerClient(
            url, verifier_key=read_verifier_key(ledger_key), origin=origin, trust_store=store
        )
    except ChainError as e:
        fail(f"bad ledger settings: {e}", EXIT_UNCHECKED)


@contextmanager
def ledger_client(
    url: str | None, ledger_key: str | None, origin: str | None, trust_state: Path | None
) -> Iterator[LedgerClient]:
    """A verifying client; a ledger failure exits with ledger_exit_code."""
    client = open_ledger(url, ledger_key, origin, trust_state)
    try:
        with client:
            yield client
    except ChainError as e:
        fail(f"ledger: {e}", ledger_exit_code(e))
