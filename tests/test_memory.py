"""Memory outlives no tab (issue 11): a long session's KV cache is given back when it closes,
with no further activity, and it never pads the other sessions' rows."""

from __future__ import annotations

import time

import psutil
import pytest

from tests.tiny_model import build_tiny_model
from tokviz_app.engine import ModelManager, SamplingParams

PROMPT_TOKENS = 4000


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """2 layers of 1,024 dims: 16 KB of keys and values per token, 64 MB for a 4,000-token prompt."""
    folder = build_tiny_model(tmp_path_factory.mktemp("wide"), n_layer=2, n_embd=1024, n_positions=4200,
                              train_steps=0)
    return ModelManager(device="cpu").load(str(folder))


def long_session(model, seed: int):
    ids = [(11 * i + seed) % 300 for i in range(PROMPT_TOKENS)]
    session = model.start_from_ids(ids, SamplingParams(seed=seed))
    session.generate(3)  # resident in the batch, as a tab that generated is
    return session


@pytest.mark.slow
def test_rss_returns_after_a_long_tab_closes_with_no_further_activity(wide_model):
    streaming = wide_model.start("Hello", SamplingParams(seed=1))
    streaming.generate(5)
    long_session(wide_model, 7).close()  # warm-up: the allocator and torch have seen these sizes once
    time.sleep(0.5)
    before = rss_mb()

    session = long_session(wide_model, 9)
    streaming.generate(3)  # both resident now: the short row must not be padded to 4,000 tokens
    during = rss_mb()
    assert min(width for _, width in wide_model.lane.batch_widths().values()) < 64
    session.close()

    deadline = time.monotonic() + 20
    while rss_mb() > before * 1.10 and time.monotonic() < deadline:  # nobody generates meanwhile
        time.sleep(0.1)
    after = rss_mb()
    print(f"\nRSS: before {before:.0f} MB, with a {PROMPT_TOKENS}-token tab {during:.0f} MB, "
          f"after it closed {after:.0f} MB")
    assert during - before > 40, "the long tab's cache was measured (64 MB of keys and values)"
    assert after <= before * 1.10, (before, during, after)
