"""Issue 13 item 7: the page never shows one model and uses another (User fixture, fake backend)."""

from __future__ import annotations

from nicegui.testing import User

from tests.ui_helpers import chips, idle, open_ready, wait_until
from tokviz_app.core.types import Branch, SamplingParams
from tokviz_app.exports.snapshot import SessionSnapshot, to_json


def label(user: User) -> str:
    return user.find(marker="active-model").elements.pop().text


def dropdown(user: User):
    return user.find(marker="model-select").elements.pop()


async def test_the_model_is_named_next_to_the_tokens(user: User, tokviz_page) -> None:
    app = tokviz_page()
    await user.open("/")
    assert label(user) == "Model: none loaded yet"
    c = app.controllers[-1]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None, message="model loaded")
    assert label(user) == "Model: GPT-2 · cpu"
    dropdown(user).value = "distilgpt2"  # chosen, not initialized: the tokens still come from GPT-2
    await user.should_see(content="Using GPT-2. Press Initialize Model to load DistilGPT-2.")
    assert label(user) == "Model: GPT-2 · cpu"
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model.key == "distilgpt2", message="the switch")
    assert label(user) == "Model: DistilGPT-2 · cpu"


async def test_a_failed_switch_puts_the_dropdown_back(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page)
    user.find("Generate Next Token").click()
    await idle(c)
    loads = app.manager.load_calls
    dropdown(user).value = "huge-model"
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.error, message="the failure")
    await user.should_see(content="Still using GPT-2: Not enough memory to load 'huge-model'")
    assert dropdown(user).value == "gpt2" and c.state.model_key == "gpt2", "the dropdown shows the model in use"
    assert label(user) == "Model: GPT-2 · cpu"
    assert "tv-error" in user.find(marker="model-status").elements.pop().classes
    assert app.manager.load_calls == loads + 1, "putting the dropdown back loads nothing"
    assert len(chips(user)) == 1 and c.state.model.key == "gpt2", "the text and the model are untouched"
    user.find("Generate Next Token").click()  # and it goes on with GPT-2
    await idle(c)
    assert len(chips(user)) == 2


async def test_a_failed_first_load_keeps_the_choice(user: User, tokviz_page) -> None:
    """With no model in use there is nothing to go back to: the dropdown keeps the choice to retry."""
    app = tokviz_page()
    await user.open("/")
    c = app.controllers[-1]
    dropdown(user).value = "offline-model"
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.error, message="the failure")
    await user.should_see(content="You are offline")
    assert dropdown(user).value == "offline-model" and label(user) == "Model: none loaded yet"


def snapshot_made_with(c, key: str, label: str) -> bytes:
    """The tab's session exported as if another model had made it."""
    session = c.state.handle.session
    snapshot = SessionSnapshot(model={"key": key, "label": label, "source": "x"}, settings=SamplingParams(),
                               prompt="The quick brown fox", prompt_ids=[s.token_id for s in session.prompt_tokens],
                               prompt_tokens=list(session.prompt_tokens), branches=[Branch(0, list(session.tokens))])
    return to_json(snapshot).encode()


async def test_an_import_made_with_another_model_says_so(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find("Generate Next Token").click()
    await idle(c)
    await c.files.import_json(snapshot_made_with(c, "gpt2-medium", "GPT-2 Medium"))
    await user.should_see(content="This session was made with GPT-2 Medium; initialize it to continue.")
    assert dropdown(user).value == "gpt2-medium"
    assert label(user) == ("Model: GPT-2 Medium · read-only import (not loaded here) · "
                           "loaded: GPT-2 · cpu")
    user.find("Reset").click()  # the import is gone: the label names the model in use again
    await wait_until(lambda: label(user) == "Model: GPT-2 · cpu", message="the label after Reset")


async def test_an_import_of_a_model_not_offered_stays_read_only(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find("Generate Next Token").click()
    await idle(c)
    await c.files.import_json(snapshot_made_with(c, "someone/else", "Elsewhere-7B"))
    await user.should_see(content="This session was made with Elsewhere-7B, which is not offered here")
    assert dropdown(user).value == "gpt2" and label(user).startswith("Model: Elsewhere-7B · read-only import")
