"""Helpers shared by the UI tests (User fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from nicegui import ElementFilter, ui
from nicegui.testing import User

from tokviz_app.ui.tokens import TokenChip


@contextlib.asynccontextmanager
async def loop_gaps(period: float = 0.005):
    """Yields a list that fills with the gaps between ticks of the event loop while the block runs."""
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(period)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        yield gaps
    finally:
        tick.cancel()


async def wait_until(condition, timeout: float = 20.0, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        await asyncio.sleep(0.01)


def chips(user: User) -> list[TokenChip]:
    """Generated token chips in page order."""
    with user:
        found = [e for e in ElementFilter(kind=TokenChip, local_scope=False) if "tv-token" in e.classes]
    return sorted(found, key=lambda e: e.props["data-position"])


def prompt_chips(user: User) -> list[TokenChip]:
    with user:
        found = [e for e in ElementFilter(kind=TokenChip, local_scope=False) if "tv-prompt-token" in e.classes]
    return sorted(found, key=lambda e: e.id)


def button(user: User, name: str) -> ui.button:
    (element,) = user.find(marker=name).elements
    return element


async def open_ready(user: User, tokviz_page, **options):
    """Open the page, initialize the preselected model, return (app namespace, controller)."""
    app = tokviz_page(**options)
    await user.open("/")
    controller = app.controllers[-1]
    user.find("Initialize Model").click()
    await wait_until(lambda: controller.state.model is not None, message="model loaded")
    return app, controller


async def idle(controller, timeout: float = 5.0) -> None:
    await wait_until(lambda: not controller.state.busy, timeout, "generation to finish")


async def generate(user: User, c, n: int) -> None:
    """Generate to End with Max new tokens = n, and wait for it to finish."""
    user.find(marker="max-tokens").elements.pop().value = n
    user.find("Generate to End").click()
    await wait_until(lambda: c.state.generating, 5, "generation to start")
    await idle(c, 10)


def text_of(user: User, marker: str) -> str:
    return user.find(marker=marker).elements.pop().text
