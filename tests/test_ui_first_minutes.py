"""Issue 13, what a new user hit (fake backend, User fixture): a pick continues the text, read-outs agree
with the tokens after Stop and branch switches, fast "n" presses are queued, edited prompts ask before
discarding branches."""

from __future__ import annotations

import asyncio
import re

from nicegui.testing import User

from tests.ui_helpers import chips, idle, open_ready, wait_until


async def generated(user: User, c, n: int) -> None:
    """`n` more tokens (the fake's default seed makes them the same every run, none an end of text)."""
    total = len(c.state.tokens) + n
    c.state.max_tokens = n
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) == total and not c.state.busy, message=f"{total} tokens")


def other_alternative(step) -> int:
    return next(a.token_id for a in step.alternatives if a.token_id != step.token_id and a.token_id != 0)


async def second_branch_at_2(c) -> None:
    """Another token picked at position 2, without continuing after it: two branches."""
    c.state.continue_after_pick = False
    await c.branching.choose(2, other_alternative(c.state.tokens[2]))
    await wait_until(lambda: len(c.state.branches) == 2, message="two branches")


async def settled(c) -> None:
    """No generation running and none about to start (a pick's continuation starts right after it)."""
    await asyncio.sleep(0.05)
    await idle(c, 20)


async def test_a_pick_continues_to_the_same_length(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    await generated(user, c, 12)
    old = [s.token_id for s in c.state.tokens]
    pick = other_alternative(c.state.tokens[3])
    await c.branching.choose(3, pick)
    await settled(c)
    assert len(c.state.tokens) == 12 and len(chips(user)) == 12
    assert [s.token_id for s in c.state.tokens[:4]] == old[:3] + [pick]
    await wait_until(lambda: len(c.state.branches) == 2, message="the old text kept as a branch")
    old_branch = next(b for b in c.state.branches if b.id != c.state.active_branch)
    assert [s.token_id for s in old_branch.tokens] == old


async def test_a_pick_at_the_end_continues_for_max_new_tokens(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    await generated(user, c, 5)
    c.state.max_tokens = 7
    await c.branching.choose(4, other_alternative(c.state.tokens[4]))
    await settled(c)
    assert len(c.state.tokens) == 5 + 7


async def test_the_switch_turns_continuing_off(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    await generated(user, c, 10)
    switch = user.find(marker="continue-after-pick").elements.pop()
    assert switch.value is True, "on by default"
    switch.set_value(False)
    assert c.state.continue_after_pick is False
    await c.branching.choose(3, other_alternative(c.state.tokens[3]))
    await settled(c)
    assert len(c.state.tokens) == 4 and "token 3 replaced" in user.find(marker="gen-status").elements.pop().text


async def test_a_pick_while_streaming_keeps_streaming(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.02)
    c.state.max_tokens = 40
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 8, message="some tokens")
    await c.branching.choose(2, other_alternative(c.state.tokens[2]))
    await wait_until(lambda: c.state.generating, message="the continuation to stream")
    shown = len(c.state.tokens)
    await settled(c)
    assert len(c.state.tokens) > shown >= 3


async def test_readouts_agree_with_the_tokens_after_stop(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.03)
    c.state.max_tokens = 60
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 9, message="some tokens")
    user.find("Stop").click()
    n = len(c.state.tokens)
    await asyncio.sleep(0.3)  # a step in flight finishes and is dropped
    assert len(c.state.tokens) == n == len(chips(user))
    perplexity = user.find(marker="perplexity").elements.pop().text
    assert re.search(rf"over {n} tokens", perplexity), perplexity
    assert len(c.views.chart.chart.options["series"][0]["data"]) == n
    await wait_until(lambda: c.state.branches and len(c.state.branches[0].tokens) == n, message="branch panel")
    assert f"{n} tokens" in user.find(marker="branch-0").elements.pop().default_slot.children[0].text


async def test_switching_branches_moves_the_chart_selection(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    await generated(user, c, 10)
    await second_branch_at_2(c)
    c.explore.select_position(1)
    assert c.views.chart.selected == 1
    await c.branching.switch(0)
    assert c.views.chart.selected is None and c.state.selected is None
    assert len(c.views.chart.chart.options["series"][0]["data"]) == len(c.state.tokens) == 10


async def test_fast_next_presses_are_queued(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.05)
    from tests.test_ui_explore import key

    for _ in range(5):
        c.keyboard.on_key(key("n"))  # 5 presses while the first step runs
        await asyncio.sleep(0.01)
    await wait_until(lambda: len(c.state.tokens) == 5 and not c.state.busy, message="five tokens")
    await asyncio.sleep(0.2)
    assert len(c.state.tokens) == 5


async def test_an_edited_prompt_asks_before_discarding_branches(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    await generated(user, c, 6)
    await second_branch_at_2(c)
    prompt = c.state.prompt
    c.state.prompt = prompt + " and more"
    user.find("Generate Next Token").click()
    await user.should_see(marker="start-over")
    user.find(marker="start-over-no").click()
    await settled(c)
    assert len(c.state.branches) == 2 and c.state.prompt == prompt and len(c.state.tokens) == 3

    c.state.prompt = prompt + " and more"
    user.find("Generate Next Token").click()
    await user.should_see(marker="start-over")
    user.find(marker="start-over-yes").click()
    await settled(c)
    assert c.state.handle.prompt == prompt + " and more" and len(c.state.tokens) == 1


async def test_clamped_sampling_values_are_said(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    c.state.temperature, c.state.top_p = 9, 1.5
    user.find("Generate Next Token").click()
    await idle(c)
    assert "Temperature 9 is above 5; using 5." in user.notify.messages
    assert "Top-p 1.5 is above 1; using 1." in user.notify.messages
    assert c.state.tokens[0].sampling.temperature == 5 and c.state.tokens[0].sampling.top_p == 1
