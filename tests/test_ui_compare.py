"""Issue 15, part 1 on the page: Compare with another model or another context (User fixture).

The fake backend offers several models whose logits differ (a salt per catalog key) and scores given ids with
its own logits (`tests/fake_compare.py`), so every number the page shows is checked against the fake's
distributions computed here. Two tokenizers need real ones: the tiny GPT-2 and a second tiny model with another
vocabulary (slow).
"""

from __future__ import annotations

import json
import math

import pytest
from nicegui.testing import User

from tests.tiny_model import build_tiny_model
from tests.ui_helpers import chips, idle, open_ready, prompt_chips, wait_until
from tokviz_app.config import Settings
from tokviz_app.exports.snapshot import from_json, to_json

LN2 = math.log(2)


async def generate(user: User, c, n: int = 8, prompt: str = "The quick brown fox") -> None:
    c.state.prompt = prompt
    user.find(marker="max-tokens").elements.pop().value = n
    user.find("Generate to End").click()
    await idle(c)
    await wait_until(lambda: c.state.active_branch is not None, 10, "the branch panel")


async def compare(user: User, c, *, model: str | None = None, context: str | None = None) -> None:
    before = c.state.compare
    if context is not None:
        user.find(marker="compare-mode").elements.pop().set_value("context")
        user.find(marker="compare-context").elements.pop().set_value(context)
    else:
        user.find(marker="compare-mode").elements.pop().set_value("model")
        user.find(marker="compare-model").elements.pop().set_value(model)
    user.find(marker="compare-button").click()
    await wait_until(lambda: c.state.compare is not None and c.state.compare is not before and not c.state.busy,
                     10, "the comparison")


def delta_class(chip) -> str:
    return next(cls for cls in chip.classes if cls.startswith("tv-x-"))


def marked_text(user: User, marker: str) -> str:
    return user.find(marker=marker).elements.pop().text


def expected(manager, key: str, ids: list[int], k: int) -> list[float]:
    return manager.load(key).distribution(ids, k)


async def test_a_model_compared_with_itself_shows_zero_delta_everywhere(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page)
    await generate(user, c)
    assert c.views.compare.select.value != "gpt2", "model B defaults to a model other than the one in use"
    await compare(user, c, model="gpt2")
    assert c.views.mode_select.value == "delta" and c.views.tokens.mode == "delta"
    assert [delta_class(ch) for ch in chips(user)] == ["tv-x-same"] * len(c.state.tokens)
    prompt = [delta_class(ch) for ch in prompt_chips(user)]
    assert prompt == ["tv-x-none"] + ["tv-x-same"] * (len(prompt) - 1), "the first token has no prediction"
    steps = [*c.state.prompt_tokens, *c.state.tokens]
    assert all(s.logprob == steps[i].logprob for i, s in enumerate(c.state.compare.scores) if s is not None)
    assert all(s.kl == 0.0 for s in c.state.compare.scores[1:])
    assert "Δ +0.00 bits" in chips(user)[3].props["title"] and "GPT-2: probability" in chips(user)[3].props["title"]
    await user.should_see(marker="legend-mode-delta")
    user.find(marker="token-2").click()
    step = c.state.tokens[2]
    assert marked_text(user, "compare-rank") == f"{step.rank} / {step.rank}"
    assert marked_text(user, "compare-delta") == "+0.00 bits" and marked_text(user, "compare-kl") == "0.00 bits"
    status = marked_text(user, "compare-status")
    assert "log-prob A" in status and "(Δ +0.00 bits)" in status


