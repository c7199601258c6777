"""Fast UI tests (NiceGUI User fixture) on the fake backend, which has the engine's real interface."""

from __future__ import annotations

import asyncio

import pytest
from nicegui import ElementFilter, ui
from nicegui.elements.menu import Menu, MenuItem
from nicegui.testing import User

from tests.fake_backend import VOCAB_TEXT, FakeModelManager
from tests.ui_helpers import button, chips, idle, open_ready, prompt_chips, wait_until
from tokviz_app.config import Settings
from tokviz_app.present.scales import level_of_value, prob_class
from tokviz_app.present.text import percent, visible_text

BUTTONS = ["Initialize Model", "Generate Next Token", "Generate to End", "Stop", "Reset"]


# ---------------------------------------------------------------------------------------------- page
async def test_page_shows_catalog_legend_and_buttons(user: User, tokviz_page) -> None:
    tokviz_page(settings=Settings(models=["my/model"]))
    await user.open("/")
    for name in BUTTONS:
        await user.should_see(name)
        assert button(user, name).text == name
    select = user.find(marker="model-select").elements.pop()
    assert select.value == "my/model", "the first --model is preselected"
    labels = list(select.options.values())
    assert labels[:4] == ["GPT-2 — cached", "GPT-2 Medium — needs a download", "DistilGPT-2 — needs a download",
                          "SmolLM2-135M (bundled) — works offline"]
    assert "my/model — needs a download" in labels
    await user.should_see(content="Added on the command line")  # description of the selected model
    user.find(marker="model-select").elements.pop().value = "gpt2"
    await user.should_see(content="OpenAI GPT-2, 124M parameters · cached")
    for name in ("green", "blue", "purple", "orange", "red"):
        await user.should_see(marker=f"legend-{name}")
    await user.should_see(content="> 70%")
    assert not button(user, "Generate Next Token").enabled, "nothing to generate with before a model is loaded"
    assert not button(user, "Stop").enabled


async def test_initialize_shows_progress_then_ready(user: User, tokviz_page) -> None:
    app = tokviz_page(load_delay=0.4)
    await user.open("/")
    c = app.controllers[0]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.loading, message="loading to start")
    await user.should_see(marker="load-progress")
    await user.should_see(content="Loading GPT-2")
    assert not button(user, "Initialize Model").enabled
    user.find(marker="prompt").type(" jumps")  # the page stays live while loading
    await wait_until(lambda: c.state.model is not None, message="model loaded")
    await user.should_see(content="Ready: GPT-2 on cpu (float32)")
    await user.should_not_see(marker="load-progress")
    assert button(user, "Generate Next Token").enabled and button(user, "Generate to End").enabled
    assert user.find(marker="model-select").elements.pop().options["gpt2"] == "GPT-2 — loaded"


async def test_model_is_usable_while_it_still_optimises(user: User, tokviz_page) -> None:
    """The bundled model's fast path is prepared in the background: the page says so, generation works
    meanwhile, and the status line drops the note once it is done."""
    app = tokviz_page()
    c = await load_while_optimising(user, app)
    user.find("Generate Next Token").click()
    await idle(c)
    assert len(chips(user)) == 1 and "Still optimising…" in status_text(user)
    app.manager.optimising.clear()
    await wait_until(lambda: "optimising" not in status_text(user), message="the note to go")
    assert status_text(user).startswith("Ready: GPT-2 on cpu (float32)")
    user.find("Generate Next Token").click()
    await idle(c)
    assert len(chips(user)) == 2


async def test_the_end_of_optimising_leaves_a_load_in_progress_on_the_status_line(user: User, tokviz_page) -> None:
    app = tokviz_page(load_delay=1.5)
    c = await load_while_optimising(user, app)
    user.find(marker="model-select").elements.pop().value = "distilgpt2"
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.loading, message="the second load")
    shown, set_status = [], c.views.picker.set_status
    c.views.picker.set_status = lambda text, **kw: (shown.append(text), set_status(text, **kw))
    app.manager.optimising.clear()
    await asyncio.sleep(1.0)  # two ticks of the page's check
    assert c.state.loading and not any(text.startswith("Ready") for text in shown), shown
    await wait_until(lambda: c.state.model.key == "distilgpt2", message="the new model")
    await user.should_see(content="Ready: DistilGPT-2")


