"""The bundled SmolLM2-135M: a real model that works with no network."""

from __future__ import annotations

import time

import pytest

from tests.reference import assert_step_matches, full_logits
from tokviz_app.engine import ModelManager, SamplingParams
from tokviz_app.engine import bundled

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted_cache(tmp_path_factory):
    """A fresh tokviz cache so the first load really converts the GGUF."""
    folder = tmp_path_factory.mktemp("tokviz-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("TOKVIZ_CACHE_DIR", str(folder))
    yield folder
    patch.undo()


def test_bundled_model_converts_once_then_loads_fast_and_knows_paris(converted_cache):
    assert not bundled.is_converted()
    events = []
    started = time.perf_counter()
    model = ModelManager(device="cpu").load("smollm2-135m", progress=lambda f, m: events.append((f, m)))
    first_load = time.perf_counter() - started
    messages = [m for _, m in events]
    assert bundled.is_converted() and any("Converting" in m for m in messages)
    # a real staged bar: every conversion message has a fraction, they never go back, and they end at 1
    staged = [f for f, m in events if m.startswith("Converting")]
    assert all(f is not None for f in staged) and staged == sorted(staged) and staged[-1] == 1.0
    stages = [name for _, name in bundled.STAGES]
    assert [name for name in stages if any(name in m for m in messages)] == stages
    assert any("272 / 272 tensors" in m for m in messages)
    import gguf
    import tqdm.auto
    from transformers import modeling_gguf_pytorch_utils as legacy

    # the parse-once patches are gone after the conversion
    assert gguf.GGUFReader.__name__ == "GGUFReader" and gguf.get_tensor_name_map.__name__ == "get_tensor_name_map"
    assert legacy.load_gguf_checkpoint.__module__ == legacy.__name__ and legacy.tqdm is tqdm.auto.tqdm

    started = time.perf_counter()
    again = ModelManager(device="cpu").load("smollm2-135m")
    second_load = time.perf_counter() - started
    print(f"bundled model: first load {first_load:.1f} s (GGUF conversion), cached load {second_load:.1f} s")
    assert second_load < first_load

    session = again.start("The capital of France is", SamplingParams(greedy=True))
    step = session.step()
    assert step.alternatives[0].text == " Paris"
    assert step.text == " Paris" and step.prob > 0.5
    session.generate(5)
    logits = full_logits(again, session.token_ids)
    n_prompt = len(session.prompt_tokens)
    for t in session.tokens:
        assert_step_matches(t, logits[n_prompt + t.position - 1], greedy=True)
    for t in session.prompt_tokens[1:]:
        assert_step_matches(t, logits[t.position - 1], greedy=True)
    assert model.context_length == 8192


EXIT_SCRIPT = """
from tokviz_app.engine import ModelManager, SamplingParams
model = ModelManager(device="cpu").load("smollm2-135m")
session = model.start_from_ids(model.tokenizer("The capital of France is")["input_ids"], SamplingParams(greedy=True))
for _ in range(40):
    session.step()
session.close()  # the lane drops the row while the interpreter exits
print("exiting")
"""


def test_a_process_exits_cleanly_right_after_closing_a_session():
    """Without stopping the lane at exit, this ended in 'terminate called without an active
    exception' and exit status 134 (SIGABRT) on a 2-core AMD EPYC."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exiting" in done.stdout and "terminate called" not in done.stderr
