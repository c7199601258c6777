"""The samplers (issue 14): temperature, repetition penalty, top-k, top-p, min-p and typical sampling,
checked against transformers' own logits processors chained in the order `engine/metrics.py` documents,
on random logits and on the tiny model's real steps; which sampler dropped a token, worked out by hand;
what the samplers kept, against numpy; the fake's plain-Python samplers and a server's top list against
the engine."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from tests.fake_backend import VOCAB_SIZE, _logits as fake_logits
from tests.fake_sampling import sample as fake_sample
from tests.reference import full_logits
from tokviz_app.core.types import SamplingParams
from tokviz_app.engine import metrics, row_stats
from tokviz_app.engine.remote import _Dist, _Tok
from tokviz_app.engine.remote.kept import kept
from tokviz_app.engine.token_steps import token_steps

# every combination of a few settings of each sampler (temperature, top_k, top_p, min_p, typical_p, penalty)
GRID = [SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m, typical_p=y, repetition_penalty=r)
        for t, k, p, m, y, r in itertools.product((0.6, 1.0, 1.7), (0, 7), (1.0, 0.8), (0.0, 0.1), (1.0, 0.9),
                                                   (1.0, 1.3))]
SMALL_GRID = [SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m, typical_p=y, repetition_penalty=r)
              for t, k, p, m, y, r in itertools.product((0.7, 1.0), (0, 5), (1.0, 0.7), (0.0, 0.2), (1.0, 0.8),
                                                         (1.0, 1.5))]


def name(params: SamplingParams) -> str:
    return (f"T{params.temperature}-k{params.top_k}-p{params.top_p}-min{params.min_p}-typ{params.typical_p}"
            f"-rep{params.repetition_penalty}")


def transformers_probs(logits: torch.Tensor, params: SamplingParams, context: list[int]) -> torch.Tensor:
    """Row r of logits [T, V] through transformers' processors with the ids before its token,
    `context[:len(context) - T + 1 + r]`, then softmax."""
    steps = [(RepetitionPenaltyLogitsProcessor, params.repetition_penalty, params.repetition_penalty != 1.0),
             (TemperatureLogitsWarper, params.temperature, params.temperature != 1.0),
             (TopKLogitsWarper, params.top_k, params.top_k > 0), (TopPLogitsWarper, params.top_p, params.top_p < 1.0),
             (MinPLogitsWarper, params.min_p, params.min_p > 0.0),
             (TypicalLogitsWarper, params.typical_p, params.typical_p < 1.0)]
    chain = LogitsProcessorList([processor(value) for processor, value, active in steps if active])
    rows = logits.shape[0]
    out = []
    for r in range(rows):
        prefix = torch.tensor([context[: len(context) - rows + 1 + r]], dtype=torch.long)
        out.append(torch.softmax(chain(prefix, logits[r : r + 1].clone()), dim=-1))
    return torch.cat(out)


@pytest.mark.parametrize("params", GRID, ids=name)
def test_random_logits_match_transformers(params):
    generator = torch.Generator().manual_seed(hash(name(params)) % 2**31)
    logits = torch.randn(5, 3000, generator=generator) * 3.0
    logits[1] -= 4.0  # all negative: the penalty multiplies
    context = torch.randint(0, 3000, (60,), generator=generator).tolist() + [int(logits[4].argmax())] * 3
    ours = metrics.samplers(logits, params, context)
    expected = transformers_probs(logits, params, context)
    assert (ours.probs - expected).abs().max().item() < 1e-6
    # a dropped token has no probability; a kept one may still underflow at a low temperature
    assert ours.dropped is None if metrics.is_plain(params) else not (ours.probs[ours.dropped != 0] > 0).any()
    assert torch.allclose(ours.probs.sum(-1), torch.ones(5), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_text(tiny_model):
    return tiny_model.encode("The quick brown fox jumps over the lazy dog. The quick brown fox jumps")


@pytest.mark.parametrize("params", SMALL_GRID + [SamplingParams(greedy=True, repetition_penalty=1.5),
                                                  SamplingParams(greedy=True)], ids=name)
def test_tiny_model_steps_match_transformers(tiny_model, tiny_text, params):
    params = SamplingParams(**{**params.__dict__, "seed": 5})
    session = tiny_model.start_from_ids(tiny_text, params)
    try:
        session.generate(4)
        ids = session.token_ids
        steps = session.prompt_tokens[1:] + session.tokens
    finally:
        session.close()
    logits = torch.from_numpy(full_logits(tiny_model, ids)[:-1]).float()  # row r predicts ids[r + 1]
    if params.greedy:
        chained = logits.clone()
        for r in range(len(chained)):
            chained[r] = RepetitionPenaltyLogitsProcessor(params.repetition_penalty)(
                torch.tensor([ids[: r + 1]]), chained[r : r + 1].clone())[0]
        expected = torch.zeros_like(logits).scatter_(-1, chained.argmax(-1, keepdim=True), 1.0)
    else:
        expected = transformers_probs(logits, params, ids[:-1])
    ours = metrics.samplers(logits, params, ids[:-1]).probs
    assert (ours - expected).abs().max().item() < 1e-6  # the same logits: the whole vocabulary
    for r, step in enumerate(steps):  # the session's own numbers (its cached forward passes): each row's prefix
        row = expected[r]
        assert step.sampled_prob == pytest.approx(row[step.token_id].item(), abs=1e-5)
        assert all(a.sampled_prob == pytest.approx(row[a.token_id].item(), abs=1e-5) for a in step.alternatives)
        assert step.kept_count == int((row > 0).sum())
        if not step.is_prompt:
            assert step.sampled_prob > 0  # a draw never lands on a token the samplers removed


def test_dropped_by_worked_out_by_hand():
    """p = .40 .25 .15 .10 .06 .04. top-k 4 drops ids 4 and 5; renormalised .444 .278 .167 .111, top-p .85 keeps
    the prefix reaching it (.444 + .278 = .722 < .85, + .167 = .889): id 3 goes; renormalised .5 .3125 .1875,
    min-p .4 needs p >= .2: id 2 goes; .615 .385 has entropy .667 nats, surprisals .486 and .955 are .181 and
    .288 from it, and .615 alone reaches typical .5: id 1 goes. Id 0 is all that is left."""
    raw = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]
    logits = torch.tensor([[math.log(p) for p in raw]])
    params = SamplingParams(top_k=4, top_p=0.85, min_p=0.4, typical_p=0.5, top_n=6)
    (step,) = token_steps(logits, [0], 0, is_prompt=False, params=params, texts=lambda i: (str(i), False))
    assert [a.token_id for a in step.alternatives] == [0, 1, 2, 3, 4, 5]
    assert [a.dropped_by for a in step.alternatives] == [None, "typical", "min-p", "top-p", "top-k", "top-k"]
    assert [a.sampled_prob for a in step.alternatives] == pytest.approx([1, 0, 0, 0, 0, 0])
    assert step.kept_count == 1 and step.kept_mass == pytest.approx(0.40)
    # without typical: ids 0 and 1 stay, .40 + .25 of the raw mass
    (step,) = token_steps(logits, [1], 0, is_prompt=False, params=SamplingParams(top_k=4, top_p=0.85, min_p=0.4),
                          texts=lambda i: (str(i), False))
    assert step.sampled_prob == pytest.approx(0.25 / 0.65) and step.kept_count == 2
    assert step.kept_mass == pytest.approx(0.65) and step.alternatives[1].dropped_by is None
    assert [a.dropped_by for a in step.alternatives] == [None, None, "min-p", "top-p", "top-k", "top-k"]


def test_greedy_after_the_penalty_and_ties_keep_the_lowest_id():
    logits = torch.tensor([[2.0, 1.9, -1.0, -1.1]])
    texts = lambda i: (str(i), False)  # noqa: E731
    params = SamplingParams(greedy=True, repetition_penalty=1.2, top_n=4)
    # id 0 was seen: 2.0 / 1.2 = 1.67 falls behind 1.9; id 2 seen: -1.0 * 1.2 = -1.2 falls behind -1.1
    (step,) = token_steps(logits, [1], 0, is_prompt=False, params=params, texts=texts, context=[0, 2, 0])
    assert step.sampled_prob == 1.0 and step.kept_count == 1 and step.kept_mass == pytest.approx(step.prob)
    assert [(a.token_id, a.dropped_by) for a in step.alternatives] == \
           [(0, "greedy"), (1, None), (2, "greedy"), (3, "greedy")]
    assert metrics.samplers(logits, SamplingParams(repetition_penalty=1.2), [0, 2]).probs[0].argsort(
        descending=True).tolist() == [1, 0, 3, 2]
    # four equal tokens: top-p .5 keeps two of them, the lowest ids; top-k keeps every token tied with the k-th
    flat = torch.zeros(1, 4)
    assert metrics.samplers(flat, SamplingParams(top_p=0.5)).probs[0].tolist() == [0.5, 0.5, 0.0, 0.0]
    assert metrics.samplers(flat, SamplingParams(top_k=2)).probs[0].tolist() == [0.25] * 4


def test_plain_greedy_numbers_from_one_native_pass_equal_the_samplers():
    """Greedy decoding without a penalty takes its numbers from `row_stats` (one pass over the logits); the
    samplers' torch path is the reference: the chosen token (argmax or not, as a prompt's), ties, every column."""
    if row_stats.kernel() is None:
        pytest.skip(f"no native statistics here: {row_stats.kernel.unavailable}")
    generator = torch.Generator().manual_seed(11)
    logits = torch.randn(6, 5000, generator=generator) * 2.0
    logits[2, [3000, 7]] = logits[2].max() + 1.0  # a tie for the argmax: greedy takes the lowest id
    targets = [int(logits[0].argmax()), 5, 7, 3000, int(logits[4].argmax()), 1]
    params = SamplingParams(greedy=True, top_n=12, temperature=0.7, top_k=3)  # greedy: the cuts do not matter
    texts = lambda i: (str(i), False)  # noqa: E731
    native = token_steps(logits, targets, 0, is_prompt=True, params=params, texts=texts)
    reference = token_steps(logits, targets, 0, is_prompt=True, params=params, texts=texts,
                            sampled=metrics.samplers(logits, params))
    for ours, theirs in zip(native, reference, strict=True):
        assert ours.sampled_prob == theirs.sampled_prob and ours.kept_count == theirs.kept_count == 1
        assert ours.rank == theirs.rank
        for field in ("prob", "logprob", "entropy", "kept_mass"):
            assert getattr(ours, field) == pytest.approx(getattr(theirs, field), rel=1e-5, abs=1e-7), field
        # (torch's topk orders equal logits as it likes: compare by token)
        assert {a.token_id: (a.sampled_prob, a.dropped_by) for a in ours.alternatives} == \
               {a.token_id: (a.sampled_prob, a.dropped_by) for a in theirs.alternatives}
        assert [a.prob for a in ours.alternatives] == pytest.approx([a.prob for a in theirs.alternatives], rel=1e-5)
    assert [s.sampled_prob for s in native] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert [a.token_id for a in native[2].alternatives[:2]] == [7, 3000]  # the greedy token first


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0.5, top_p=0.9, min_p=0.05),
                                    SamplingParams(top_k=40, typical_p=0.7, repetition_penalty=1.3)], ids=name)
def test_kept_count_and_mass_against_numpy(params):
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(6, 5000, generator=generator) * 2.0
    context = torch.randint(0, 5000, (200,), generator=generator).tolist()
    steps = token_steps(logits, [0] * 6, 0, is_prompt=True, params=params, texts=lambda i: ("", False),
                        context=context)
    sampled = transformers_probs(logits, params, context).numpy()
    raw = logits.double().numpy()
    raw = np.exp(raw - raw.max(-1, keepdims=True))
    raw /= raw.sum(-1, keepdims=True)
    for step, row, p in zip(steps, sampled, raw):
        kept = row > 0
        assert step.kept_count == int(np.count_nonzero(kept))
        assert step.kept_mass == pytest.approx(float(p[kept].sum()), abs=1e-6)
        assert len(step.alternatives) == 10  # the default top_n


def test_a_prompts_rows_in_blocks_see_their_own_context(monkeypatch):
    """Long prompts are summarised a block of rows at a time: each row still sees exactly the ids before it
    (the repetition penalty's context), as when it is computed alone."""
    from tokviz_app.engine import token_steps as module

    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(10, 500, generator=generator) * 2.0
    ids = torch.randint(0, 500, (30,), generator=generator).tolist()  # 20 ids before the 10 rows' tokens
    params = SamplingParams(top_k=40, top_p=0.9, repetition_penalty=1.5)
    monkeypatch.setattr(module, "LOGITS_AT_ONCE", 3 * 500)  # blocks of 3 rows: 3 + 3 + 3 + 1
    blocked = token_steps(logits, ids[20:], 5, is_prompt=True, params=params, texts=lambda i: ("", False),
                          context=ids[:29])
    alone = [token_steps(logits[r : r + 1], [ids[20 + r]], 5 + r, is_prompt=True, params=params,
                         texts=lambda i: ("", False), context=ids[: 20 + r])[0] for r in range(10)]
    assert blocked == alone


def test_draws_follow_the_sampling_distribution():
    logits = torch.tensor([[3.0, 2.5, 2.0, 1.0, 0.0, -1.0]])
    params = SamplingParams(temperature=0.8, top_p=0.9, min_p=0.1, repetition_penalty=1.4)
    probs = metrics.samplers(logits, params, [1]).probs[0]
    generator = torch.Generator().manual_seed(0)
    counts = np.bincount([metrics.draw(probs, generator) for _ in range(4000)], minlength=6) / 4000
    assert np.abs(counts - probs.numpy()).max() < 0.03
    assert all(counts[probs.numpy() == 0] == 0)


@pytest.mark.parametrize("params", SMALL_GRID[::5] + [SamplingParams(greedy=True, repetition_penalty=1.5)], ids=name)
def test_fake_backend_samples_as_the_engine(params):
    """The fake's plain-Python samplers (what the UI tests see) agree with the engine on the fake's logits."""
    for index in range(3, 9):
        context = [14, 30, 31, 3, 3, 5, 8, 9][:index]
        logits = fake_logits(tuple(context[-2:]), index, salt=11, eos_boost=0.0)
        probs, dropped = fake_sample(logits, params, context)
        engine = metrics.samplers(torch.tensor([logits]), params, context)
        assert len(probs) == VOCAB_SIZE
        assert np.abs(np.array(probs) - engine.probs[0].double().numpy()).max() < 1e-5
        assert dropped == [metrics.DROPPED_BY[c] for c in engine.dropped[0].tolist()]


def test_remote_top_list_decides_the_kept_set_only_where_it_can():
    def dist(probs):
        return _Dist.from_top([(_Tok(i, str(i)), math.log(p)) for i, p in enumerate(probs)], 10)

    d = dist([0.5, 0.2, 0.1, 0.05, 0.01])
    result = kept(d.known, d.ranked, SamplingParams(min_p=0.15))  # .1 >= .075 stays, .05 goes
    assert result.count == 3 and result.mass == pytest.approx(0.8)
    assert result.prob(0) == pytest.approx(0.5 / 0.8) and result.prob(99) == 0.0
    assert result.dropped == {3: "min-p", 4: "min-p"}
    # top-k 4: .588 .235 .118 .059; top-p .7 keeps .588 + .235; min-p .5 needs .294
    result = kept(d.known, d.ranked, SamplingParams(top_k=4, top_p=0.7, min_p=0.5))
    assert result.dropped == {4: "top-k", 2: "top-p", 3: "top-p", 1: "min-p"}
    assert result.count == 1 and result.prob(0) == 1.0
    assert kept(d.known, d.ranked, SamplingParams(min_p=0.01)) is None  # every listed token stays: unknown
    assert kept(d.known, d.ranked, SamplingParams(typical_p=0.9)) is None  # needs the whole distribution
    assert kept(d.known, d.ranked, SamplingParams(top_k=2, repetition_penalty=1.2)) is None  # needs the logits
    assert kept(d.known, d.ranked, SamplingParams(temperature=0.5, min_p=0.2)) is None  # servers' order differs
    greedy = kept(d.known, d.ranked, SamplingParams(greedy=True))
    assert greedy.count == 1 and greedy.dropped == {i: "greedy" for i in range(1, 5)}
    plain = kept(d.known, d.ranked, SamplingParams(), vocab_size=321)
    assert plain.count == 321 and plain.mass == 1.0 and plain.prob(99) is None


def test_exports_keep_the_new_fields_and_check_them():
    from tests.fake_backend import FakeModelManager
    from tokviz_app.core.errors import ImportFormatError
    from tokviz_app.exports.snapshot import from_json, to_dict

    model = FakeModelManager().load("gpt2")
    session = model.start("The quick brown fox", SamplingParams(top_k=3, min_p=0.1, repetition_penalty=1.3, seed=1))
    session.generate(2)
    doc = to_dict(session.snapshot())
    step = doc["branches"][0]["tokens"][0]
    assert doc["settings"]["min_p"] == 0.1 and "typical_p" not in doc["settings"]  # defaults are left out
    assert {a.get("dropped_by") for a in step["alternatives"]} >= {None, "top-k"} and step["kept_count"] <= 3
    assert from_json(json.dumps(doc)).tokens == session.tokens

    plain = to_dict(model.start("The quick brown fox", SamplingParams(seed=1)).snapshot())
    for t in plain["prompt_tokens"]:  # as written before issue 14: no new field anywhere
        for key in ("kept_count", "kept_mass"):
            t.pop(key, None)
    assert "min_p" not in plain["settings"]
    assert all("dropped_by" not in a for a in plain["prompt_tokens"][1]["alternatives"])
    assert from_json(json.dumps(plain)).prompt_tokens[1].kept_count is None

    bad = [("settings", "min_p", 1.5), ("settings", "typical_p", 0), ("settings", "repetition_penalty", -1.0),
           ("settings", "top_n", 21), ("step", "kept_count", -1), ("step", "kept_mass", 1.5),
           ("alternative", "dropped_by", "top-q")]
    for where, key, value in bad:
        broken = json.loads(json.dumps(doc))
        target = {"settings": broken["settings"], "step": broken["branches"][0]["tokens"][0],
                  "alternative": broken["branches"][0]["tokens"][0]["alternatives"][0]}[where]
        target[key] = value
        with pytest.raises(ImportFormatError, match=key):
            from_json(json.dumps(broken))