async def load_while_optimising(user: User, app):
    """Open the page and load the preselected model, which then says it is still optimising."""
    app.manager.optimising.set()
    await user.open("/")
    c = app.controllers[0]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None, message="model loaded")
    await user.should_see(content="Still optimising…")
    return c


def status_text(user: User) -> str:
    return user.find(marker="model-status").elements.pop().text


@pytest.mark.parametrize(("key", "expected"), [
    ("no/such-model", "'no/such-model' is neither a known model"),
    ("offline-model", "You are offline"),
    ("huge-model", "out of memory"),
])
async def test_initialize_failure_shows_message(user: User, tokviz_page, key: str, expected: str) -> None:
    app = tokviz_page(settings=Settings(models=[key]))
    await user.open("/")
    user.find("Initialize Model").click()
    await wait_until(lambda: app.controllers[0].state.error, message="an error")
    await user.should_see(content=expected)  # status line and notification
    assert "tv-error" in user.find(marker="model-status").elements.pop().classes
    assert button(user, "Initialize Model").enabled, "the user can try again or pick another model"
    assert not button(user, "Generate Next Token").enabled


async def test_unexpected_load_error_is_a_message_not_a_crash(user: User, tokviz_page) -> None:
    class Exploding(FakeModelManager):
        def load(self, name, progress=None):
            raise MemoryError()

    app = tokviz_page(manager=Exploding())
    await user.open("/")
    user.find("Initialize Model").click()
    await wait_until(lambda: app.controllers[0].state.error, message="an error")
    await user.should_see(content="Not enough memory to load 'gpt2'")


async def test_switching_models_starts_over(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find("Generate Next Token").click()
    await idle(c)
    old = c.state.handle
    user.find(marker="model-select").elements.pop().value = "distilgpt2"
    await user.should_see(content="Using GPT-2. Press Initialize Model to load DistilGPT-2.")
    assert c.state.model.key == "gpt2" and len(chips(user)) == 1, "nothing changes before Initialize"
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model.key == "distilgpt2", message="the new model")
    await user.should_see(content="Ready: DistilGPT-2")
    assert chips(user) == [] and c.state.handle is None
    await wait_until(lambda: old.closed and old.session.closed, message="the old session to be freed")
    user.find(marker="model-select").elements.pop().value = "gpt2"  # loaded already: instant
    assert c.state.model.key == "gpt2"


# ---------------------------------------------------------------------------------------- generation
async def test_generate_next_token_three_times(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    for _ in range(3):
        user.find("Generate Next Token").click()
        await idle(c)
    shown = chips(user)
    assert [chip.props["data-position"] for chip in shown] == [0, 1, 2]
    session = c.state.handle.session
    assert [s.token_id for s in session.tokens] == [s.token_id for s in c.state.tokens]
    for chip, step in zip(shown, session.tokens):
        assert chip.text == visible_text(step.text)
        assert float(chip.props["data-prob"]) == pytest.approx(step.prob, abs=1e-6)
        assert prob_class(step.prob) in chip.classes
        assert f"rank {step.rank}" in chip.props["title"] and "probability" in chip.props["title"]
    # the prompt's own tokens: muted chips, coloured once scored (the first one has no prediction)
    shown_prompt = prompt_chips(user)
    assert len(shown_prompt) == len(session.prompt_tokens) == 4  # "The quick brown fox"
    assert [chip.text for chip in shown_prompt] == ["The", "·quick", "·brown", "·fox"]
    assert all("tv-token" not in chip.classes and "data-position" not in chip.props for chip in shown_prompt)
    first = user.find(marker="prompt-token-0").elements.pop()
    assert "tv-p-none" in first.classes
    second = user.find(marker="prompt-token-1").elements.pop()
    assert prob_class(session.prompt_tokens[1].prob) in second.classes
    await user.should_see(content="3 tokens")


async def test_generate_to_end_streams_up_to_max_tokens(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page, step_delay=0.01)
    assert user.find(marker="max-tokens").elements.pop().value >= 50
    seen: list[int] = []
    user.find("Generate to End").click()
    while c.state.busy:  # tokens appear one by one while the generation runs
        seen.append(len(chips(user)))
        await asyncio.sleep(0.02)
    assert len(chips(user)) == 50
    assert len({n for n in seen if 0 < n < 50}) >= 5, f"no streaming seen: {seen}"
    await user.should_see(content="50 tokens · finished: reached the max-tokens setting")
    assert app.manager.steps == 50


async def test_generate_to_end_stops_at_end_of_text(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, eos_at=3)
    user.find("Generate to End").click()
    await idle(c)
    assert len(chips(user)) == 4
    assert c.state.tokens[-1].text == "<|endoftext|>"
    await user.should_see(content="finished: end of text")


async def test_buttons_while_generating_and_stop_keeps_tokens(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.03)
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 4, message="a few tokens")
    assert not button(user, "Generate Next Token").enabled
    assert not button(user, "Generate to End").enabled
    assert button(user, "Stop").enabled
    user.find("Stop").click()
    assert not c.state.busy, "Stop takes effect at once"
    kept = len(chips(user))
    await asyncio.sleep(0.2)  # a step that was in flight is dropped, nothing more arrives
    assert len(chips(user)) == kept == len(c.state.tokens)
    assert button(user, "Generate Next Token").enabled and not button(user, "Stop").enabled
    await user.should_see(content=f"{kept} tokens · stopped")
    # continuing after a stop: the session is reconciled with what the page shows
    user.find("Generate Next Token").click()
    await idle(c)
    assert [chip.props["data-position"] for chip in chips(user)] == list(range(kept + 1))
    assert [s.token_id for s in c.state.handle.session.tokens] == [s.token_id for s in c.state.tokens]


