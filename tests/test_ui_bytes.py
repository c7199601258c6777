"""Issue 13 item 10: a character split over byte tokens shows once, as tokens stream in and when they go
(User fixture; the fake backend has one token per byte, written ‹XX›)."""

from __future__ import annotations

from nicegui.testing import User

from tests.fake_backend import VOCAB_TEXT
from tests.ui_helpers import chips, idle, open_ready
from tokviz_app.present.text import CONTINUES, percent


def byte_id(byte: int) -> int:
    return VOCAB_TEXT.index(f"‹{byte:02X}›")


async def test_generated_byte_tokens_join_as_they_arrive_and_part_when_cut(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    c.state.continue_after_pick = False  # one token per pick: the test adds them one by one
    user.find("Generate Next Token").click()
    await idle(c)
    shown = []
    for position, byte in enumerate("🙂".encode()):  # F0 9F 99 82, appended one by one
        await c.branching.choose(position, byte_id(byte))
        await idle(c)
        shown.append([chip.text for chip in chips(user)])
    assert shown == [["‹F0›"], ["‹F0›", "‹9F›"], ["‹F0›", "‹9F›", "‹99›"],
                     ["🙂", CONTINUES, CONTINUES, CONTINUES]], "joined once the last byte arrives"
    titles = [chip.props["title"] for chip in chips(user)]
    assert "part 1 of 4 of “🙂” (U+1F642)" in titles[0] and "part 3 of 4" in titles[2]
    for step, title in zip(c.state.tokens, titles):  # each chip keeps its own numbers
        assert f"probability {percent(step.prob)} · rank {step.rank}" in title
    await c.branching.choose(2, VOCAB_TEXT.index(" cat"))  # the character loses its end: bytes again
    await idle(c)
    assert [chip.text for chip in chips(user)] == ["‹F0›", "‹9F›", "·cat"]
    assert "part 1 of" not in chips(user)[0].props["title"]
