"""Terminal output for the demo: numbered steps, ticks and crosses, timings.

Colour is plain ANSI, used only when stdout is a terminal and NO_COLOR is not set
(https://no-color.org). On a terminal a step shows a transient "…" line while it runs;
elsewhere (CI logs, the e2e test) only the finished lines are written, so the output
reads the same in a log file.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

WIDTH = 64  # where the timing column starts


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGTERM or SIGHUP: clean up. A KeyboardInterrupt, because libraries pass those
    on where they swallow other exceptions (asyncio's callbacks swallow any BaseException but
    KeyboardInterrupt and SystemExit)."""


_signalled: list[str] = []


def interrupt(signal_name: str) -> None:
    """The signal handler's work: remember the signal, so that a step boundary or a wait
    raises it again should anything on the way still swallow the first raise."""
    _signalled.append(signal_name)
    raise Interrupted(signal_name)


def interrupt_handled() -> None:
    """Cleaning up has begun: its waits must run to their end."""
    _signalled.clear()


def raise_if_interrupted() -> None:
    if _signalled:
        raise Interrupted(_signalled[0])


class StepFailed(Exception):
    """A step could not do its job; the message says what failed and what to do."""

    def __init__(
        self, message: str, details: tuple[str, ...] = (), *, shows_log: Path | None = None
    ) -> None:
        super().__init__(message)
        self.details = details
        self.shows_log = shows_log  # a log file whose end `details` already holds


def _wants_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def _can_print(stream: TextIO, text: str) -> bool:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class Terminal:
    def __init__(self, stream: TextIO = sys.stdout) -> None:
        self.stream = stream
        self.color = _wants_color(stream)
        self.live = stream.isatty()
        # Wide enough for kubectl's tables; narrower terminals get prose wrapped to fit.
        self.columns = min(shutil.get_terminal_size((110, 24)).columns, 120)
        fancy = _can_print(stream, "✓✗…·─")
        self.tick = "✓" if fancy else "ok"
        self.cross = "✗" if fancy else "FAIL"
        self.ellipsis = "…" if fancy else "..."
        self.rule = "─" if fancy else "-"

    def _sgr(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def green(self, text: str) -> str:
        return self._sgr("32", text)

    def red(self, text: str) -> str:
        return self._sgr("31", text)

    def yellow(self, text: str) -> str:
        return self._sgr("33", text)

    def bold(self, text: str) -> str:
        return self._sgr("1", text)

    def dim(self, text: str) -> str:
        return self._sgr("2", text)

    def write(self, line: str = "") -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def transient(self, line: str) -> None:
        if self.live:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()

    def clear_transient(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


@dataclass(frozen=True)
class Line:
    style: str  # plain, dim, command, good, bad
    text: str
    wrap: bool = False
    comment: str = ""  # commands only: kept whole after the command


class Step:
    """Collects a step's detail lines; they are printed under its status line."""

    def __init__(self) -> None:
        self.lines: list[Line] = []

    def say(self, text: str, *, wrap: bool = False) -> None:
        """Detail lines; tables keep their layout, prose may be wrapped to the terminal."""
        for line in text.splitlines() or [""]:
            self.lines.append(Line("plain", line, wrap))

    def note(self, text: str) -> None:
        """A dimmed aside, wrapped."""
        self.lines.append(Line("dim", text, wrap=True))

    def command(self, argv: Sequence[str], comment: str = "") -> None:
        """The command a user would type for this step, shown dimmed after a '$'."""
        self.lines.append(Line("command", shlex.join(argv), comment=comment))

    def good(self, text: str) -> None:
        self.lines.append(Line("good", text, wrap=True))

    def bad(self, text: str) -> None:
        self.lines.append(Line("bad", text, wrap=True))


def wrap_command(text: str, comment: str, width: int) -> list[str]:
    """Shell-style continuation lines ("\\" at the end) so a long command still pastes."""
    lines: list[str] = []
    current = "$"
    for token in text.split(" "):
        if len(current) + 1 + len(token) > width - 2 and current not in ("$", "   "):
            lines.append(current + " \\")
            current = "   "
        current += " " + token
    if comment:
        comment = f"# {comment}"
        if len(current) + 3 + len(comment) <= width:
            current += "   " + comment
        else:
            lines.append(current)
            current = "  " + comment
    lines.append(current)
    return lines


def format_seconds(seconds: float) -> str:
    return f"{seconds:5.1f}s"


class Steps:
    """Numbered steps: `with steps.run("Start the ledger") as step: step.say(...)`."""

    def __init__(self, terminal: Terminal, total: int) -> None:
        self.term = terminal
        self.total = total
        self.number = 0
        self.started = time.monotonic()

    def _label(self, number: int, title: str) -> str:
        width = len(str(self.total))
        return f"{number:>{width}}/{self.total}  {title}"

    def _status_line(self, mark: str, label: str, seconds: float) -> str:
        pad = max(1, WIDTH - len(label))
        return f" {mark} {label}{' ' * pad}{self.term.dim(format_seconds(seconds))}"

    def _details(self, step: Step, indent: int) -> None:
        prefix = " " * indent
        width = max(40, self.term.columns - indent)
        styles: dict[str, Callable[[str], str]] = {
            "plain": lambda s: s,
            "dim": self.term.dim,
            "command": self.term.dim,
            "good": self.term.green,
            "bad": self.term.red,
        }
        for line in step.lines:
            if line.style == "command":
                texts = wrap_command(line.text, line.comment, width)
            elif line.wrap and len(line.text) > width:
                texts = textwrap.wrap(
                    line.text, width, subsequent_indent="  ", break_on_hyphens=False
                )
            else:
                texts = [line.text]
            for text in texts:
                self.term.write(prefix + styles[line.style](text))

    @contextmanager
    def run(self, title: str) -> Iterator[Step]:
        self.number += 1
        label = self._label(self.number, title)
        indent = 3 + len(str(self.total)) * 2 + 3
        raise_if_interrupted()
        step = Step()
        self.term.transient(f" {self.term.dim('·')} {label} {self.term.ellipsis}")
        started = time.monotonic()
        try:
            yield step
        except StepFailed as exc:
            self.term.clear_transient()
            self.term.write(
                self._status_line(self.term.red(self.term.cross), label, time.monotonic() - started)
            )
            self._details(step, indent)
            self.term.write(" " * indent + self.term.red(f"error: {exc}"))
            for line in exc.details:
                self.term.write(" " * indent + self.term.dim(line))
            raise
        except BaseException:
            self.term.clear_transient()
            self.term.write(
                self._status_line(self.term.red(self.term.cross), label, time.monotonic() - started)
            )
            self._details(step, indent)
            raise
        raise_if_interrupted()
        self.term.clear_transient()
        self.term.write(
            self._status_line(self.term.green(self.term.tick), label, time.monotonic() - started)
        )
        self._details(step, indent)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
