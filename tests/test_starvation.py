"""One tab cannot freeze the others (issue 11): slow jobs elsewhere never hold up an innocent tab's step.

Six slow loads fill NiceGUI's default thread pool (it has cpu_count + 4 threads: 6 on two cores) and six
closed tabs leave long prompts behind; a tab that is generating still gets its next token at once.
"""

from __future__ import annotations

import asyncio
import time

from nicegui.testing import User

from tests.fake_backend import FakeModelManager
from tokviz_app.engine import ModelManager, SamplingParams
from tokviz_app.service import ModelService

LONG_PROMPT_IDS = [(7 * i + 3) % 300 for i in range(1100)]


async def test_six_slow_jobs_and_six_closed_long_prompts_do_not_starve_a_step(
        user: User, long_context_model_path) -> None:
    manager = ModelManager(device="cpu")
    model = manager.load(str(long_context_model_path))
    service = ModelService(manager)
    innocent = service.new_handle(model, "Hello", SamplingParams(seed=1))
    await service.start(innocent)
    await service.step(innocent, 0)

    # Six loads that take 8 s each (a silent server, a slow disk), through another service on the same pool.
    slow = ModelService(FakeModelManager(load_delay=8.0))
    loads = [asyncio.ensure_future(slow.load("gpt2")) for _ in range(6)]
    await asyncio.sleep(0.2)

    # Six tabs paste a 1,100-token prompt and close at once.
    original_start = model.start_from_ids

    def start_long(prompt, params, should_stop=None):  # the page's start() tokenises; these are ids already
        return original_start(LONG_PROMPT_IDS, params, should_stop=should_stop)

    model.start = start_long
    chunks_before = model.lane.stats["prefill_chunks"]
    handles = [service.new_handle(model, "long", SamplingParams(seed=i)) for i in range(6)]
    starts = [asyncio.ensure_future(service.start(h)) for h in handles]
    closes = [asyncio.ensure_future(service.close(h)) for h in handles]

    started = time.perf_counter()
    await service.step(innocent, 1)
    took = time.perf_counter() - started
    # Normally a few ms on this tiny model; the failure this pins took as long as the slow jobs (8 s).
    assert took < 2.0, f"the innocent tab waited {took:.1f} s"
    assert not any(task.done() for task in loads), "the slow jobs were still running"

    await asyncio.gather(*starts, *closes, return_exceptions=True)
    # The closed tabs' prompts stopped at a chunk boundary instead of being scored to the end: 1,100 tokens
    # are 35 chunks of 32 beside a resident row, so all six would be 210 chunks.
    chunks = model.lane.stats["prefill_chunks"] - chunks_before
    assert chunks < 105, chunks
    assert all(h.session is None for h in handles)
    for task in loads:
        task.cancel()
