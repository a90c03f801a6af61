"""Stopping the real processes tests start (ledgers, operators)."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM and wait up to `timeout` seconds for a clean exit, then SIGKILL.

    Nothing happens to a process that has already exited."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
