"""User-fixture tests of the page on the real engine with the tiny GPT-2 built by tests/tiny_model.py."""

from __future__ import annotations

import pytest
from nicegui.testing import User

from tests.ui_helpers import button, chips, idle, prompt_chips, wait_until
from tokviz_app.config import Settings
from tokviz_app.present.text import visible_text

pytestmark = pytest.mark.slow


@pytest.fixture
def real_manager(engine_manager):
    """The session's real ModelManager (conftest), shared with the engine tests."""
    return engine_manager


async def test_full_flow_on_the_tiny_model(user: User, tokviz_page, tiny_model_path, real_manager) -> None:
    app = tokviz_page(manager=real_manager, settings=Settings(models=[str(tiny_model_path)]))
    await user.open("/")
    c = app.controllers[0]
    assert user.find(marker="model-select").elements.pop().value == str(tiny_model_path)
    description = user.find(marker="model-description").elements.pop().text
    assert "Local folder" in description and ("local folder" in description or "loaded" in description)
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None, 60, "the tiny model to load")
    await user.should_see(content=f"Ready: {c.state.model.label} on cpu")

    for _ in range(3):
        user.find("Generate Next Token").click()
        await idle(c, 30)
    session = c.state.handle.session
    assert [s.token_id for s in session.tokens] == [s.token_id for s in c.state.tokens]
    assert [chip.props["data-position"] for chip in chips(user)] == [0, 1, 2]
    assert len(prompt_chips(user)) == len(session.prompt_tokens) > 1

    user.find(marker="token-1").click()
    await user.should_see(marker="alt-menu")
    step = c.state.tokens[1]
    assert len(step.alternatives) == 10
    ids = [int(user.find(marker=f"alt-{i}").elements.pop().props["data-token-id"]) for i in range(10)]
    assert ids == [a.token_id for a in step.alternatives]
    rank, alt = next((i, a) for i, a in enumerate(step.alternatives) if a.token_id != step.token_id)
    user.find(marker=f"alt-{rank}").click()
    await wait_until(lambda: len(c.state.tokens) == 2 and c.state.tokens[1].token_id == alt.token_id, 30, "choice")
    assert c.state.tokens[1].prob == pytest.approx(alt.prob, rel=1e-4)
    assert chips(user)[1].text == visible_text(alt.text)

    user.find(marker="max-tokens").elements.pop().value = 20
    user.find("Generate to End").click()
    await idle(c, 60)
    n = len(chips(user))
    assert 3 <= n <= 22
    assert [s.token_id for s in session.tokens] == [s.token_id for s in c.state.tokens]
    assert session.text.startswith("The quick brown fox")

    user.find("Reset").click()
    assert chips(user) == []
    assert button(user, "Generate Next Token").enabled
    await wait_until(lambda: session.closed, 10, "the session to be freed")


async def test_second_tab_gets_the_loaded_model_at_once(user: User, create_user, tokviz_page, tiny_model_path,
                                                         real_manager) -> None:
    app = tokviz_page(manager=real_manager, settings=Settings(models=[str(tiny_model_path)]))
    await user.open("/")
    user.find("Initialize Model").click()
    await wait_until(lambda: app.controllers[0].state.model is not None, 60, "the tiny model to load")
    other = create_user()
    await other.open("/")
    assert app.controllers[1].state.model is app.controllers[0].state.model
    await other.should_see(content=f"Ready: {app.controllers[0].state.model.label}")
