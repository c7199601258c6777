"""Prompt-scoring progress (issue 13, item 6): `Model.start(..., progress=)` on the fake, the local engine and
a server, and on the page: "scoring the prompt: 1,024 / 4,000 tokens", a Stop that works while the prompt is
scored, and the speed read-out that stays after a generation."""

from __future__ import annotations

import asyncio
import time

import pytest
from nicegui.testing import User

from tests.fake_backend import PREFILL_CHUNK, FakeModelManager, tokenize
from tests.test_remote import mini_vllm, vllm_model  # noqa: F401 - an in-process vLLM-style server on the tiny model
from tests.ui_helpers import button, idle, open_ready, wait_until
from tokviz_app.core.errors import CancelledWork
from tokviz_app.core.types import SamplingParams
from tokviz_app.engine import ModelManager
from tokviz_app.engine.session import PREFILL_CHUNK as ENGINE_CHUNK


def _checked(calls: list[tuple[int, int]], total: int) -> None:
    """Reports rise from where scoring stands to the whole prompt, and every one names the same total."""
    assert calls and calls[-1] == (total, total), calls
    assert all(t == total for _, t in calls), calls
    done = [d for d, _ in calls]
    assert done == sorted(done) and 0 <= done[0] < total, calls


def test_the_fake_reports_each_chunk_and_stops_between_them() -> None:
    model = FakeModelManager().load("gpt2")
    prompt = "The quick brown fox" * 20
    n = len(tokenize(prompt))
    calls: list[tuple[int, int]] = []
    session = model.start(prompt, SamplingParams(seed=1), progress=lambda d, t: calls.append((d, t)))
    _checked(calls, n)
    assert [d for d, _ in calls] == [*range(0, n, PREFILL_CHUNK), n]
    assert len(session.prompt_tokens) == n
    stopped: list[tuple[int, int]] = []
    with pytest.raises(CancelledWork):
        model.start(prompt, should_stop=lambda: len(stopped) > 1, progress=lambda d, t: stopped.append((d, t)))
    assert stopped == [(0, n), (PREFILL_CHUNK, n)]


def test_the_local_engine_reports_after_every_chunk(long_context_model_path) -> None:
    model = ModelManager(device="cpu").load(str(long_context_model_path))
    sentence = "The quick brown fox jumps over the lazy dog. "
    prompt = sentence * (2150 // len(model.encode(sentence)))
    n = len(model.encode(prompt))
    assert 2 * ENGINE_CHUNK < n <= model.context_length
    calls: list[tuple[int, int]] = []
    session = model.start(prompt, SamplingParams(seed=1), progress=lambda d, t: calls.append((d, t)))
    _checked(calls, n)
    assert [d for d, _ in calls] == [*range(0, n, ENGINE_CHUNK), n]  # one report per chunk
    assert len(session.prompt_tokens) == n
    session.close()
    stopped: list[tuple[int, int]] = []
    with pytest.raises(CancelledWork):  # Stop while the prompt is scored: the next chunk never runs
        model.start(prompt, should_stop=lambda: len(stopped) > 1, progress=lambda d, t: stopped.append((d, t)))
    assert stopped[-1][0] < n


def test_a_server_reports_the_start_and_the_end(vllm_model) -> None:  # noqa: F811
    calls: list[tuple[int, int]] = []
    session = vllm_model.start("The quick brown fox", SamplingParams(seed=1),
                               progress=lambda d, t: calls.append((d, t)))
    n = len(session.prompt_tokens)
    assert calls == [(0, n), (n, n)]


# ------------------------------------------------------------------------------------------------ the page
def _status(user: User) -> str:
    return user.find(marker="gen-status").elements.pop().text


async def test_the_page_counts_the_prompt_tokens_while_scoring(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, prefill_delay=0.004, context_length=4096)
    c.state.prompt = "The quick brown fox jumps over the lazy dog. " * 40
    total = len(tokenize(c.state.prompt))
    seen: list[str] = []
    original = c.say
    c.say = lambda text: (seen.append(text), original(text))
    user.find(marker="Generate Next Token").click()
    await wait_until(lambda: "scoring the prompt: 128 /" in _status(user), message="progress on the page")
    assert _status(user) == f"scoring the prompt: 128 / {total:,} tokens"
    await idle(c, timeout=20)
    scoring = [s for s in seen if s.startswith("scoring the prompt")]
    assert scoring[-1] == f"scoring the prompt: {total:,} / {total:,} tokens"
    assert len(scoring) == len(range(0, total, PREFILL_CHUNK)) + 1  # before every chunk, and at the end
    assert len(c.state.tokens) == 1 and "1 token" in _status(user)


async def test_stop_while_the_prompt_is_scored_says_stopped(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page, prefill_delay=0.01, context_length=4096)
    c.state.prompt = "The quick brown fox jumps over the lazy dog. " * 40  # ~440 tokens: ~4.4 s to score
    model, outcomes = c.state.model, []
    start = model.start

    def watched_start(*args, **kwargs):
        try:
            return start(*args, **kwargs)
        except BaseException as error:
            outcomes.append(type(error).__name__)
            raise

    model.start = watched_start
    user.find(marker="Generate to End").click()
    await wait_until(lambda: "scoring the prompt" in _status(user), message="scoring under way")
    assert button(user, "Stop").enabled
    started = time.monotonic()
    user.find(marker="Stop").click()
    assert not c.state.busy and _status(user) == "0 tokens · stopped"
    await wait_until(lambda: outcomes == ["CancelledWork"], timeout=3, message="scoring abandoned")
    assert time.monotonic() - started < 2.0 and app.manager.sessions == []
    await asyncio.sleep(0.1)  # reports still on their way from the worker thread change nothing
    assert _status(user) == "0 tokens · stopped" and c.state.tokens == []
    assert not button(user, "Stop").enabled and button(user, "Generate to End").enabled


async def test_the_last_speed_stays_after_a_generation(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.02)
    user.find(marker="max-tokens").elements.pop().value = 6
    user.find(marker="Generate to End").click()
    await idle(c)
    status = _status(user)
    assert status.startswith("6 tokens · finished: reached the max-tokens setting · "), status
    assert " ms/token · " in status and status.endswith(" tokens/s"), status
    c.generation.reset()  # a new text; stopped during its prompt: no figure from the old text
    c.state.prompt = "Hello world"
    user.find(marker="Generate to End").click()
    user.find(marker="Stop").click()
    assert _status(user) == "0 tokens · stopped"
    user.find(marker="max-tokens").elements.pop().value = 50
    user.find(marker="Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, message="a few tokens")
    user.find(marker="Stop").click()
    status = _status(user)
    assert status.startswith(f"{len(c.state.tokens)} tokens · stopped · ") and " ms/token · " in status, status