async def test_double_click_starts_one_generation(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page, step_delay=0.005)
    user.find(marker="max-tokens").elements.pop().value = 20
    user.find("Generate to End").click()
    user.find("Generate to End").click()  # a fast double click: the button may not be disabled yet
    c.generation.to_end()  # and a click that raced the disabling
    c.generation.next()
    await idle(c)
    assert len(chips(user)) == 20
    assert app.manager.steps == 20
    assert len(app.manager.sessions) == 1


async def test_reset_clears_tokens_keeps_prompt_and_model(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page, step_delay=0.02)
    user.find(marker="prompt").elements.pop().value = "Hello world"
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, message="a few tokens")
    user.find(marker="token-1").click()
    user.find("Reset").click()  # also stops the running generation
    assert not c.state.busy
    await asyncio.sleep(0.1)
    assert chips(user) == [] and c.state.tokens == []
    await user.should_see(marker="details-empty")
    assert user.find(marker="prompt").elements.pop().value == "Hello world"
    assert c.state.model is not None and button(user, "Generate Next Token").enabled
    await wait_until(lambda: app.manager.closed_sessions == 1, message="the old session to be freed")
    user.find("Generate Next Token").click()
    await idle(c)
    assert [chip.props["data-position"] for chip in chips(user)] == [0]


async def test_prompt_is_read_when_generation_starts(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page)
    user.find("Generate Next Token").click()
    await idle(c)
    user.find("Generate Next Token").click()
    await idle(c)
    assert len(chips(user)) == 2
    user.find(marker="prompt").elements.pop().value = "Hello"
    user.find("Generate Next Token").click()
    await idle(c)
    assert len(chips(user)) == 1, "a new prompt starts over"
    assert [e.text for e in prompt_chips(user)] == ["Hello"]
    assert c.state.handle.session.prompt_tokens[0].text == "Hello"
    await wait_until(lambda: app.manager.closed_sessions == 1, message="the old session to be freed")


