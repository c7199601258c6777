"""The engine against an independent full forward pass on the tiny GPT-2."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.reference import assert_step_matches, full_logits, sampler_distribution
from tokviz_app.engine import (ContextFullError, ModelManager, ModelNotFoundError, OfflineError, PositionError,
                               PromptTooLongError, SamplingParams, TokvizError)

PROMPT = "The quick brown fox"
SETTINGS = [
    {},
    {"temperature": 0.7, "top_k": 20},
    {"temperature": 1.3, "top_p": 0.8},
    {"top_k": 5, "top_p": 0.5},
]


def check_all(session, model, **sampling):
    ids = session.token_ids
    logits = full_logits(model, ids)
    for step in session.prompt_tokens[1:]:
        assert step.token_id == ids[step.position]
        assert_step_matches(step, logits[step.position - 1], **sampling)
    n_prompt = len(session.prompt_tokens)
    for step in session.tokens:
        index = n_prompt + step.position
        assert step.token_id == ids[index]
        assert_step_matches(step, logits[index - 1], **sampling)


@pytest.mark.parametrize("sampling", SETTINGS)
def test_prompt_and_generated_numbers_match_full_forward(tiny_model, sampling):
    session = tiny_model.start(PROMPT, SamplingParams(seed=7, **sampling))
    first = session.prompt_tokens[0]
    assert first.prob is None and first.rank is None and first.alternatives == ()
    assert [t.position for t in session.tokens] == []
    session.generate(25)
    assert [t.position for t in session.tokens] == list(range(len(session.tokens)))
    check_all(session, tiny_model, **sampling)


def test_choose_reuses_prefix_and_numbers_stay_exact(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=3))
    steps = session.generate(20)
    alternative = steps[5].alternatives[3]
    calls = []
    lane = tiny_model.lane
    lane.feed = lambda slot, ids, keep, **kw: calls.append(len(ids)) or type(lane).feed(lane, slot, ids, keep, **kw)
    try:
        chosen = session.choose(5, alternative.token_id)
    finally:
        del lane.feed
    assert calls == [1], "choose() must run exactly one one-token forward pass"
    assert chosen.token_id == alternative.token_id and chosen.position == 5
    assert abs(chosen.prob - alternative.prob) < 1e-5
    assert len(session.tokens) == 6 and session.tokens[-1] == chosen
    assert session.token_ids[-1] == alternative.token_id
    session.generate(10)
    check_all(session, tiny_model)


def test_choose_any_token_including_far_outside_top10(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=1))
    session.generate(8)
    step = session.choose(2, 42)
    assert step.rank > 0
    check_all(session, tiny_model)
    with pytest.raises(PositionError):
        session.choose(99, 1)
    with pytest.raises(PositionError):
        session.choose(0, tiny_model.vocab_size)


def test_score_any_token_matches_reference(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=2))
    session.generate(6)
    ids = session.token_ids
    logits = full_logits(tiny_model, ids)
    n_prompt = len(session.prompt_tokens)
    for position in (0, 3, 6):  # 6 = the next, not yet generated, token
        row = logits[n_prompt + position - 1]
        p = np.exp(row - row.max())
        p /= p.sum()
        for token_id, prob, rank, _ in session.score(position, [0, 17, 399]):
            assert abs(prob - p[token_id]) < 1e-5
            assert rank == int((row > row[token_id]).sum()) + 1
    assert session.token_ids == ids  # scoring changes nothing
    session.generate(3)
    check_all(session, tiny_model)


def test_seeded_sampling_is_reproducible(tiny_model):
    a = tiny_model.start(PROMPT, SamplingParams(seed=11, temperature=1.2))
    b = tiny_model.start(PROMPT, SamplingParams(seed=11, temperature=1.2))
    c = tiny_model.start(PROMPT, SamplingParams(seed=12, temperature=1.2))
    ids_a = [s.token_id for s in a.generate(30)]
    assert ids_a == [s.token_id for s in b.generate(30)]
    assert ids_a != [s.token_id for s in c.generate(30)]


def test_greedy_picks_argmax_with_point_mass(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(greedy=True))
    for step in session.generate(10):
        assert step.rank == 1 and step.sampled_prob == 1.0
        assert step.token_id == step.alternatives[0].token_id
        assert all(a.sampled_prob == 0.0 for a in step.alternatives[1:])


def test_sampling_frequencies_follow_the_distribution(tiny_model):
    """Draw the first token many times: frequencies agree with sampled_prob."""
    params = SamplingParams(seed=5, top_k=3)
    counts: dict[int, int] = {}
    session = tiny_model.start(PROMPT, params)
    expected = {a.token_id: a.sampled_prob for a in session.step().alternatives[:3]}
    for _ in range(600):
        session.truncate(0)
        token = session.step().token_id
        counts[token] = counts.get(token, 0) + 1
    assert set(counts) <= set(expected)
    for token, prob in expected.items():
        assert abs(counts.get(token, 0) / 600 - prob) < 0.07


def test_changing_settings_affects_only_later_tokens(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=1))
    first = session.generate(3)
    session.params = SamplingParams(seed=1, greedy=True)
    later = session.generate(3)
    assert session.tokens[:3] == first
    assert all(s.sampling.greedy for s in later) and not any(s.sampling.greedy for s in first)


def test_generate_stops_at_end_of_text(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(greedy=True))
    greedy_ids = [s.token_id for s in session.generate(5)]
    original = tiny_model.eos_token_ids
    tiny_model.eos_token_ids = frozenset({greedy_ids[2]})  # pretend the third token ends the text
    try:
        session = tiny_model.start(PROMPT, SamplingParams(greedy=True))
        steps = session.generate(50)
    finally:
        tiny_model.eos_token_ids = original
    assert len(steps) == greedy_ids.index(greedy_ids[2]) + 1
    assert session.finish_reason == "eos"


def test_generate_stop_callback_and_length(tiny_model):
    session = tiny_model.start(PROMPT)
    steps = session.generate(4)
    assert len(steps) == 4 and session.finish_reason == "length"
    seen = []
    session.generate(50, should_stop=lambda: len(seen) >= 3, on_token=seen.append)
    assert len(seen) == 3 and session.finish_reason == "stopped"


def test_context_limit(tiny_model):
    limit = tiny_model.context_length
    ids = tiny_model.encode("The quick brown fox jumps over the lazy dog. " * 40)
    with pytest.raises(PromptTooLongError, match=f"at most {limit} tokens"):
        tiny_model.start(tiny_model.decode(ids))
    session = tiny_model.start_from_ids(ids[: limit - 5])
    steps = session.generate(20)
    assert len(steps) == 5 and session.finish_reason == "context"
    with pytest.raises(ContextFullError):
        session.step()
    session.choose(4, 7)  # choosing at the very end still works
    check_all(session, tiny_model)


def test_empty_prompt_starts_from_beginning_of_text(tiny_model):
    session = tiny_model.start("", SamplingParams(seed=4))
    assert session.token_ids == [tiny_model.bos_token_id]
    steps = session.generate(5)
    assert session.text == tiny_model.decode([s.token_id for s in steps])
    check_all(session, tiny_model)


def test_partial_utf8_tokens_are_marked_and_text_is_exact(tiny_model):
    prompt = "Emoji: 🦊 🐶 ✨ café <script>alert('x')</script>\n\t  "
    session = tiny_model.start(prompt)
    assert session.text == prompt
    partial = [t for t in session.prompt_tokens if t.partial]
    assert partial, "the fox emoji should be split over byte tokens"
    assert all("‹" in t.text and "›" in t.text for t in partial)
    joined = b"".join(tiny_model._texts.raw_bytes(t.token_id) for t in session.prompt_tokens)
    assert joined.decode("utf-8") == prompt
    assert any(t.text == "\n" or "\n" in t.text for t in session.prompt_tokens)  # whitespace kept raw
    assert any("<" in t.text for t in session.prompt_tokens)


def test_truncate_and_close(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=9))
    session.generate(10)
    session.truncate(4)
    assert len(session.tokens) == 4
    session.generate(4)
    check_all(session, tiny_model)
    session.close()
    with pytest.raises(TokvizError):
        session.step()


def test_load_once_from_many_threads(tiny_model_path):
    manager = ModelManager(device="cpu")
    results, errors = [], []

    def load():
        try:
            results.append(manager.load(str(tiny_model_path)))
        except Exception as error:  # pragma: no cover - surfaced by the assert
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 6
    assert all(r is results[0] for r in results)
    assert len(manager.loaded()) == 1
    assert manager.load(str(tiny_model_path)) is results[0]


def test_concurrent_steps_on_different_sessions_match_sequential(tiny_model):
    seeds = [1, 2, 3, 4]
    sequential = {}
    for seed in seeds:
        s = tiny_model.start(PROMPT, SamplingParams(seed=seed))
        sequential[seed] = [t.token_id for t in s.generate(15)]
    sessions = {seed: tiny_model.start(PROMPT, SamplingParams(seed=seed)) for seed in seeds}
    out: dict[int, list[int]] = {seed: [] for seed in seeds}

    def run(seed):
        for _ in range(15):
            out[seed].append(sessions[seed].step().token_id)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == sequential
    for s in sessions.values():
        check_all(s, tiny_model)


def test_unknown_models_and_missing_folders_give_clear_errors(monkeypatch):
    manager = ModelManager(device="cpu")
    with pytest.raises(ModelNotFoundError, match="neither a known model"):
        manager.load("no such model!")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        manager.load("/nonexistent/folder/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="smollm2-135m"):
        manager.load("someone/not-cached-model")


def test_hub_unreachable_names_the_bundled_model(monkeypatch, tmp_path):
    # An endpoint on loopback where nothing listens: the real download path fails to connect.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    manager = ModelManager(device="cpu")
    with pytest.raises(OfflineError, match="Cannot reach the Hugging Face hub.*smollm2-135m"):
        manager.load("gpt2")


def test_catalog_and_local_folder_entry(tiny_model_path):
    manager = ModelManager(device="cpu")
    keys = [info.key for info in manager.catalog()]
    assert keys[:4] == ["gpt2", "gpt2-medium", "distilgpt2", "smollm2-135m"]
    info = manager.add(str(tiny_model_path))
    assert info.status == "local folder"
    manager.load(str(tiny_model_path))
    assert {i.key: i.status for i in manager.catalog()}[info.key] == "loaded"
    assert manager.default_key() in {"gpt2", "smollm2-135m"}


def test_sampling_probs_against_numpy():
    import torch

    from tokviz_app.engine.metrics import entropy_bits, log_softmax, ranks, sampling_probs

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 500)) * 3
    logits[0, :3] = 10.0  # ties at the top
    t = torch.tensor(logits, dtype=torch.float32)
    for kwargs in [{}, {"temperature": 0.5}, {"top_k": 7}, {"top_p": 0.3}, {"temperature": 2.0, "top_k": 50, "top_p": 0.9},
                   {"greedy": True}]:
        got = sampling_probs(t, SamplingParams(**kwargs)).numpy()
        for row in range(3):
            want = sampler_distribution(logits[row].astype(np.float32).astype(np.float64), **kwargs)
            np.testing.assert_allclose(got[row], want, atol=1e-6)
    lp = log_softmax(t)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(entropy_bits(lp).numpy(), -(p * np.log2(p)).sum(1), rtol=1e-5)
    r = ranks(t, torch.tensor([0, 5, 9]))
    assert r.tolist() == [int((logits[i] > logits[i, j]).sum()) + 1 for i, j in enumerate([0, 5, 9])]
    assert r[0] == 1  # tied with two others, none strictly greater


def test_sampling_params_validation():
    with pytest.raises(ValueError):
        SamplingParams(temperature=0)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(top_k=-1)
    assert SamplingParams(temperature=0, greedy=True).greedy
