"""Chat mode on the page (issue 13 item 2), on the fake backend's ChatML template."""

from __future__ import annotations

from nicegui.testing import User

from tests.fake_backend import FakeModelManager
from tests.ui_helpers import idle, open_ready, prompt_chips, wait_until
from tokviz_app.exports.snapshot import to_json


async def chat_ready(user: User, tokviz_page, **options):
    app, c = await open_ready(user, tokviz_page, **options)
    await user.should_see(marker="chat-mode")
    user.find(marker="chat-mode").elements.pop().set_value(True)
    return app, c


async def chat_answered(user: User, tokviz_page, message: str, max_tokens: int):
    """A chat tab whose first user message has been answered (up to `max_tokens`)."""
    app, c = await chat_ready(user, tokviz_page)
    user.find(marker="user-message").elements.pop().set_value(message)
    c.state.max_tokens = max_tokens
    user.find("Generate to End").click()
    await idle(c, 20)
    return app, c


async def test_chat_mode_sends_the_messages_through_the_template(user: User, tokviz_page) -> None:
    app, c = await chat_ready(user, tokviz_page)
    assert not c.views.controls.prompt.visible, "the prompt box gives way to the messages"
    user.find(marker="system-message").elements.pop().set_value("Be brief.")
    user.find(marker="user-message").elements.pop().set_value("What is the capital of France?")
    c.state.max_tokens = 30
    user.find("Generate to End").click()
    await idle(c, 20)
    session = c.state.handle.session
    assert session.messages == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "What is the capital of France?"}]
    texts = [chip.text for chip in prompt_chips(user)]
    assert texts[0] == "<|im_start|>" and "<|im_end|>" in texts, "the template's special tokens are visible"
    last = c.state.tokens[-1]
    if c.state.finish_reason == "eos":  # the answer ends at the end of its turn, not at <|endoftext|>
        assert last.text == "<|im_end|>"


async def test_a_pick_inside_the_answer_continues_the_answer(user: User, tokviz_page) -> None:
    app, c = await chat_answered(user, tokviz_page, "Hello", 8)
    n_prompt = len(c.state.prompt_tokens)
    step = c.state.tokens[1]
    alt = next(a.token_id for a in step.alternatives if a.token_id != step.token_id)
    await c.branching.choose(1, alt)
    await wait_until(lambda: not c.state.busy and len(c.state.branches) == 2, message="the continued answer")
    assert len(c.state.prompt_tokens) == n_prompt, "the same turn: no new prompt"
    assert c.state.handle.session.messages[-1]["content"] == "Hello"


async def test_export_and_import_keep_the_chat(user: User, tokviz_page) -> None:
    app, c = await chat_answered(user, tokviz_page, "Hi there", 4)
    text = to_json(await app.service.snapshot(c.state.handle))
    user.find("Reset").click()
    c.state.chat, c.state.user_message = False, ""
    await c.files.import_json(text)
    await idle(c)
    assert c.state.chat and c.state.user_message == "Hi there"
    assert user.find(marker="user-message").elements.pop().value == "Hi there"
    assert c.state.handle.session.messages == [{"role": "user", "content": "Hi there"}]


async def test_models_without_a_template_offer_no_chat(user: User, tokviz_page) -> None:
    manager = FakeModelManager()
    manager.chat_template = False
    app_and_tab = await open_ready(user, tokviz_page, manager=manager)
    _, c = app_and_tab
    assert not c.views.chat.row.visible
