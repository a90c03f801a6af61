"""Polling with a deadline, for tests that wait on a cluster or a process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float = 90, every: float = 0.3
) -> T:
    """Call `check` until it returns something truthy and return that; fail naming `what`.

    A check may return None (or anything falsy) until the thing it waits for is there.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
