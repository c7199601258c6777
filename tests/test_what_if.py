"""What-if replay (issue 14, item 3) on the tiny GPT-2: every token's probability under other settings, checked
against an independent computation (a separately loaded copy of the model, one uncached forward pass, transformers'
own logits processors); answers from the kept top logits against recomputed ones; cached against cold; the text
never changes."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.reference import full_logits
from tests.test_samplers import transformers_probs
from tokviz_app.core.types import SamplingParams
from tokviz_app.engine import nucleus, what_if

PROMPT = "The quick brown fox jumps over the lazy dog. A language model"
# the panel's samplers, one at a time and together, at a cooling and a heating temperature
PANEL = [SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m)
         for t, k, p, m in itertools.product((0.6, 1.0, 1.6), (0, 4), (1.0, 0.7), (0.0, 0.1))]
WHOLE = [SamplingParams(repetition_penalty=1.3), SamplingParams(typical_p=0.8, temperature=0.9),
         SamplingParams(repetition_penalty=0.8, top_k=6, top_p=0.9)]  # they need the whole distribution


def label(params: SamplingParams) -> str:
    return (f"T{params.temperature}-k{params.top_k}-p{params.top_p}-min{params.min_p}-typ{params.typical_p}"
            f"-rep{params.repetition_penalty}")


def expected(model, ids: list[int], params: SamplingParams) -> list[float]:
    """Each token's probability after the samplers, from an independent forward pass and transformers' processors."""
    logits = torch.from_numpy(full_logits(model, ids)[:-1]).float()
    targets = torch.tensor(ids[1:])
    if params.greedy:
        return (logits.argmax(-1) == targets).double().tolist()
    probs = transformers_probs(logits, params, ids[:-1])
    return probs.gather(-1, targets.unsqueeze(-1))[:, 0].tolist()


def replayed(session, params: SamplingParams) -> list[float]:
    """The prompt's tokens after the first, then the generated ones: ids[1:] in order."""
    return [*session.what_if(params, prompt=True)[1:], *session.what_if(params)]


@pytest.fixture(scope="module")
def text(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=3, temperature=1.2))
    session.generate(30)
    yield session
    session.close()


@pytest.mark.parametrize("kept", [4, 32, what_if.KEPT])
@pytest.mark.parametrize("params", PANEL + WHOLE + [SamplingParams(greedy=True)], ids=label)
def test_what_if_matches_an_independent_computation(tiny_model, text, params, kept):
    """However few logits are kept, every row (decided from them or recomputed) is the reference's number."""
    text.what_if_kept = kept
    ids = text.token_ids
    ours = replayed(text, params)
    assert len(ours) == len(ids) - 1
    assert ours == pytest.approx(expected(tiny_model, ids, params), abs=2e-6)
    assert text.token_ids == ids and len(text.tokens) == 30  # nothing generated, nothing changed


def test_cached_and_cold_answers_are_identical(tiny_model, text):
    """A warm pass (other settings asked first) and a fresh session's first call give the same numbers, bit for
    bit; asking again returns the remembered answer."""
    first, later = SamplingParams(temperature=0.6, top_k=4), SamplingParams(top_p=0.7, min_p=0.1, temperature=1.6)
    text.what_if_kept = what_if.KEPT
    replayed(text, first)
    warm = replayed(text, later)
    assert replayed(text, later) == warm
    cold = tiny_model.restore(text.snapshot())
    try:
        assert replayed(cold, later) == warm
        assert cold.what_if_stats["rescored"] is False  # the prompt's call made the pass, this one reused it
    finally:
        cold.close()


def test_kept_logits_answer_without_recomputing(text):
    """Changes inside the kept logits (top-k, then top-p and min-p among them) recompute no row; a temperature
    with no cut needs the whole vocabulary's normaliser, and a repetition penalty the whole distribution."""
    text.what_if_kept = what_if.KEPT
    text.what_if(SamplingParams(), prompt=True)  # the pass
    for params in (SamplingParams(top_k=4, temperature=0.7), SamplingParams(top_k=20, top_p=0.8, min_p=0.05),
                   SamplingParams(greedy=True), SamplingParams()):
        text.what_if(params, prompt=True)
        assert text.what_if_stats["recomputed"] == 0 and not text.what_if_stats["rescored"], params
    text.what_if(SamplingParams(repetition_penalty=1.2), prompt=True)
    assert text.what_if_stats["recomputed"] == text.what_if_stats["rows"]


def test_recomputing_without_hidden_states_runs_the_model_again(tiny_model, text, monkeypatch):
    """Where the hidden states are not kept (too large), rows are recomputed by a new forward pass: same numbers."""
    monkeypatch.setattr(what_if, "MAX_HIDDEN_BYTES", 0)
    session = tiny_model.restore(text.snapshot())
    try:
        session.what_if_kept = 8
        params = SamplingParams(temperature=0.6, top_p=0.9)
        session.what_if(SamplingParams(), prompt=True)
        assert session.what_if_stats["hidden_kept"] is False
        ours = replayed(session, params)
        assert ours == pytest.approx(expected(tiny_model, session.token_ids, params), abs=2e-6)
    finally:
        session.close()


@pytest.mark.parametrize("first", [4, 64])
def test_a_nucleus_past_the_first_tokens_is_sorted(tiny_model, text, monkeypatch, first):
    """A recomputed row looks for its nucleus among its `first` most likely tokens, else by a threshold, else
    sorts the vocabulary: every way gives the reference's numbers, min-p after it included."""
    monkeypatch.setattr(nucleus, "FIRST", first)
    session = tiny_model.restore(text.snapshot())
    try:
        session.what_if_kept = 4
        for params in (SamplingParams(top_p=0.9, temperature=1.3), SamplingParams(top_p=0.6, min_p=0.05, top_k=30)):
            session.what_if(params, prompt=True)
            assert session.what_if_stats["recomputed"] > 0
            ours = replayed(session, params)
            assert ours == pytest.approx(expected(tiny_model, session.token_ids, params), abs=2e-6)
    finally:
        session.close()


def test_a_text_longer_than_one_forward_chunk(tiny_model, long_context_model_path, engine_manager):
    """Past the pass's 512-token chunks (the cache carries the context): rows on both sides agree."""
    model = engine_manager.load(str(long_context_model_path))
    session = model.start(" ".join(["The quick brown fox jumps over the lazy dog."] * 40), SamplingParams(seed=1))
    try:
        ids = session.token_ids
        assert len(ids) > what_if.FORWARD_CHUNK + 10
        for params in (SamplingParams(top_k=4, temperature=0.7), SamplingParams(temperature=1.3, top_p=0.8)):
            assert replayed(session, params) == pytest.approx(expected(model, ids, params), abs=2e-6)
    finally:
        session.close()


def test_impossible_tokens_and_a_changed_text(tiny_model):
    """Top-1 makes every token that was not the most likely impossible (p = 0); after a pick the text is new and
    its replay is made afresh."""
    session = tiny_model.start(PROMPT, SamplingParams(seed=9, temperature=1.5))
    try:
        session.generate(12)
        probs = session.what_if(SamplingParams(top_k=1))
        assert probs == [float(t.rank == 1) for t in session.tokens]
        assert 0 < probs.count(0.0) < len(probs)
        session.choose(4, session.tokens[4].alternatives[2].token_id)
        assert session.what_if(SamplingParams(top_k=1)) == [float(t.rank == 1) for t in session.tokens]
        assert session.what_if_stats["rescored"] is True
    finally:
        session.close()
