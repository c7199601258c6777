"""Issue 15, part 1 in the engine: `Model.score_ids` and the page's comparison, against independent numbers.

Every log-prob is checked against one full fp32 forward pass of a separately loaded copy (`tests/reference.py`,
|Δ| < 1e-4), every KL against float64 numpy over the whole vocabulary; a model compared with itself gives Δ = 0;
two tokenizers give aligned spans whose sums are each model's total. Then the export's `compare` field: its
round trip, and the damaged files it refuses with a sentence.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.reference import full_logits
from tests.test_remote import mini_vllm, vllm_model  # noqa: F401 (fixtures, reused as they are)
from tests.tiny_model import build_tiny_model
from tokviz_app.core.compare import Comparison, TokenScore, kl_from_lists, span_of
from tokviz_app.core.contract import Model, ScoreReference
from tokviz_app.core.errors import CancelledWork, ImportFormatError, PromptTooLongError, TokvizError
from tokviz_app.core.types import Alternative, SamplingParams
from tokviz_app.engine.compare import BLOCK
from tokviz_app.exports.html import render_html
from tokviz_app.exports.snapshot import from_json, to_json
from tokviz_app.present.compare import delta_bits
from tokviz_app.scoring.compare import compare_contexts, compare_models

TEXT = "Hello world! Emoji: 🦊 🐶 ✨ café naïve résumé.\nNew lines\n\tand tabs. The quick brown fox jumps."
LN2 = math.log(2)


def np_logprobs(model, ids: list[int]) -> np.ndarray:
    """float64 log-softmax [len(ids), V] from an independent full forward of the same ids."""
    logits = full_logits(model, ids)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_kl_bits(p_log: np.ndarray, q_log: np.ndarray) -> np.ndarray:
    return (np.exp(p_log) * (p_log - q_log)).sum(-1) / LN2


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    from tokviz_app.engine import ModelManager

    return ModelManager(device="cpu").load(str(tiny_model_path))


@pytest.fixture(scope="module")
def sibling(tmp_path_factory, tiny):
    """Another tiny GPT-2 with the same tokenizer (its own weights): the same tokens, other numbers."""
    return _load(build_tiny_model(tmp_path_factory.mktemp("tiny-sibling"), seed=1))


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """A tiny GPT-2 whose tokenizer has another vocabulary: the text is cut differently."""
    return _load(build_tiny_model(tmp_path_factory.mktemp("tiny-other"), vocab_size=300, seed=1))


def _load(folder):
    from tokviz_app.engine import ModelManager

    return ModelManager(device="cpu").load(str(folder))


def scored(model, text: str = TEXT, generate: int = 0):
    """(prompt steps, shown steps) of a scored text, with `generate` greedy tokens after it."""
    session = model.score_text(text, SamplingParams(greedy=True))
    if generate:
        session.generate(generate)
    try:
        return list(session.prompt_tokens), list(session.tokens)
    finally:
        session.close()


# ------------------------------------------------------------------------------------------------ the engine
def test_score_ids_equals_an_independent_full_forward(tiny) -> None:
    ids = tiny.encode(TEXT)
    for start in (1, 9):
        scores = tiny.score_ids(ids, start, top_n=5)
        reference = np_logprobs(tiny, ids)
        assert [s.token_id for s in scores] == ids[start:]
        for k, s in enumerate(scores, start):
            assert abs(s.logprob - reference[k - 1, ids[k]]) < 1e-4
            assert s.rank == 1 + int((reference[k - 1] > reference[k - 1, ids[k]] + 1e-9).sum())
            assert [a.token_id for a in s.top] == list(np.argsort(-reference[k - 1], kind="stable")[:5])
            assert [a.prob for a in s.top] == pytest.approx(np.exp(np.sort(reference[k - 1])[::-1][:5]), abs=1e-5)
            assert s.kl is None  # no reference asked


def test_a_text_longer_than_a_block_is_scored_in_blocks(long_context_model_path) -> None:
    model = _load(long_context_model_path)
    ids = (model.encode(TEXT) * 40)[: BLOCK + 188]  # two blocks, and a context before the first
    scores = model.score_ids(ids, 3, reference=ScoreReference(model, ids[2:], 1))
    reference = np_logprobs(model, ids)
    assert max(abs(s.logprob - reference[k - 1, ids[k]]) for k, s in enumerate(scores, 3)) < 1e-4
    shorter = np_logprobs(model, ids[2:])  # the reference reads the same tokens without the first two
    kl = np_kl_bits(shorter[:-1], reference[2:-1])
    assert max(abs(s.kl - kl[k]) for k, s in enumerate(scores)) < 1e-3


def test_a_model_compared_with_itself_gives_zero_delta_and_zero_kl(tiny) -> None:
    prompt, shown = scored(tiny, generate=12)
    comparison = compare_models(tiny, prompt, shown, tiny)
    assert comparison.spans is None and comparison.scores[0] is None
    assert len(comparison.scores) == len(prompt) + len(shown)
    deltas = delta_bits(comparison, [*prompt, *shown])
    assert deltas[0] is None
    # float32 noise only: the session's generated steps ran one token at a time, the comparison in one block
    assert max(abs(d) for d in deltas[1:]) < 1e-4
    assert {s.kl for s in comparison.scores[1:]} == {0.0}


def test_two_models_with_one_tokenizer_get_token_deltas_and_the_exact_kl(tiny, sibling) -> None:
    prompt, shown = scored(tiny, generate=6)
    steps = [*prompt, *shown]
    ids = [s.token_id for s in steps]
    comparison = compare_models(tiny, prompt, shown, sibling)
    assert comparison.spans is None and comparison.model["label"] == sibling.label
    a, b = np_logprobs(tiny, ids), np_logprobs(sibling, ids)
    kl = np_kl_bits(a[:-1], b[:-1])
    for k in range(1, len(ids)):
        score = comparison.scores[k]
        assert abs(score.logprob - b[k - 1, ids[k]]) < 1e-4 and abs(score.kl - kl[k - 1]) < 1e-3
        assert abs(delta_bits(comparison, steps)[k] - (b[k - 1, ids[k]] - a[k - 1, ids[k]]) / LN2) < 2e-4


def test_context_b_scores_the_same_continuation_after_it(tiny) -> None:
    session = tiny.start("The quick brown fox", SamplingParams(greedy=True))
    session.generate(8)
    prompt, shown = list(session.prompt_tokens), list(session.tokens)
    session.close()
    comparison = compare_contexts(tiny, prompt, shown, "Bonjour le monde.")
    context, cont = tiny.encode("Bonjour le monde."), [s.token_id for s in shown]
    assert comparison.scores[: len(prompt)] == [None] * len(prompt) and comparison.context_b == "Bonjour le monde."
    b = np_logprobs(tiny, context + cont)
    a = np_logprobs(tiny, [s.token_id for s in prompt] + cont)
    for j, token in enumerate(cont):
        score = comparison.scores[len(prompt) + j]
        assert abs(score.logprob - b[len(context) + j - 1, token]) < 1e-4
        assert abs(score.kl - np_kl_bits(a[len(prompt) + j - 1], b[len(context) + j - 1])) < 1e-3
    empty = compare_contexts(tiny, prompt, shown, "")  # no context: after the beginning-of-text token
    bos = np_logprobs(tiny, [tiny.bos_token_id, *cont])
    assert abs(empty.scores[len(prompt)].logprob - bos[0, cont[0]]) < 1e-4


def spans_conserve(a, b, prompt, shown) -> Comparison:
    steps = [*prompt, *shown]
    comparison = compare_models(a, prompt, shown, b)
    spans = comparison.spans
    assert spans and any(len(s.ids_b) != s.stop - s.first for s in spans), "the tokenizers cut differently"
    assert [s.first for s in spans] == [0, *[s.stop for s in spans[:-1]]] and spans[-1].stop == len(steps)
    assert "".join(s.text for s in steps) == "".join(a.token_text(s.token_id)[0] for s in steps)
    text = a.decode([s.token_id for s in steps])
    assert "".join(p for s in spans for p in s.pieces_b) == text and spans[-1].end == len(text)
    # each model's total over the spans is its total log-probability of the text, computed independently
    total_a = math.fsum(s.logprob for s in steps if s.logprob is not None)
    assert math.fsum(s.logprob_a for s in spans if s.logprob_a is not None) == pytest.approx(total_a, rel=1e-9)
    ids_b = [i for s in spans for i in s.ids_b]
    reference = np_logprobs(b, [b.bos_token_id, *ids_b])
    total_b = math.fsum(reference[k, t] for k, t in enumerate(ids_b))
    assert math.fsum(s.logprob_b for s in spans) == pytest.approx(total_b, rel=1e-5)
    assert all(s.delta is None for s in spans if not s.complete) and spans[0].delta is None  # A's first token
    return comparison


def test_two_tokenizers_align_on_characters_and_conserve_each_models_total(tiny, other) -> None:
    prompt, shown = scored(tiny, generate=10)
    comparison = spans_conserve(tiny, other, prompt, shown)
    steps = [*prompt, *shown]
    deltas = delta_bits(comparison, steps)
    for span in comparison.spans:
        assert span_of(comparison.spans, span.first) is span and span_of(comparison.spans, span.stop - 1) is span
        assert {deltas[k] for k in range(span.first, span.stop)} == {None if span.delta is None else span.delta / LN2}
    with pytest.raises(TokvizError, match="another tokenizer"):
        compare_models(None, prompt, shown, other)  # a read-only import: A's own model must cut its text


@pytest.mark.slow
def test_tiny_gpt2_and_smollm2_conserve_each_models_total(tiny) -> None:
    from tokviz_app.engine import ModelManager

    smol = ModelManager(device="cpu").load("smollm2-135m")
    prompt, shown = scored(tiny, generate=10)
    spans_conserve(tiny, smol, prompt, shown)


def test_a_server_scores_through_its_echo_and_the_kl_only_where_its_lists_allow(tiny, vllm_model) -> None:
    ids = tiny.encode(TEXT)
    assert vllm_model.capabilities.text_scoring
    remote, local = vllm_model.score_ids(ids, 1), tiny.score_ids(ids, 1)
    for r, l in zip(remote, local):
        assert abs(r.logprob - l.logprob) < 1e-5 and r.rank == l.rank
        assert [a.token_id for a in r.top] == [a.token_id for a in l.top]
    prompt, shown = scored(tiny)
    steps = [*prompt, *shown]
    comparison = compare_models(tiny, prompt, shown, vllm_model)  # the same tokenizer: the same ids
    listed = tiny.score_ids([s.token_id for s in steps], 1, top_n=20)
    for k, score in enumerate(comparison.scores[1:], 1):
        assert abs(score.logprob - steps[k].logprob) < 1e-5
        # KL from the top-20 lists: known only where A's list holds (all but 1e-6 of) its mass
        assert (score.kl is not None) <= (math.fsum(a.prob for a in listed[k - 1].top) >= 1 - 1e-6)


def test_kl_from_top_lists_needs_the_whole_reference_mass() -> None:
    def alts(*pairs):
        return [Alternative(t, str(t), p, None) for t, p in pairs]

    p = alts((1, 0.5), (2, 0.5))
    assert kl_from_lists(p, alts((1, 0.25), (2, 0.25), (3, 0.5))) == pytest.approx(1.0)  # log2(0.5/0.25)
    assert kl_from_lists(p, p) == 0.0
    assert kl_from_lists(alts((1, 0.5), (2, 0.4)), p) is None, "a tenth of the reference is not listed"
    assert kl_from_lists(p, alts((1, 0.9))) is None, "token 2 is not in the other list"


def test_bad_arguments_stop_and_cancel_with_a_sentence(tiny) -> None:
    ids = tiny.encode(TEXT)
    with pytest.raises(TokvizError, match="at least one token before"):
        tiny.score_ids(ids, 0)
    with pytest.raises(TokvizError, match="same number of scored tokens"):
        tiny.score_ids(ids, 1, reference=ScoreReference(tiny, ids, 2))
    with pytest.raises(PromptTooLongError, match="reads at most"):
        tiny.score_ids(ids * 20, 1)
    with pytest.raises(CancelledWork):
        tiny.score_ids(ids, 1, should_stop=lambda: True)
    with pytest.raises(TokvizError, match="nothing to compare"):
        compare_models(tiny, scored(tiny, "Hi")[0][:1], [], tiny)
    assert Model.score_ids(tiny, ids, 1)[3].logprob == pytest.approx(tiny.score_ids(ids, 1)[3].logprob, abs=1e-5)


def test_kept_for_keeps_what_still_holds() -> None:
    scores = [None, *[TokenScore(i, -1.0, 1) for i in range(1, 6)]]
    comparison = Comparison({"label": "B"}, "model", None, [0, 1, 2, 3, 4, 5], 2, scores)
    assert comparison.kept_for([0, 1, 2, 3, 4, 5]) is comparison
    kept = comparison.kept_for([0, 1, 2, 3, 9, 9, 9])  # a pick at token 4, and more text
    assert kept.token_ids == [0, 1, 2, 3] and kept.scores == scores[:4] and comparison.kept_for([0, 1, 2]).covers(2)
    assert comparison.kept_for([0, 7, 2]) is None, "another prompt"


# ------------------------------------------------------------------------------------------------- exports
def exported(model, comparison: Comparison):
    """(the JSON export, the snapshot) of TEXT scored by `model`, with `comparison` (made for the same text)."""
    session = model.score_text(TEXT, SamplingParams(greedy=True))
    snap = session.snapshot()
    session.close()
    snap.compare = comparison
    return json.loads(to_json(snap)), snap


def test_export_import_round_trip_with_spans_and_the_html_shows_both(tiny, other) -> None:
    prompt, shown = scored(tiny)
    comparison = compare_models(tiny, prompt, shown, other)
    data, snap = exported(tiny, comparison)
    text = json.dumps(data)
    back = from_json(text)
    assert to_json(back) == json.dumps(data, ensure_ascii=False, indent=1) and back.compare.spans == comparison.spans
    span = data["compare"]["spans"][1]
    assert span["delta"] == pytest.approx(span["logprob_b"] - span["logprob_a"]) and span["token_ids_b"]
    page = render_html(back, mode="delta")
    assert 'tv-mode-delta' in page and "span A:" in page and "aligned spans" in page
    assert render_html(back, mode="prob").count("tv-x-") == 0 or 'tv-mode-prob' in render_html(back, mode="prob")


@pytest.mark.parametrize("damage, message", [
    (lambda c: c.update(token_ids=c["token_ids"][:1]), "must hold 2 to"),
    (lambda c: c["token_ids"].__setitem__(1, c["token_ids"][1] + 1), "the file's own text"),
    (lambda c: c.update(n_prompt=c["n_prompt"] + 1), "the file's own text"),
    (lambda c: c.update(context_b="x"), "context_b must be text in context mode"),
    (lambda c: c.update(mode="telepathy"), "compare.mode must be one of"),
    (lambda c: c["tokens"].__setitem__(0, c["tokens"][1]), "compare.tokens[0] must be null"),
    (lambda c: c["tokens"][1].update(kl=-1.0), "compare.tokens[1].kl must be a number"),
    (lambda c: c["tokens"][1].update(secret=1), "unknown field"),
    (lambda c: c["tokens"][1]["top_b"][0].update(prob=2.0), "top_b[0].prob"),
    (lambda c: c["tokens"].pop(), "compare.tokens must hold"),
])
def test_a_damaged_compare_field_is_refused_with_a_sentence(tiny, damage, message) -> None:
    prompt, shown = scored(tiny)
    data, _ = exported(tiny, compare_models(tiny, prompt, shown, tiny))
    damage(data["compare"])
    with pytest.raises(ImportFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_json(json.dumps(data))


def test_damaged_spans_are_refused(tiny, other) -> None:
    prompt, shown = scored(tiny)
    data, _ = exported(tiny, compare_models(tiny, prompt, shown, other))
    for damage, message in ((lambda s: s[1].update(first=s[1]["first"] + 1), r"spans\[1\].first"),
                            (lambda s: s.pop(), "must cover every compared token"),
                            (lambda s: s[2]["pieces_b"].append("x"), r"spans\[2\].pieces_b"),
                            (lambda s: s[0].update(logprob_b=float("nan")), "not a number JSON allows")):
        broken = json.loads(json.dumps(data))
        damage(broken["compare"]["spans"])
        with pytest.raises(ImportFormatError, match=message):
            from_json(json.dumps(broken))
