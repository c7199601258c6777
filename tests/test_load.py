"""Load: 20 simulated users (NiceGUI `User` clients, each its own tab) generate concurrently for 30 s on
the tiny model through the real engine (one shared model, one batched inference lane).

Checks: no errors, no tokens leaking between users (every tab shows exactly its own session, which starts
with its own prompt and seed), and memory back near its start level after the tabs close.

Memory: the first time 20 tabs are open, glibc's per-thread arenas and Python's pools grow to a high-water
mark that they keep after everything is freed (not a leak: a second crowd reuses it). So a short warm-up
crowd comes first; the 30-s crowd must then leave the process where it found it. The figures are printed
(run with -s): cold start, after the warm-up, peak, after.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import sys
import time

import psutil
import pytest
from nicegui import Client
from nicegui.testing import User

from tests.ui_helpers import chips, idle, wait_until
from tokviz_app.config import Settings

pytestmark = pytest.mark.slow

USERS = int(os.environ.get("TOKVIZ_LOAD_USERS", "20"))
SECONDS = float(os.environ.get("TOKVIZ_LOAD_SECONDS", "30"))
WARMUP_SECONDS = 4.0


def rss_mb() -> float:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass
    return psutil.Process().memory_info().rss / 2**20


async def crowd(app, create_user, n_users: int, seconds: float, peak: list[float]) -> dict:
    """n_users tabs generate (25 tokens, Reset, again) until `seconds` are over, then all close."""
    users: list[User] = [create_user() for _ in range(n_users)]
    first = len(app.controllers)
    for u in users:
        await u.open("/")
    controllers = app.controllers[first:]
    assert len(controllers) == n_users
    model = controllers[0].state.model
    assert model is not None and all(c.state.model is model for c in controllers), "all tabs share the model"
    tokens, rounds, errors = [0] * n_users, [0] * n_users, []
    deadline = time.monotonic() + seconds

    async def run(i: int) -> None:
        u, c = users[i], controllers[i]
        prompt = f"User {i} says:"
        u.find(marker="prompt").elements.pop().value = prompt
        u.find(marker="max-tokens").elements.pop().value = 25
        u.find(marker="seed").elements.pop().value = i
        while time.monotonic() < deadline:
            u.find("Generate to End").click()
            await idle(c, 120)
            session = c.state.handle.session
            shown = [chip.props["data-position"] for chip in chips(u)]
            if [s.token_id for s in session.tokens] != [s.token_id for s in c.state.tokens] \
                    or shown != list(range(len(c.state.tokens))) or not session.text.startswith(prompt) \
                    or session.params.seed != i:
                errors.append(f"user {i}: the tab and its session disagree")
            if c.state.finish_reason not in {"length", "eos"} or c.state.error:
                errors.append(f"user {i}: finished with {c.state.finish_reason!r} {c.state.error!r}")
            tokens[i] += len(c.state.tokens)
            rounds[i] += 1
            u.find("Reset").click()
            await asyncio.sleep(0)

    async def sample_memory() -> None:
        while True:
            peak[0] = max(peak[0], psutil.Process().memory_info().rss / 2**20)
            await asyncio.sleep(0.25)

    started = time.monotonic()
    sampler = asyncio.create_task(sample_memory())
    await asyncio.gather(*(run(i) for i in range(n_users)))
    elapsed = time.monotonic() - started
    notices = [m for u in users for m in u.notify.messages]
    handles = [c.state.handle for c in controllers if c.state.handle is not None]
    for u in users:  # everybody leaves
        u.client.delete()
    await wait_until(lambda: all(h.closed and (h.session is None or h.session.closed) for h in handles), 30,
                     "every session to be freed")
    sampler.cancel()
    del app.controllers[first:]  # the test's own references to the tabs
    return {"tokens": tokens, "rounds": sum(rounds), "errors": errors, "notices": notices, "elapsed": elapsed}


async def test_twenty_users_generate_concurrently_for_30_seconds(user: User, create_user, tokviz_page,
                                                                 engine_manager, tiny_model_path) -> None:
    app = tokviz_page(manager=engine_manager, settings=Settings(models=[str(tiny_model_path)]))
    await user.open("/")
    first = app.controllers[0]
    user.find("Initialize Model").click()
    await wait_until(lambda: first.state.model is not None, 60, "the model")
    cold = rss_mb()
    peak = [cold]
    warm = await crowd(app, create_user, USERS, WARMUP_SECONDS, peak)
    assert not warm["errors"] and not warm["notices"]
    await asyncio.sleep(0.5)
    before, blocks_before = rss_mb(), sys.getallocatedblocks()

    peak = [before]
    run = await crowd(app, create_user, USERS, SECONDS, peak)
    await asyncio.sleep(1.0)
    after, blocks_after = rss_mb(), sys.getallocatedblocks()
    from tokviz_app.ui.tab import Tab

    closed_alive = sum(1 for o in gc.get_objects() if type(o) is Tab and o.state.closed)
    tokens, elapsed = run["tokens"], run["elapsed"]
    total = sum(tokens)
    print(f"\nload: {USERS} users x {elapsed:.1f} s on the tiny model: {total} tokens ({total / elapsed:.0f}/s in all), "
          f"per user min {min(tokens)} / median {sorted(tokens)[USERS // 2]} / max {max(tokens)}, "
          f"{run['rounds']} generations, {len(run['errors'])} errors, {len(run['notices'])} notifications; "
          f"RSS cold {cold:.0f} MB, after a {WARMUP_SECONDS:.0f}-s warm-up crowd {before:.0f} MB, "
          f"peak {peak[0]:.0f} MB, after {after:.0f} MB ({after - before:+.0f} MB); "
          f"Python blocks {blocks_before} -> {blocks_after}; {len(Client.instances)} client(s) left, "
          f"{closed_alive} closed tab(s) still in memory")
    assert not run["errors"], run["errors"][:5]
    assert not run["notices"], run["notices"][:5]
    assert min(tokens) >= 25, "every user made progress"
    assert len(Client.instances) == 1, "only the first tab is left"
    assert closed_alive <= 2, "closed tabs are freed (FastAPI's endpoint caches used to keep them: root.py)"
    assert blocks_after - blocks_before < 0.03 * blocks_before, "no Python objects pile up"
    # RSS measured here: +30-45 MB after the 30-s crowd (glibc keeps freed native memory mapped).
    assert after - before < 80, (cold, before, peak[0], after)
