"""The page/engine seam (issue 12): one operation guard for every flow, capabilities instead of probing,
the model's notices and the session's warnings shown, one list of shown tokens."""

from __future__ import annotations

import asyncio

from nicegui.testing import User

from tests.fake_backend import FakeModel, FakeModelManager
from tokviz_app.core.contract import Capabilities
from tests.ui_helpers import chips, idle, open_ready, wait_until
from tokviz_app.exports.snapshot import to_json


async def generated(user: User, c, n: int) -> None:
    """`n` more tokens (the fake's default seed makes them the same every run, none an end of text)."""
    total = len(c.state.tokens) + n
    c.state.max_tokens = n
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) == total and not c.state.busy, message=f"{total} tokens")


async def test_reset_during_an_import_keeps_the_reset(user: User, tokviz_page, monkeypatch) -> None:
    """Importing used to claim the tab without a new epoch: a Reset during the restore was overwritten by
    the import when it finished. Now the import is a stale operation and its session is freed."""
    app, c = await open_ready(user, tokviz_page)
    await generated(user, c, 6)
    text = to_json(await app.service.snapshot(c.state.handle))
    user.find("Reset").click()
    restore = app.service.restore

    async def slow_restore(model, snapshot):
        await asyncio.sleep(0.3)
        return await restore(model, snapshot)

    monkeypatch.setattr(app.service, "restore", slow_restore)
    closed_before = app.manager.closed_sessions
    task = asyncio.create_task(c.files.import_json(text))
    await wait_until(lambda: c.state.busy, message="the import to claim the tab")
    user.find("Reset").click()
    await task
    await idle(c)
    assert c.state.tokens == [] and c.state.handle is None and chips(user) == []
    await wait_until(lambda: app.manager.closed_sessions > closed_before, message="the restored session freed")


async def test_a_branch_switch_is_one_operation(user: User, tokviz_page, monkeypatch) -> None:
    """Switching branches claims the tab like every flow: a choice clicked while it runs is ignored."""
    app, c = await open_ready(user, tokviz_page)
    await generated(user, c, 6)
    first = list(c.state.tokens)
    alternative = next(a.token_id for a in first[2].alternatives if a.token_id != first[2].token_id)
    await c.branching.choose(2, alternative)
    await wait_until(lambda: len(c.state.branches) == 2, message="two branches")
    await idle(c)  # the text after the pick is generated first (else that, not the switch, holds the tab)
    switch = app.service.switch_branch
    release = asyncio.Event()  # the switch runs until the test lets it go (a fixed sleep ran out on a slow machine)

    async def slow_switch(handle, branch_id):
        await release.wait()
        return await switch(handle, branch_id)

    monkeypatch.setattr(app.service, "switch_branch", slow_switch)
    task = asyncio.create_task(c.branching.switch(0))
    await wait_until(lambda: c.state.busy, message="the switch to claim the tab")
    await c.branching.choose(1, alternative)  # refused while the switch runs
    release.set()
    await task
    await idle(c)
    assert [s.token_id for s in c.state.tokens] == [s.token_id for s in first]
    assert len(c.state.branches) == 2 and c.state.active_branch == 0


async def test_model_notices_are_shown_under_its_status(user: User, tokviz_page) -> None:
    class NoticedManager(FakeModelManager):
        def load(self, name, progress=None):
            model = super().load(name, progress)
            model.notices = ["This server scores prompts only as top-10 lists."]
            return model

    await open_ready(user, tokviz_page, manager=NoticedManager())
    await user.should_see(marker="model-note", content="This server scores prompts only as top-10 lists.")


async def test_session_warnings_are_notified_once(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page)
    await generated(user, c, 2)
    c.state.handle.session.warnings.append("The server read the text again after a chosen token.")
    await generated(user, c, 2)
    await generated(user, c, 2)
    assert user.notify.messages.count("The server read the text again after a chosen token.") == 1


async def test_search_follows_the_capability_not_an_attribute(user: User, tokviz_page, monkeypatch) -> None:
    monkeypatch.setattr(FakeModel, "capabilities", property(lambda self: Capabilities(vocabulary_search=False)))
    app, c = await open_ready(user, tokviz_page)
    await generated(user, c, 3)
    c.views.tokens.clicked(1)
    await c.explore.search_tokens(c.state.tokens[1], "the")
    await user.should_see(marker="search-message", content="This model cannot search its vocabulary.")


async def test_views_render_the_one_list_of_tokens(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page)
    await generated(user, c, 5)
    assert c.views.tokens.steps is c.state.tokens and c.views.chart.steps is c.state.tokens
    assert [chip.props["data-position"] for chip in chips(user)] == [0, 1, 2, 3, 4]
