"""What the demo starts and must stop: background processes, a loopback model store,
and an ordered list of cleanup actions that runs on success, failure and Ctrl-C."""

from __future__ import annotations

import functools
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from demo_ui import StepFailed, raise_if_interrupted

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tail(path: Path, lines: int = 15) -> tuple[str, ...]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ()
    return tuple(text.splitlines()[-lines:])


class Background:
    """A long-running process the demo started, logging to a file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            # Its own session: a Ctrl-C at the terminal reaches only the demo, which then
            # stops its processes in order (operator before the ledger it writes to).
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        """Fail the step if the process has died, showing the end of its log."""
        code = self.proc.poll()
        if code is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            raise StepFailed(
                f"the {self.name} {how}; the end of {self.log}:",
                tail(self.log),
                shows_log=self.log,
            )

    def stop(self, grace: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No request log on the demo's terminal."""


class ModelStore:
    """Model storage: a plain HTTP file server (127.0.0.1, or the address pods reach the host at).

    It is deliberately untrusted, as real storage is: whoever controls it can swap bytes.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietFiles, directory=str(root))
        # Real pods fetch from it: then `host` is the address they reach this machine at.
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="model-store", daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, filename: str) -> str:
        return f"{self.base_url}/{filename}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class Cleanup:
    """Actions undone in reverse order; every one runs even if an earlier one fails."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, action: Callable[[], None]) -> None:
        self._actions.append((what, action))

    def run(self) -> tuple[list[str], list[str]]:
        """Returns (what was cleaned up, what failed with why)."""
        done: list[str] = []
        failed: list[str] = []
        # A second Ctrl-C must not leave half the processes running: finish first.
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while self._actions:
                what, action = self._actions.pop()
                try:
                    action()
                    done.append(what)
                except Exception as exc:
                    failed.append(f"{what}: {exc}")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return done, failed


def wait_until(
    what: str,
    check: Callable[[], T | None],
    *,
    timeout: float,
    every: float = 0.25,
    alive: Sequence[Background] = (),
    last_seen: Callable[[], str] | None = None,
) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` on timeout.

    `alive` processes are checked on every round, so a crashed operator fails the step
    at once with its log instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        raise_if_interrupted()
        for proc in alive:
            proc.check()
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            details = (f"last seen: {last_seen()}",) if last_seen else ()
            raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}", details)
        time.sleep(every)


def merged_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    env = dict(base)
    # Loopback traffic (ledger, model store, API server) must never go through a proxy.
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    env.update(extra)
    return env
