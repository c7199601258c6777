"""Bad input: each case gets a clear message or correct behaviour, and the server keeps serving other tabs.

Most cases run on the real engine with the tiny GPT-2 (context 256 tokens, byte-level BPE); the
timing-sensitive ones (double clicks, slow loads) use the fake backend.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time

import pytest
from nicegui import ElementFilter, ui
from nicegui.testing import User

from tests.browser_page import page_wait
from tests.fake_backend import VOCAB_TEXT
from tests.ui_helpers import button, chips, idle, loop_gaps, prompt_chips, wait_until
from tokviz_app.config import Settings
from tokviz_app.ui.tokens import TokenChip


@pytest.fixture
def real_page(tokviz_page, engine_manager, tiny_model_path):
    def register(**settings):
        return tokviz_page(manager=engine_manager, settings=Settings(models=[str(tiny_model_path)], **settings))

    return register


async def ready(user: User, app, index: int = -1):
    await user.open("/")
    c = app.controllers[index]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None, 60, "the model to load")
    return c


def set_prompt(user: User, text: str) -> None:
    user.find(marker="prompt").elements.pop().value = text


def status(user: User) -> str:
    return user.find(marker="model-status").elements.pop().text


def notifications(user: User) -> list[str]:
    """ui.notify messages (the User fixture records them; it replaces ui.notify whenever it is used)."""
    return user.notify.messages


async def another_tab_works(create_user, app) -> None:
    """The server still serves: a new tab generates a token on the shared model."""
    other: User = create_user()
    await other.open("/")
    c = app.controllers[-1]
    if c.state.model is None:  # its preselected model is not loaded yet
        other.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None, 30, "a model in the new tab")
    set_prompt(other, "Hello")
    other.find("Generate Next Token").click()
    await idle(c, 30)
    assert len(chips(other)) == 1 and not c.state.error


# ------------------------------------------------------------------------------------------- prompts
async def test_empty_prompt_starts_from_the_beginning_of_text(user: User, real_page) -> None:
    c = await ready(user, real_page())
    set_prompt(user, "")
    user.find("Generate Next Token").click()
    await idle(c, 30)
    session = c.state.handle.session
    assert len(chips(user)) == 1
    assert session.text == c.state.model.decode([c.state.tokens[0].token_id]), "the start token is not text"
    assert c.state.finish_reason != "error"


async def test_prompt_beyond_the_context_window(user: User, real_page, monkeypatch) -> None:
    seen = notifications(user)
    c = await ready(user, real_page())
    set_prompt(user, "word " * 400)
    user.find("Generate Next Token").click()
    await idle(c, 30)
    assert chips(user) == [] and c.state.finish_reason == "error"
    assert any("reads at most 256 tokens" in m and "Shorten it by at least" in m for m in seen), seen
    set_prompt(user, "word " * 10)  # the tab stays usable
    user.find("Generate Next Token").click()
    await idle(c, 30)
    assert len(chips(user)) == 1


async def test_a_megabyte_paste_gets_a_message_and_never_blocks_the_event_loop(
        user: User, create_user, real_page, monkeypatch) -> None:
    """The prompt box takes 200,000 characters (the browser cuts a bigger paste; test_..._in_chromium);
    a bigger value that still arrives is refused at once, and the cut paste is tokenized in a worker thread."""
    seen = notifications(user)
    app = real_page()
    c = await ready(user, app)
    assert int(user.find(marker="prompt").elements.pop().props["maxlength"]) == 200_000
    text = ("The quick brown fox jumps over the lazy dog. " * 23_000)[:1_000_000]
    set_prompt(user, text)
    user.find("Generate Next Token").click()
    await idle(c, 10)
    assert any("1,000,000 characters long; this server takes at most 200,000" in m for m in seen), seen

    set_prompt(user, text[:200_000])  # what the browser keeps of the paste
    encoding_threads: list[int] = []
    real_encode = type(c.state.model).encode
    monkeypatch.setattr(type(c.state.model), "encode",
                        lambda model, prompt: encoding_threads.append(threading.get_ident()) or real_encode(model, prompt))
    async with loop_gaps() as gaps:
        started = time.perf_counter()
        user.find("Generate Next Token").click()
        await idle(c, 60)
        took = time.perf_counter() - started
    print(f"200,000-character prompt: refused after {took:.2f} s, longest event-loop stall {max(gaps) * 1000:.0f} ms")
    assert any("reads at most 256 tokens" in m for m in seen), seen
    # Where it runs is the point (a stall measured in ms depends on the machine's load): not on the loop.
    assert encoding_threads and threading.get_ident() not in encoding_threads, "tokenizing runs in a worker thread"
    assert max(gaps) < 2.0, "the event loop kept ticking"
    assert chips(user) == []
    await another_tab_works(create_user, app)


async def test_control_characters_and_invalid_surrogates(user: User, real_page, monkeypatch) -> None:
    seen = notifications(user)
    c = await ready(user, real_page())
    set_prompt(user, "a\x00b\x07c\x1b[0m\r\n x\ud800y\udfff")
    user.find("Generate Next Token").click()
    await idle(c, 30)
    assert len(chips(user)) == 1 and c.state.finish_reason != "error"
    assert any("2 invalid characters" in m and "replaced by �" in m for m in seen), seen
    text = "".join(chip.text for chip in prompt_chips(user))
    assert "␀" in text and "␇" in text and "␛" in text and "␍" in text and "↵" in text
    assert "\ud800" not in c.state.handle.session.text and "x�y�" in c.state.handle.session.text


async def test_emoji_split_across_tokens(user: User, real_page) -> None:
    c = await ready(user, real_page())
    set_prompt(user, "fox 🦊🎉!")
    user.find("Generate Next Token").click()
    await idle(c, 30)
    partial = [chip.text for chip in prompt_chips(user) if "tv-partial" in chip.classes]
    joined = "".join(partial)  # each emoji once, on the chip where its bytes start; ◂ on the rest of it
    assert partial and joined.count("🦊") == 1 and joined.count("🎉") == 1 and "‹" not in joined, partial
    assert all(t.strip("·").startswith(("🦊", "🎉", "◂")) for t in partial), partial
    assert c.state.handle.session.text.startswith("fox 🦊🎉!"), "the full text joins the bytes again"


async def test_script_in_prompt_and_in_tokens_is_text(user: User, tokviz_page) -> None:
    """The fake vocabulary has "<script>" and " <b>" as single tokens: force them, they stay text."""
    app = tokviz_page()
    await user.open("/")
    c = app.controllers[0]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None)
    set_prompt(user, "<script>alert(1)</script><img src=x onerror=alert(2)>")
    user.find("Generate Next Token").click()
    await idle(c)
    await c.branching.choose(0, VOCAB_TEXT.index("<script>"))  # a choice drops the tokens after it
    user.find("Generate Next Token").click()
    await idle(c)
    await c.branching.choose(1, VOCAB_TEXT.index(" <b>"))
    assert [chip.text for chip in chips(user)] == ["<script>", "·<b>"]
    assert "<script>" in [chip.text for chip in prompt_chips(user)]
    with user:
        assert not list(ElementFilter(kind=ui.html, local_scope=False))
        assert not list(ElementFilter(kind=ui.markdown, local_scope=False))
        rendered = [e for e in ElementFilter(local_scope=False) if "<script>" in str(getattr(e, "text", ""))]
    assert rendered and all(isinstance(e, (TokenChip, ui.label)) for e in rendered)
    user.find(marker="token-0").click()
    await user.should_see(marker="alt-menu")
    assert user.find(marker="details-text").elements.pop().text == "<script>"


# -------------------------------------------------------------------------------------------- models
async def test_an_unknown_model_name_is_refused_server_side(user: User, tokviz_page, monkeypatch) -> None:
    seen = notifications(user)
    app = tokviz_page()
    await user.open("/")
    c = app.controllers[0]
    assert "new-value-mode" not in user.find(marker="model-select").elements.pop().props, "no typing"
    c.models.select("evil/model")  # even if a crafted event got it into the state: checked before loading
    await c.models.initialize()
    assert app.manager.load_calls == 0 and c.state.model is None
    assert "'evil/model' is not one of the models offered here" in status(user)
    assert any("not one of the models offered" in m for m in seen)


async def test_allow_any_model_loads_a_typed_folder_and_explains_a_missing_one(
        user: User, create_user, real_page, tiny_model_path, tmp_path) -> None:
    app = real_page(allow_any_model=True)
    await user.open("/")
    c = app.controllers[0]
    before = c.state.model  # the preselected model, ready at once where an earlier test loaded it
    select = user.find(marker="model-select")
    select.trigger("update:modelValue", "/nonexistent/tokviz-model")  # typed + Enter
    assert c.state.model_key == "/nonexistent/tokviz-model"
    user.find("Initialize Model").click()
    await user.should_see(content="The folder '/nonexistent/tokviz-model' does not exist.")
    assert c.state.model is before

    copy = shutil.copytree(tiny_model_path, tmp_path / "typed-model")
    select.trigger("update:modelValue", str(copy))
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None and c.state.model is not before, 60, "the typed folder to load")
    assert c.state.model.source == str(copy) and "Ready: typed-model" in status(user)
    await another_tab_works(create_user, app)


async def test_the_hub_unreachable(user: User, real_page, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on port 9
    app = real_page(allow_any_model=True)
    await user.open("/")
    c = app.controllers[0]
    before = c.state.model  # the preselected model, ready at once where an earlier test loaded it
    user.find(marker="model-select").trigger("update:modelValue", "tokviz-test/not-cached")
    started = time.perf_counter()
    user.find("Initialize Model").click()
    await user.should_see(content="Cannot reach the Hugging Face hub", retries=300)
    assert time.perf_counter() - started < 20
    assert "bundled model" in status(user) and c.state.model is before and not c.state.loading
    assert button(user, "Initialize Model").enabled


async def test_download_progress_bar_and_the_page_stays_usable(user: User, create_user, tokviz_page) -> None:
    """Progress as the engine reports a hub download (fraction, "Downloading: X / Y MB") fills a real bar."""
    app = tokviz_page(load_delay=1.2)
    original = app.manager.load

    def load(name, progress=None):
        for i in range(1, 5):
            progress(i / 5, f"Downloading: {i * 100} / 500 MB")
            time.sleep(0.2)
        return original(name, None)

    app.manager.load = load
    await user.open("/")
    c = app.controllers[0]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.loading, 5, "the load to start")
    bar = user.find(marker="load-progress").elements.pop()
    await wait_until(lambda: 0.3 < (bar.value or 0) < 1, 5, "the bar to fill")
    assert "indeterminate" not in bar.props and bar.visible
    assert "Downloading:" in status(user) and " / 500 MB (" in status(user) and "%)" in status(user)
    set_prompt(user, "typed while loading")  # the page stays usable
    user.find(marker="temperature").elements.pop().value = 0.7
    other: User = create_user()
    await other.open("/")
    await other.should_see("Initialize Model")
    await wait_until(lambda: c.state.model is not None, 10, "the load to finish")
    assert not bar.visible and c.state.temperature == 0.7


# ---------------------------------------------------------------------------------------- clicking
async def test_double_clicking_every_button(user: User, tokviz_page) -> None:
    app = tokviz_page(step_delay=0.02, load_delay=0.2)
    await user.open("/")
    c = app.controllers[0]
    for _ in range(2):
        user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None)
    assert app.manager.load_calls == 1
    for _ in range(2):
        user.find("Generate Next Token").click()
    await idle(c)
    assert len(chips(user)) == 1
    user.find(marker="max-tokens").elements.pop().value = 30
    for _ in range(2):
        user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 4)
    for _ in range(2):
        user.find("Stop").click()
    await asyncio.sleep(0.1)
    n = len(c.state.tokens)
    assert not c.state.busy and 4 <= n < 31 and len(chips(user)) == n
    await asyncio.sleep(0.1)
    assert len(c.state.tokens) == n, "stopped means stopped"
    for _ in range(2):
        user.find("Reset").click()
    assert chips(user) == [] and not c.state.busy
    for _ in range(2):
        user.find("Generate Next Token").click()
    await idle(c)
    assert len(chips(user)) == 1
    assert [s.token_id for s in c.state.handle.session.tokens] == [s.token_id for s in c.state.tokens]


async def test_choosing_an_alternative_while_generating(user: User, real_page) -> None:
    c = await ready(user, real_page())
    user.find(marker="max-tokens").elements.pop().value = 200
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, 30, "a few tokens")
    assert c.state.generating
    step = c.state.tokens[1]
    alt = next(a for a in step.alternatives if a.token_id != step.token_id)
    first = c.state.tokens[0].token_id
    await c.branching.choose(1, alt.token_id)  # stops the stream; the text continues after the pick
    await idle(c, 60)
    assert [s.token_id for s in c.state.tokens][:2] == [first, alt.token_id]
    assert len(c.state.tokens) >= 2 and len(chips(user)) == len(c.state.tokens)
    assert [s.token_id for s in c.state.handle.session.tokens] == [s.token_id for s in c.state.tokens]


async def test_closing_the_tab_mid_generation(user: User, create_user, real_page) -> None:
    app = real_page()
    c = await ready(user, app)
    user.find(marker="max-tokens").elements.pop().value = 200
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, 30, "a few tokens")
    handle = c.state.handle
    user.client.delete()
    await wait_until(lambda: handle.session.closed, 10, "the closed tab's session to be freed")
    assert c.state.closed and c.state.task is None
    await another_tab_works(create_user, app)


# ------------------------------------------------------------------------------ a real browser paste
@pytest.mark.slow
@pytest.mark.browser
def test_a_megabyte_paste_in_chromium_reaches_the_server_and_gets_a_message(tiny_model_path, tmp_path) -> None:
    """Over a real websocket: NiceGUI's page never sends a message over 1 MB, so the prompt box keeps
    200,000 characters of a 1 MB paste; that reaches the server and gets a clear message; the tab stays usable."""
    from pathlib import Path

    from tests.server_process import clean_env, free_port, serve, tokviz_command

    chromium, chromedriver = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    if not (chromium.exists() and chromedriver.exists()):
        pytest.skip("Chromium and chromedriver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    port = free_port()
    env = clean_env(HF_HOME=str(tmp_path / "hf"))
    with serve(tokviz_command("--port", str(port), "--model", str(tiny_model_path), "--device", "cpu"), env,
               tmp_path / "server.log", port) as server:
        options = webdriver.ChromeOptions()
        options.binary_location = str(chromium)
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"):
            options.add_argument(flag)
        d = webdriver.Chrome(service=Service(str(chromedriver)), options=options)
        try:
            wait = page_wait(d, 60, 0.1)

            def button(name: str):
                return d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")

            d.get(server.url)
            wait.until(lambda _: button("Initialize Model"))
            button("Initialize Model").click()
            wait.until(lambda _: "Ready:" in d.find_element(By.CSS_SELECTOR, ".tv-status").text)
            text = ("The quick brown fox jumps over the lazy dog. " * 23_000)[:1_000_000]
            kept = d.execute_script("const t = document.querySelector('textarea'); t.focus(); t.select();"
                                    "document.execCommand('insertText', false, arguments[0]);"  # like a paste
                                    "return t.value.length;", text)
            assert kept == 200_000, "the prompt box keeps 200,000 characters of the paste"
            time.sleep(0.5)
            button("Generate Next Token").click()
            wait.until(lambda _: "reads at most 256 tokens" in d.find_element(By.TAG_NAME, "body").text)
            assert "Connection lost" not in d.find_element(By.TAG_NAME, "body").text
            d.execute_script("const t = document.querySelector('textarea'); t.value = 'Hello there';"
                             "t.dispatchEvent(new Event('input', {bubbles: true}));")
            wait.until(lambda _: button("Generate Next Token").get_dom_attribute("disabled") is None)
            button("Generate Next Token").click()
            wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-token")) == 1)
        finally:
            d.quit()
