"""Sessions that stream (remote servers): "Generate to End" is one generate() call; Stop cancels it."""

from __future__ import annotations

import asyncio

import pytest
from nicegui.testing import User

from tests.fake_backend import FakeModelManager
from tests.ui_helpers import chips, idle, open_ready, wait_until


@pytest.fixture
def streaming(monkeypatch):
    monkeypatch.setattr(FakeModelManager, "streams", True, raising=False)


async def test_generate_to_end_uses_one_streaming_call(user: User, tokviz_page, streaming) -> None:
    app, c = await open_ready(user, tokviz_page, step_delay=0.005)
    user.find("Generate to End").click()
    seen = []
    while c.state.busy:
        seen.append(len(chips(user)))
        await asyncio.sleep(0.02)
    assert len(chips(user)) == 50 and app.manager.generate_calls == 1
    assert len({n for n in seen if 0 < n < 50}) >= 3, f"tokens did not stream in: {seen}"
    assert [s.token_id for s in c.state.handle.session.tokens] == [s.token_id for s in c.state.tokens]


async def test_stop_cancels_the_streaming_request(user: User, tokviz_page, streaming) -> None:
    app, c = await open_ready(user, tokviz_page, step_delay=0.03)
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, message="a few tokens")
    user.find("Stop").click()
    await asyncio.sleep(0.3)
    session = c.state.handle.session
    assert session.finish_reason == "stopped", "the generate() call saw the stop flag"
    assert len(session.tokens) <= len(c.state.tokens) + 1 < 50
    user.find("Generate Next Token").click()  # the session is reconciled with the page
    await idle(c)
    assert [s.token_id for s in session.tokens] == [s.token_id for s in c.state.tokens]
