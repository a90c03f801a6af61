"""The demo stops on Ctrl-C even when something on the way swallows the first raise."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import io
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from chart.chartlib import REPO


@pytest.fixture
def demo_ui() -> Iterator[ModuleType]:
    sys.path.insert(0, str(REPO / "hack"))
    try:
        module = importlib.import_module("demo_ui")
    finally:
        sys.path.remove(str(REPO / "hack"))
    yield module
    module.interrupt_handled()


def test_a_ctrl_c_swallowed_inside_a_step_still_ends_the_step(demo_ui: ModuleType) -> None:
    steps = demo_ui.Steps(demo_ui.Terminal(io.StringIO()), 2)
    ran: list[int] = []

    def story() -> None:
        with steps.run("first"):
            with contextlib.suppress(BaseException):  # what a careless library does
                demo_ui.interrupt("SIGINT")
            ran.append(1)
        with steps.run("second"):
            ran.append(2)

    with pytest.raises(KeyboardInterrupt):
        story()
    assert ran == [1], "the step after the interrupt never starts"


def test_asyncio_callbacks_pass_the_interrupt_on(demo_ui: ModuleType) -> None:
    """asyncio logs and drops any BaseException a callback raises, except KeyboardInterrupt
    and SystemExit: the demo's interrupt is a KeyboardInterrupt so it gets through."""

    async def main() -> None:
        asyncio.get_running_loop().call_soon(demo_ui.interrupt, "SIGTERM")
        await asyncio.sleep(0.1)

    with pytest.raises(demo_ui.Interrupted):
        asyncio.run(main())


def test_cleanup_waits_run_after_the_interrupt_is_handled(demo_ui: ModuleType) -> None:
    with pytest.raises(KeyboardInterrupt):
        demo_ui.interrupt("SIGINT")
    demo_ui.interrupt_handled()
    demo_ui.raise_if_interrupted()  # nothing left to raise: cleaning up may wait