async def test_another_model_moves_each_token_by_its_own_numbers(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page)
    await generate(user, c, 12)
    await compare(user, c, model="gpt2-medium")
    steps = [*c.state.prompt_tokens, *c.state.tokens]
    ids = [s.token_id for s in steps]
    n = len(c.state.prompt_tokens)
    from tokviz_app.present.scales import value_class

    for k in range(1, len(ids)):
        p = expected(app.manager, "gpt2-medium", ids, k)
        q = expected(app.manager, "gpt2", ids, k)
        score = c.state.compare.scores[k]
        assert score.logprob == pytest.approx(math.log(p[ids[k]]), abs=1e-12)
        assert score.rank == 1 + sorted(range(len(p)), key=lambda i: -p[i]).index(ids[k])
        assert score.kl == pytest.approx(sum(a * math.log(a / b) for a, b in zip(q, p) if a > 0) / LN2, abs=1e-9)
        delta = (math.log(p[ids[k]]) - steps[k].logprob) / LN2
        chip = chips(user)[k - n] if k >= n else prompt_chips(user)[k]
        assert delta_class(chip) == value_class(delta, "delta")
    assert len({delta_class(ch) for ch in chips(user)}) > 1, "the two fakes disagree on some tokens"
    # the chart draws both lines: A's and model B's (surprisal and probability)
    c.views.chart.set_metric("surprisal")
    series = c.views.chart.chart.options["series"]
    assert [round(v, 4) for _, v, _ in series[2]["data"]] == \
        [round(-c.state.compare.scores[n + i].logprob / LN2, 4) for i in range(len(c.state.tokens))]
    assert c.views.chart.chart.options["legend"]["show"] and "GPT-2 Medium" in series[2]["name"]
    # details: both ranks, both top-5 lists, the KL
    user.find(marker="token-4").click()
    score = c.state.compare.scores[n + 4]
    assert marked_text(user, "compare-rank") == f"{c.state.tokens[4].rank} / {score.rank}"
    assert marked_text(user, "compare-kl") == f"{score.kl:.2f} bits"
    await user.should_see(marker="compare-top-a")
    top_b = user.find(marker="compare-top-b").elements.pop()
    assert len([e for e in top_b.descendants() if "tv-compare-alt" in e.classes]) == 5


async def test_another_context_scores_the_same_continuation(user: User, tokviz_page) -> None:
    app, c = await open_ready(user, tokviz_page)
    await generate(user, c, 6)
    await compare(user, c, context="Hello world!")
    comparison, model = c.state.compare, app.manager.load("gpt2")
    assert comparison.mode == "context" and comparison.context_b == "Hello world!"
    assert {delta_class(ch) for ch in prompt_chips(user)} == {"tv-x-none"}, "the prompt is what was replaced"
    context = model.encode("Hello world!")
    cont = [s.token_id for s in c.state.tokens]
    for j, step in enumerate(c.state.tokens):
        p = model.distribution(context + cont, len(context) + j)
        assert comparison.scores[len(c.state.prompt_tokens) + j].logprob == pytest.approx(math.log(p[step.token_id]))
    assert "context B: probability" in chips(user)[0].props["title"]
    assert "Compared with context B" in marked_text(user, "compare-status")


