"""Branch tree, forced next tokens, vocabulary search and JSON export/import in the engine."""

from __future__ import annotations

import math

import pytest

from tests.test_engine import PROMPT, check_all
from tokviz_app.engine import PositionError, SamplingParams, TokvizError
from tokviz_app.exports.snapshot import from_json, to_json


def test_choosing_keeps_the_old_continuation_as_a_branch(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=1))
    original = [t.token_id for t in session.generate(12)]
    alt = session.tokens[4].alternatives[1].token_id
    session.choose(4, alt)
    session.generate(6)
    assert [b.id for b in session.branches] == [0, 1]
    root, new = session.branches
    assert [t.token_id for t in root.tokens] == original  # nothing lost
    assert new.parent == 0 and new.split == 4 and new.first_token.token_id == alt
    assert [t.token_id for t in new.tokens[:4]] == original[:4]
    assert session.active_branch.id == 1
    check_all(session, tiny_model)

    session.switch_branch(0)
    assert [t.token_id for t in session.tokens] == original
    session.generate(3)  # continues the old branch exactly
    check_all(session, tiny_model)
    session.switch_branch(1)
    assert session.tokens[4].token_id == alt
    session.generate(2)
    check_all(session, tiny_model)
    with pytest.raises(PositionError):
        session.switch_branch(7)


def test_branch_statistics(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=2))
    session.generate(8)
    branch = session.active_branch
    total = sum(t.logprob for t in session.tokens)
    assert math.isclose(branch.logprob, total)
    assert math.isclose(branch.perplexity, math.exp(-total / 8))


def test_force_next_token(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=3))
    session.generate(3)
    step = session.choose(3, 42)
    assert step.position == 3 and step.token_id == 42 and len(session.branches) == 1
    check_all(session, tiny_model)


def test_vocabulary_search(tiny_model):
    results = tiny_model.find_tokens(" brown")
    assert results and results[0][1] == " brown"
    assert all("brown" in text for _, text in results)
    assert tiny_model.find_tokens("") == []


def test_export_import_round_trip_is_exact_and_resumable(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=4, temperature=0.9, top_k=40))
    session.generate(10)
    session.choose(5, session.tokens[5].alternatives[2].token_id)
    session.generate(4)
    snapshot = session.snapshot(PROMPT)
    text = to_json(snapshot)
    restored = from_json(text)
    assert to_json(restored) == text
    assert restored.tokens == session.tokens
    assert restored.prompt_tokens == session.prompt_tokens
    assert [b.tokens for b in restored.branches] == [b.tokens for b in session.branches]
    assert restored.settings == session.params

    resumed = tiny_model.restore(restored)
    assert resumed.tokens == session.tokens and resumed.token_ids == session.token_ids
    resumed.generate(5)
    check_all(resumed, tiny_model, temperature=0.9, top_k=40)
    resumed.switch_branch(0)
    resumed.generate(2)
    check_all(resumed, tiny_model, temperature=0.9, top_k=40)


@pytest.mark.parametrize("bad", ["", "{", "[]", '{"format": "other"}', '{"format": "tokviz-session", "version": 1}'])
def test_import_rejects_bad_files_clearly(bad):
    with pytest.raises(TokvizError):
        from_json(bad)
