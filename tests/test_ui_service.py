"""The async service facade: worker threads, cancellation, and session consistency."""

from __future__ import annotations

import asyncio

import pytest

from tests.fake_backend import FakeModelManager
from tokviz_app.core.errors import CancelledWork, ModelNotFoundError, TokvizError
from tokviz_app.core.types import SamplingParams
from tokviz_app.service import ModelService


@pytest.fixture
def service() -> ModelService:
    return ModelService(FakeModelManager(step_delay=0.05))


async def test_load_reports_progress_on_the_event_loop(service: ModelService) -> None:
    loop = asyncio.get_running_loop()
    seen = []
    model = await service.load("gpt2", on_progress=lambda f, m: seen.append((f, m, asyncio.get_running_loop())))
    await asyncio.sleep(0)
    assert seen and all(l is loop for *_, l in seen)
    assert seen[-1][:2] == (1.0, "GPT-2 is ready")
    assert service.loaded_model("gpt2") is model
    assert await service.load("gpt2") is model and service.manager.load_calls == 1
    with pytest.raises(ModelNotFoundError):
        await service.load("no/such")


async def test_a_cancelled_step_is_dropped_on_the_next_call(service: ModelService) -> None:
    model = await service.load("gpt2")
    handle = service.new_handle(model, "Hello", SamplingParams(seed=3))
    await service.start(handle)
    first = await service.step(handle, 0)
    task = asyncio.create_task(service.step(handle, 1))
    await asyncio.sleep(0.01)  # the step is running in its thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    second = await service.step(handle, 1)  # waits for the stale step, truncates it away, steps again
    assert [s.token_id for s in handle.session.tokens] == [first.token_id, second.token_id]
    assert second.position == 1
    chosen = await service.choose(handle, 0, first.alternatives[1].token_id)
    assert [s.token_id for s in handle.session.tokens] == [chosen.token_id]


async def test_close_waits_for_the_call_in_flight_and_frees_the_session(service: ModelService) -> None:
    model = await service.load("gpt2")
    handle = service.new_handle(model, "Hello", SamplingParams())
    await service.start(handle)
    task = asyncio.create_task(service.step(handle, 0))
    await asyncio.sleep(0.01)
    await service.close(handle)
    assert handle.session.closed
    assert task.done() and (await task).position == 0, "close waited for the step in flight"
    with pytest.raises(TokvizError):
        await service.step(handle, 0)


async def test_a_session_started_for_a_closed_handle_is_freed(service: ModelService) -> None:
    model = await service.load("gpt2")
    handle = service.new_handle(model, "Hello", SamplingParams())
    handle.closed = True  # the tab went away while the prompt was being scored
    with pytest.raises(CancelledWork):  # scoring stops at its next chunk: no session is made
        await service.start(handle)
    assert handle.session is None
    assert all(session.closed for session in service.manager.sessions)