async def test_after_a_pick_the_unchanged_part_stays_and_compare_scores_the_rest(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    c.state.continue_after_pick = False
    await generate(user, c, 8)
    await compare(user, c, model="distilgpt2")
    step = c.state.tokens[4]
    rank = next(i for i, a in enumerate(step.alternatives) if a.token_id != step.token_id)
    user.find(marker="token-4").click()
    user.find(marker=f"alt-{rank}").click()
    await wait_until(lambda: c.state.tokens[4].token_id != step.token_id and not c.state.busy, 10, "the pick")
    classes = [delta_class(ch) for ch in chips(user)]
    assert "tv-x-none" not in classes[:4] and classes[4:] == ["tv-x-none"]
    assert "The text changed since" in marked_text(user, "compare-status")
    assert not user.find(marker="compare-details").elements.pop().default_slot.children  # token 4: not compared
    await compare(user, c, model="distilgpt2")
    assert "tv-x-none" not in [delta_class(ch) for ch in chips(user)]
    user.find(marker="compare-clear").click()
    assert c.state.compare is None and {delta_class(ch) for ch in chips(user)} == {"tv-x-none"}
    assert "GPT-2" not in chips(user)[0].props["title"].split("\n", 2)[-1]


async def test_export_and_import_keep_the_comparison(user: User, tokviz_page, downloads) -> None:
    app, c = await open_ready(user, tokviz_page)
    await generate(user, c, 6)
    await compare(user, c, model="gpt2-medium")
    user.find(marker="export-json").click()
    await wait_until(lambda: downloads, 10, "the JSON download")
    exported = downloads[-1][0]
    data = json.loads(exported)
    n = len(data["prompt_ids"])
    entry = data["compare"]["tokens"][n + 1]
    step = data["branches"][data["active"]]["tokens"][1]
    assert data["compare"]["model"]["key"] == "gpt2-medium" and data["compare"]["mode"] == "model"
    assert entry["delta"] == pytest.approx(entry["logprob_b"] - step["logprob"]) and entry["rank_b"] >= 1
    assert len(entry["top_b"]) == 5 and data["compare"]["tokens"][0] is None
    assert to_json(from_json(exported)).encode() == exported, "export -> import -> export is exact"
    shown = [delta_class(ch) for ch in chips(user)]
    titles = [ch.props["title"] for ch in chips(user)]
    # the HTML export: Δ colours and both numbers in each hover
    user.find(marker="export-html").click()
    await wait_until(lambda: len(downloads) == 2, 10, "the HTML download")
    page = downloads[-1][0].decode()
    assert 'class="tv-text tv-mode-delta"' in page and "GPT-2 Medium: probability" in page
    assert all(cls in page for cls in shown) and ".tv-mode-delta .tv-x-up2" in page

    user.find("Reset").click()
    await idle(c)
    assert c.state.compare is None
    await c.files.import_json(exported)
    await wait_until(lambda: c.state.compare is not None and len(chips(user)) == len(shown), 10, "the import")
    await idle(c)
    assert [delta_class(ch) for ch in chips(user)] == shown and [ch.props["title"] for ch in chips(user)] == titles


async def test_a_read_only_import_is_compared_by_its_token_ids(user: User, tokviz_page, downloads) -> None:
    app, c = await open_ready(user, tokviz_page)
    await generate(user, c, 5)
    user.find(marker="export-json").click()
    await wait_until(lambda: downloads, 10, "the JSON download")
    data = json.loads(downloads[-1][0])
    data["model"] = {"key": "not-here", "label": "Elsewhere", "source": "nowhere"}  # a model not offered here
    await c.files.import_json(json.dumps(data))
    await wait_until(lambda: c.state.imported is not None and len(chips(user)) == 5, 10, "the read-only import")
    await idle(c)
    await compare(user, c, model="distilgpt2")
    assert c.state.compare.scores[1].kl is None, "no KL: the text's own model is not here"
    assert "tv-x-none" not in [delta_class(ch) for ch in chips(user)]
    user.find(marker="compare-mode").elements.pop().set_value("context")
    user.find(marker="compare-button").click()
    await user.should_see("needs this text's own model")


# ------------------------------------------------------------------------------- two tokenizers (real models)
@pytest.fixture(scope="module")
def other_tokenizer_path(tmp_path_factory):
    """A second tiny GPT-2 whose tokenizer has another vocabulary (300 tokens, other merges)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-other"), vocab_size=300, seed=1)


@pytest.mark.slow
async def test_two_tokenizers_show_spans_that_conserve_both_totals(user: User, tokviz_page, engine_manager,
                                                                   tiny_model_path, other_tokenizer_path) -> None:
    app = tokviz_page(manager=engine_manager, settings=Settings(models=[str(tiny_model_path),
                                                                        str(other_tokenizer_path)]))
    await user.open("/")
    c = app.controllers[-1]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None, 60, "the tiny model")
    c.state.prompt = "Hello world! Emoji: 🦊 café naïve. The quick brown fox jumps over the lazy dog."
    user.find(marker="score-text").click()
    await wait_until(lambda: c.state.tokens and not c.state.busy, 30, "the scored text")
    await compare(user, c, model=app.manager.add(str(other_tokenizer_path)).key)
    spans = c.state.compare.spans
    steps = [*c.state.prompt_tokens, *c.state.tokens]
    assert spans and any(len(s.ids_b) != s.stop - s.first for s in spans), "the tokenizers cut differently"
    assert math.fsum(s.logprob_a for s in spans if s.logprob_a is not None) == \
        pytest.approx(math.fsum(s.logprob for s in steps if s.logprob is not None), rel=1e-9)
    model_b = engine_manager.load(str(other_tokenizer_path))
    ids_b = [i for s in spans for i in s.ids_b]
    whole = model_b.score_ids([model_b.bos_token_id, *ids_b], 1)
    assert math.fsum(s.logprob_b for s in spans) == pytest.approx(math.fsum(x.logprob for x in whole), rel=1e-9)
    joined = [ch for ch in chips(user) if any(cls.startswith("tv-span-") for cls in ch.classes)]
    assert joined, "a span of several tokens reads as one box"
    title = joined[0].props["title"]
    assert "span A:" in title and "|" in title and "log-prob A" in title
    assert "aligned spans (the tokenizers differ)" in marked_text(user, "compare-status")