async def test_empty_prompt_is_allowed(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find(marker="prompt").elements.pop().value = ""
    user.find("Generate Next Token").click()
    await idle(c)
    assert len(chips(user)) == 1


async def test_context_full_and_prompt_too_long(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, context_length=8)
    user.find("Generate to End").click()  # 4 prompt tokens + 4 new ones fill the context
    await idle(c)
    assert len(chips(user)) == 4
    await user.should_see("The context window of 8 tokens is full")  # notification
    await user.should_see(content="finished: the context window is full")
    user.find(marker="prompt").elements.pop().value = "one two three four five six seven eight nine"
    user.find("Generate Next Token").click()
    await idle(c)
    await user.should_see("reads at most 8 tokens")
    assert chips(user) == []
    assert button(user, "Generate Next Token").enabled


# ---------------------------------------------------------------------------------- tokens and menus
async def test_click_token_opens_alternatives_and_details(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find(marker="max-tokens").elements.pop().value = 5
    user.find("Generate to End").click()
    await idle(c)
    with user:
        assert not list(ElementFilter(kind=MenuItem, local_scope=False)), "menus are built on demand only"
    user.find(marker="token-2").click()
    await user.should_see(marker="alt-menu")
    step = c.state.tokens[2]
    items = [user.find(marker=f"alt-{i}").elements.pop() for i in range(10)]
    assert [int(item.props["data-token-id"]) for item in items] == [a.token_id for a in step.alternatives]
    assert all("tv-alt" in item.classes for item in items)
    current = [item for item in items if "tv-alt-current" in item.classes]
    if step.rank <= 10:
        assert len(current) == 1 and int(current[0].props["data-token-id"]) == step.token_id
    else:
        await user.should_see(marker="alt-current-note")
    with user.scope(marker="alt-0"):
        await user.should_see(content=visible_text(step.alternatives[0].text))
        await user.should_see(content=percent(step.alternatives[0].prob))
    # details panel for the clicked token
    await user.should_see(content="generated token 2")
    for marker, value in [("details-id", str(step.token_id)), ("details-position", "2"),
                          ("details-rank", str(step.rank)), ("details-repr", repr(step.text)),
                          ("details-logprob", f"{step.logprob:.4f}"), ("details-entropy", f"{step.entropy:.2f} bits")]:
        assert user.find(marker=marker).elements.pop().text == value, marker
    await user.should_see(marker="details-prob")
    await user.should_see(marker="details-sampled")
    await user.should_see(marker="chart-bar-9")
    # one menu per tab: opening another replaces it
    user.find(marker="token-4").trigger("contextmenu.prevent")  # right click
    await user.should_see(content="Alternatives for token 4")
    with user:
        assert len(list(ElementFilter(kind=Menu, local_scope=False))) == 1


async def test_choose_alternative_replaces_token_and_drops_the_rest(user: User, tokviz_page) -> None:
    """With "continue after a pick" off (tests/test_ui_first_minutes.py has it on)."""
    _, c = await open_ready(user, tokviz_page)
    user.find(marker="continue-after-pick").elements.pop().set_value(False)
    user.find(marker="max-tokens").elements.pop().value = 6
    user.find("Generate to End").click()
    await idle(c)
    old = c.state.tokens[2]
    alt_rank, alt = next((i, a) for i, a in enumerate(old.alternatives) if a.token_id != old.token_id)
    user.find(marker="token-2").click()
    await user.should_see(marker="alt-menu")
    user.find(marker=f"alt-{alt_rank}").click()
    await wait_until(lambda: len(c.state.tokens) == 3 and c.state.tokens[2].token_id == alt.token_id,
                     message="the choice")
    shown = chips(user)
    assert [chip.props["data-position"] for chip in shown] == [0, 1, 2]
    assert shown[2].text == visible_text(alt.text)
    assert c.state.tokens[2].prob == pytest.approx(alt.prob)
    assert [s.token_id for s in c.state.handle.session.tokens] == [s.token_id for s in c.state.tokens]
    await user.should_see(content="token 2 replaced")
    await user.should_see(content="generated token 2")  # the new token is selected
    user.find("Generate to End").click()  # and the user continues from there
    await idle(c)
    assert len(chips(user)) == 3 + 6
    assert [s.token_id for s in c.state.tokens[:3]] == [s.token_id for s in c.state.handle.session.tokens[:3]]


async def test_click_and_choose_during_generation(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.03)
    c.state.continue_after_pick = False  # on, the stream goes on after the pick (test_ui_first_minutes.py)
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, message="a few tokens")
    user.find(marker="token-1").click()  # the page is live mid-stream
    await user.should_see(marker="alt-menu")
    await user.should_see(content="generated token 1")
    assert c.state.busy, "opening a menu does not stop the stream"
    step = c.state.tokens[1]
    user.find(marker="alt-5").click()  # choosing stops the stream and regenerates from there
    await wait_until(lambda: len(c.state.tokens) == 2 and not c.state.busy, message="the choice")
    await asyncio.sleep(0.1)
    assert len(chips(user)) == 2
    assert c.state.tokens[1].token_id == step.alternatives[5].token_id
    assert [s.token_id for s in c.state.handle.session.tokens] == [s.token_id for s in c.state.tokens]


async def test_token_text_is_text_never_html(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find(marker="prompt").elements.pop().value = "<script> &\n\t🦊"
    user.find("Generate Next Token").click()
    await idle(c)
    texts = [e.text for e in prompt_chips(user)]
    assert "<script>" in texts and "·&" in texts and "↵" in texts and "→" in texts
    with user:
        assert not list(ElementFilter(kind=ui.html, local_scope=False))
        assert len(list(ElementFilter(kind=ui.element, local_scope=False).within(
            marker="prompt-tokens"))) >= 1
    partial = [e for e in prompt_chips(user) if "tv-partial" in e.classes]
    assert [e.text for e in partial] == ["🦊", "◂", "◂", "◂"], "one character over four byte tokens: shown once"
    assert "part 1 of 4 of “🦊”" in partial[0].props["title"] and "part 4 of 4" in partial[3].props["title"]
    user.find(marker="prompt-token-0").click()  # prompt tokens show their details too
    await user.should_see(content="prompt token 0")
    assert user.find(marker="details-text").elements.pop().text == "<script>"
    assert user.find(marker="details-repr").elements.pop().text == "'<script>'"


def test_visible_text_and_buckets() -> None:
    assert visible_text(" a\nb\tc\r") == "·a↵b→c␍"
    assert visible_text("") == "∅"
    assert visible_text("\x00\x1b") == "␀␛"
    assert visible_text("<b>") == "<b>"
    assert [percent(p) for p in (None, 0.5, 0.0338, 0.00012, 1e-9)] == ["–", "50.0%", "3.4%", "0.01%", "< 0.01%"]
    assert [level_of_value(p, "prob") for p in (0.71, 0.70, 0.5, 0.49, 0.3, 0.29, 0.1, 0.099, 0.0)] == \
        ["green", "blue", "blue", "purple", "purple", "orange", "orange", "red", "red"]
    assert level_of_value(None, "prob") is None and prob_class(None) == "tv-p-none"
    assert "<|endoftext|>" in VOCAB_TEXT


# -------------------------------------------------------------------------------------- tabs
async def test_two_tabs_share_the_model_but_nothing_else(user: User, create_user, tokviz_page) -> None:
    app, c1 = await open_ready(user, tokviz_page, load_delay=0.1)
    user.find(marker="max-tokens").elements.pop().value = 3
    user.find("Generate to End").click()
    await idle(c1)

    other: User = create_user()
    await other.open("/")
    c2 = app.controllers[-1]
    assert c2 is not c1 and c2.state is not c1.state
    assert c2.state.model is c1.state.model, "an already loaded model is ready at once in a new tab"
    await other.should_see(content="Ready: GPT-2")
    other.find("Initialize Model").click()  # instant, no second load
    assert app.manager.load_calls == 1
    assert chips(other) == []
    other.find(marker="prompt").elements.pop().value = "Hello"
    other.find(marker="temperature").elements.pop().value = 0.5
    other.find("Generate Next Token").click()
    await idle(c2)
    other.find(marker="token-0").click()
    assert len(chips(other)) == 1 and len(chips(user)) == 3
    assert c1.state.temperature == 1.0 and c2.state.temperature == 0.5
    assert c1.state.selected is None and c2.state.selected is c2.state.tokens[0]
    assert c1.state.handle is not c2.state.handle
    assert user.find(marker="prompt").elements.pop().value == "The quick brown fox"


async def test_closing_a_tab_mid_generation_cancels_and_frees_its_session(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page, step_delay=0.03)
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, message="a few tokens")
    user.client.delete()  # what NiceGUI does when the tab is gone
    await wait_until(lambda: app.manager.closed_sessions == 1, message="the session to be closed")
    assert c.state.closed and c.state.task is None
    steps = app.manager.steps
    await asyncio.sleep(0.15)
    assert app.manager.steps == steps, "no more work for a closed tab"
    assert app.manager.sessions[0].closed
