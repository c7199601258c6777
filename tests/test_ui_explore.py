"""Issue 4 on the page: branches, colour modes, chart, any-token search, score text, export/import, keyboard.

User-fixture tests; the ones that need the engine's branch tree, scoring and restore run on the tiny GPT-2.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from nicegui.testing import User

from tests.ui_helpers import chips, idle, open_ready, prompt_chips, wait_until
from tokviz_app.config import Settings
from tokviz_app.exports.snapshot import from_json, to_json
from tokviz_app.core.types import SamplingParams
from tokviz_app.exports.html import render_html
from tokviz_app.ui.branches import split_positions
from tokviz_app.present.scales import level, mode_class, mode_css
from tokviz_app.present.text import percent, visible_text


async def open_tiny(user: User, tokviz_page, engine_manager, tiny_model_path, *, seed: int = 7):
    app = tokviz_page(manager=engine_manager, settings=Settings(models=[str(tiny_model_path)]))
    await user.open("/")
    c = app.controllers[-1]
    user.find("Initialize Model").click()
    await wait_until(lambda: c.state.model is not None, 60, "the tiny model to load")
    user.find(marker="seed").elements.pop().value = seed
    return app, c


async def generate(user: User, c, n: int) -> None:
    user.find(marker="max-tokens").elements.pop().value = n
    user.find("Generate to End").click()
    await wait_until(lambda: not c.state.busy and len(c.state.tokens) >= 1, 30, "generation")
    await wait_until(lambda: c.state.active_branch is not None, 10, "the branch panel")


def has(user: User, marker: str) -> bool:
    try:
        return bool(user.find(marker=marker).elements)
    except AssertionError:
        return False


def branch_entries(user: User):
    if not has(user, "branch"):
        return []
    return sorted(user.find(marker="branch").elements, key=lambda e: e.props["data-branch"])


def other_alt(step):
    return next((i, a) for i, a in enumerate(step.alternatives) if a.token_id != step.token_id)


# --------------------------------------------------------------------------------------------- 1. branches
@pytest.mark.slow
async def test_branch_tree_keeps_and_switches(user: User, tokviz_page, engine_manager, tiny_model_path) -> None:
    _, c = await open_tiny(user, tokviz_page, engine_manager, tiny_model_path)
    c.state.continue_after_pick = False  # this test checks what a pick cuts (continuing: test_ui_first_minutes)
    await generate(user, c, 6)
    original = [s.token_id for s in c.state.tokens]
    assert len(branch_entries(user)) == 1
    rank, alt = other_alt(c.state.tokens[2])
    user.find(marker="token-2").click()
    user.find(marker=f"alt-{rank}").click()
    await wait_until(lambda: len(branch_entries(user)) == 2, 30, "a second branch")
    entries = branch_entries(user)
    assert all("tv-branch" in e.classes for e in entries)
    assert "tv-branch-active" in entries[1].classes and "tv-branch-active" not in entries[0].classes
    with user.scope(marker="branch-1"):
        await user.should_see(content="from #0 at token 2")
        await user.should_see(content=f"“{visible_text(alt.text)}”")
    with user.scope(marker="branch-0"):
        await user.should_see(content="6 tokens")
    assert "tv-split" in chips(user)[2].classes, "the split point is marked in the text"
    user.find("Generate Next Token").click()  # the new branch continues
    await idle(c, 30)
    new = [s.token_id for s in c.state.tokens]
    assert len(new) == 4 and new[2] == alt.token_id

    user.find(marker="branch-0").click()  # back to the original: nothing was lost
    await wait_until(lambda: [s.token_id for s in c.state.tokens] == original, 30, "branch 0")
    assert [int(chip.props["data-prob"] != "") for chip in chips(user)] == [1] * 6
    assert [chip.text for chip in chips(user)] == [visible_text(s.text) for s in c.state.tokens]
    assert c.views.chart.chart.options["series"][0]["data"] == [round(s.prob, 6) for s in c.state.tokens]
    await wait_until(lambda: "tv-branch-active" in branch_entries(user)[0].classes, 10, "highlight")
    assert "tv-split" in chips(user)[2].classes
    user.find(marker="branch-1").click()
    await wait_until(lambda: [s.token_id for s in c.state.tokens] == new, 30, "branch 1")
    assert [s.token_id for s in c.state.handle.session.tokens] == new
    user.find("Reset").click()  # only Reset forgets the tree
    await user.should_see(marker="branches-empty")


def test_split_positions() -> None:
    from tokviz_app.core.types import Branch, TokenStep

    def steps(ids):
        return [TokenStep(i, str(i), 0.5, -0.69, 1, 1.0, 0.5, position=p) for p, i in enumerate(ids)]

    tree = [Branch(0, steps([1, 2, 3, 4])), Branch(1, steps([1, 2, 9]), 0, 2), Branch(2, steps([1, 2, 9, 8]), 1, 3),
            Branch(3, steps([5]), 0, 0)]
    assert split_positions(tree, 0) == {0, 2}
    assert split_positions(tree, 1) == {0, 2}
    assert split_positions(tree, 2) == {0, 2, 3}


# ------------------------------------------------------------------------------------------ 3. colour modes
async def test_colour_modes_and_legend(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find(marker="max-tokens").elements.pop().value = 8
    user.find("Generate to End").click()
    await idle(c)
    container = user.find(marker="tokens").elements.pop()
    assert "tv-mode-prob" in container.classes
    await user.should_see(content="> 70%")
    for mode, title, label in [("rank", "Rank:", "top-1000"), ("entropy", "Entropy:", "> 5 bits (unsure)"),
                               ("surprisal", "Surprisal:", "> 10 bits"), ("prob", "Probability:", "< 10%")]:
        user.find(marker="color-mode").elements.pop().value = mode
        assert f"tv-mode-{mode}" in container.classes and len(container.classes) == 2
        await user.should_see(marker=f"legend-mode-{mode}")
        assert user.find(marker="legend-title").elements.pop().text == title
        await user.should_see(content=label)
        for chip, step in zip(chips(user), c.state.tokens):
            assert mode_class(step, mode) in chip.classes
    user.find(marker="colorblind").elements.pop().value = True
    assert c.state.palette == "colorblind"
    assert "body.tv-cb" in mode_css() and ".tv-mode-rank .tv-r-green" in mode_css()


def test_levels() -> None:
    from tokviz_app.core.types import TokenStep

    def step(prob, rank, entropy):
        import math
        return TokenStep(1, "x", prob, math.log(prob), rank, entropy, prob)

    assert [level(step(0.9, r, 1), "rank") for r in (1, 2, 10, 11, 100, 101, 1000, 1001)] == \
        ["green", "blue", "blue", "purple", "purple", "orange", "orange", "red"]
    assert [level(step(0.9, 1, e), "entropy") for e in (0.1, 1.0, 2.0, 4.0, 9.0)] == \
        ["green", "blue", "purple", "orange", "red"]
    assert [level(step(p, 1, 1), "surprisal") for p in (0.9, 0.4, 0.1, 0.01, 0.0001)] == \
        ["green", "blue", "purple", "orange", "red"]
    first = TokenStep(1, "x", None, None, None, None, None)
    assert {level(first, m) for m in ("prob", "rank", "surprisal", "entropy")} == {None}


# --------------------------------------------------------------------------------------------- 4. chart
async def test_chart_follows_the_text(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find(marker="max-tokens").elements.pop().value = 6
    user.find("Generate to End").click()
    await idle(c)
    chart = user.find(marker="chart").elements.pop()
    assert "tv-chart" in chart.classes
    series = chart.options["series"][0]
    assert series["data"] == [round(s.prob, 6) for s in c.state.tokens]
    user.find(marker="token-2").click()  # selecting a token highlights its point
    assert series["markPoint"]["data"][0]["coord"] == [2, round(c.state.tokens[2].prob, 6)]
    c.views.chart.on_point(4)  # what a click on point 4 does
    await user.should_see(content="generated token 4")
    assert "tv-selected" in chips(user)[4].classes
    assert series["markPoint"]["data"][0]["coord"][0] == 4
    user.find(marker="chart-metric").elements.pop().value = "surprisal"
    assert series["data"] == [round(s.surprisal, 6) for s in c.state.tokens]
    user.find(marker="chart-metric").elements.pop().value = "entropy"
    assert series["data"] == [round(s.entropy, 6) for s in c.state.tokens]


async def test_chart_is_throttled_while_streaming(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.01)
    updates = []
    original = c.views.chart.flush
    c.views.chart.flush = lambda: (updates.append(len(c.views.chart.steps)), original())
    user.find(marker="max-tokens").elements.pop().value = 60
    user.find("Generate to End").click()
    await idle(c, 10)
    assert len(c.views.chart.chart.options["series"][0]["data"]) == 60
    assert 1 <= len(updates) < 30, updates


# ------------------------------------------------------------------------------------------- 5. any token
@pytest.mark.slow
async def test_any_token_search_and_choose(user: User, tokviz_page, engine_manager, tiny_model_path) -> None:
    _, c = await open_tiny(user, tokviz_page, engine_manager, tiny_model_path)
    c.state.continue_after_pick = False  # this test checks what a pick cuts (continuing: test_ui_first_minutes)
    await generate(user, c, 4)
    user.find(marker="token-1").click()
    user.find(marker="token-search").type("e")
    user.find(marker="token-search-button").click()
    await wait_until(lambda: has(user, "search-hit-0"), 30, "search results")
    session = c.state.handle.session
    found = c.state.model.find_tokens("e", 12)
    scored = {t: (p, r) for t, p, r, _ in session.score(1, [t for t, _ in found])}
    ranks = [int(user.find(marker=f"search-rank-{i}").elements.pop().text.split()[1])
             for i in range(len(found))]
    assert ranks == sorted(r for _, r in scored.values())
    far = max(scored, key=lambda t: scored[t][1])
    i = ranks.index(scored[far][1])
    assert user.find(marker=f"search-prob-{i}").elements.pop().text == percent(scored[far][0])
    user.find(marker=f"search-use-{i}").click()
    await wait_until(lambda: len(c.state.tokens) == 2 and not c.state.busy, 30, "the choice")
    assert c.state.tokens[1].token_id == far and c.state.tokens[1].rank == scored[far][1]
    assert c.state.tokens[1].prob == pytest.approx(scored[far][0], rel=1e-5)


# ------------------------------------------------------------------------------------------- 2. score text
@pytest.mark.slow
async def test_score_text_then_branch_and_continue(user: User, tokviz_page, engine_manager,
                                                   tiny_model_path) -> None:
    _, c = await open_tiny(user, tokviz_page, engine_manager, tiny_model_path)
    c.state.continue_after_pick = False  # this test checks what a pick cuts (continuing: test_ui_first_minutes)
    text = "The quick brown fox jumps over the lazy dog."
    user.find(marker="prompt").elements.pop().value = text
    user.find("Score text").click()
    await wait_until(lambda: c.state.tokens and not c.state.busy, 30, "scoring")
    reference = c.state.model.start(text)
    try:
        expected = reference.prompt_tokens
    finally:
        reference.close()
    assert len(prompt_chips(user)) == 1 and len(chips(user)) == len(expected) - 1
    assert [float(ch.props["data-prob"]) for ch in chips(user)] == [float(f"{s.prob:.6f}") for s in expected[1:]]
    await user.should_see(content="tokens scored")
    rank, alt = other_alt(c.state.tokens[3])  # branch from a token of the text
    user.find(marker="token-3").click()
    user.find(marker=f"alt-{rank}").click()
    await wait_until(lambda: len(c.state.tokens) == 4 and c.state.tokens[3].token_id == alt.token_id, 30, "choice")
    user.find("Generate Next Token").click()
    await idle(c, 30)
    assert len(c.state.tokens) == 5
    await wait_until(lambda: len(branch_entries(user)) == 2, 10, "the scored text kept as a branch")


# ---------------------------------------------------------------------------------- 7. export and import
@pytest.mark.slow
async def test_export_import_round_trip_is_exact(user: User, tokviz_page, engine_manager, tiny_model_path,
                                                 downloads) -> None:
    _, c = await open_tiny(user, tokviz_page, engine_manager, tiny_model_path)
    await generate(user, c, 5)
    rank, _ = other_alt(c.state.tokens[1])
    user.find(marker="token-1").click()
    user.find(marker=f"alt-{rank}").click()
    await wait_until(lambda: len(branch_entries(user)) == 2, 30, "two branches")
    user.find(marker="export-json").click()
    await wait_until(lambda: downloads, 10, "the JSON download")
    first, name = downloads[-1]
    assert name == "tokviz-session.json"
    data = json.loads(first)
    assert data["model"]["key"] == c.state.model.key and len(data["branches"]) == 2
    assert data["branches"][0]["tokens"][0]["alternatives"] and "sampling" in data["branches"][0]["tokens"][0]
    user.find(marker="branch-0").click()
    await wait_until(lambda: "tv-branch-active" in branch_entries(user)[0].classes, 30, "switch")
    shown_probs = [ch.props["data-prob"] for ch in chips(user)]
    user.find(marker="export-json").click()
    await wait_until(lambda: len(downloads) == 2, 10, "the second download")
    exported = downloads[-1][0]

    user.find("Reset").click()
    from nicegui.elements.upload_files import SmallFileUpload

    upload = user.find(marker="import").elements.pop()
    await upload.handle_uploads([SmallFileUpload("tokviz-session.json", "application/json", exported)])
    await wait_until(lambda: len(branch_entries(user)) == 2, 30, "the imported tree")
    await user.should_see(content="live: you can continue")
    assert [ch.props["data-prob"] for ch in chips(user)] == shown_probs
    user.find(marker="export-json").click()
    await wait_until(lambda: len(downloads) == 3, 10, "the re-export")
    assert downloads[-1][0] == exported, "export -> import -> export is exact"
    user.find("Generate Next Token").click()  # live: the user continues
    await idle(c, 30)
    assert len(c.state.tokens) == len(shown_probs) + 1

    user.find(marker="export-html").click()
    await wait_until(lambda: len(downloads) == 4, 10, "the HTML download")
    page, name = downloads[-1]
    assert name == "tokviz-session.html" and b"<script" not in page and b"data-prob" in page


async def test_import_read_only_and_bad_files(user: User, tokviz_page, downloads) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find(marker="max-tokens").elements.pop().value = 4
    user.find("Generate to End").click()
    await idle(c)
    from tokviz_app.exports.snapshot import SessionSnapshot
    from tokviz_app.core.types import Branch

    session = c.state.handle.session
    snapshot = SessionSnapshot(model={"key": "gpt2-medium", "label": "GPT-2 Medium", "source": "x"},
                               settings=SamplingParams(temperature=0.7, top_k=5), prompt="The quick brown fox",
                               prompt_ids=[s.token_id for s in session.prompt_tokens],
                               prompt_tokens=list(session.prompt_tokens),
                               branches=[Branch(0, list(session.tokens))])
    text = to_json(snapshot)
    await c.files.import_json(text.encode())
    await user.should_see(content="read-only: initialize GPT-2 Medium to continue")
    assert [float(ch.props["data-prob"]) for ch in chips(user)] == [float(f"{s.prob:.6f}") for s in session.tokens]
    assert user.find(marker="temperature").elements.pop().value == 0.7
    assert user.find(marker="model-select").elements.pop().value == "gpt2-medium"
    user.find(marker="token-1").click()
    user.find(marker="alt-3").click()
    await user.should_see("This import is read-only")
    user.find(marker="export-json").click()  # a read-only import exports unchanged
    await wait_until(lambda: downloads, 10, "the export")
    assert downloads[-1][0].decode() == text
    await c.files.import_json(b"{not json")
    await user.should_see("This file is not valid JSON")
    await c.files.import_json(json.dumps({"format": "something-else"}))
    await user.should_see("This JSON is not a tokviz session export.")


def test_html_export_is_self_contained_and_escaped() -> None:
    from tokviz_app.exports.snapshot import SessionSnapshot
    from tokviz_app.core.types import Alternative, Branch, TokenStep

    params = SamplingParams()
    evil = TokenStep(5, "<script>alert(1)</script>", 0.25, -1.386, 3, 2.0, 0.25,
                     (Alternative(6, '"&', 0.5, 0.5),), 0, False, False, params)
    snap = SessionSnapshot(model={"key": "m", "label": "<b>M</b>"}, settings=params, prompt="x", prompt_ids=[1],
                           prompt_tokens=[TokenStep(1, "x", None, None, None, None, None, is_prompt=True)],
                           branches=[Branch(0, [evil])])
    page = render_html(snap, mode="rank", palette="colorblind")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;M&lt;/b&gt;" in page and 'data-prob="0.250000"' in page and "rank 3" in page
    assert "top-10" in page and "#d2ad05" in page and "http" not in page.replace("http-equiv", "")  # colour-blind
    assert from_json(to_json(snap)).tokens[0].text == evil.text


# ------------------------------------------------------------------------------------ 6. sampling controls
async def test_settings_changes_never_rewrite_tokens(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    user.find("Generate Next Token").click()
    await idle(c)
    first = c.state.tokens[0]
    user.find(marker="temperature").elements.pop().value = 0.5
    user.find(marker="top-k").elements.pop().value = 5
    user.find("Generate Next Token").click()
    await idle(c)
    assert c.state.tokens[0] is first and first.sampling.temperature == 1.0
    assert c.state.tokens[1].sampling.temperature == 0.5 and c.state.tokens[1].sampling.top_k == 5
    user.find(marker="token-1").click()
    await user.should_see(content="T=0.5, top-k=5")
    assert user.find(marker="details-sampled").elements.pop().text == percent(c.state.tokens[1].sampled_prob)
    assert user.find(marker="details-prob").elements.pop().text == percent(c.state.tokens[1].prob)
    user.find(marker="token-0").click()
    await user.should_see(content="T=1, top-k=off")


# ------------------------------------------------------------------------------------------- 8. keyboard
def key(name: str, **mods):
    return SimpleNamespace(action=SimpleNamespace(keydown=True), key=SimpleNamespace(name=name),
                           modifiers=SimpleNamespace(ctrl=mods.get("ctrl", False), alt=False, meta=False))


async def test_keyboard_shortcuts(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    c.keyboard.on_key(key("n"))
    await idle(c)
    assert len(c.state.tokens) == 1
    user.find(marker="max-tokens").elements.pop().value = 5
    c.keyboard.on_key(key("g"))
    await idle(c)
    assert len(c.state.tokens) == 6
    c.keyboard.on_key(key("ArrowLeft"))  # nothing selected: the last token
    assert c.state.selected.position == 5
    c.keyboard.on_key(key("ArrowLeft"))
    c.keyboard.on_key(key("ArrowLeft"))
    assert c.state.selected.position == 3 and "tv-selected" in chips(user)[3].classes
    c.keyboard.on_key(key("ArrowRight"))
    assert c.state.selected.position == 4
    assert c.views.chart.selected == 4
    c.keyboard.on_key(key("ArrowDown"))  # opens the menu and highlights the first alternative
    await user.should_see(content="Alternatives for token 4")
    c.keyboard.on_key(key("ArrowDown"))
    c.keyboard.on_key(key("ArrowDown"))
    c.keyboard.on_key(key("ArrowUp"))
    assert "tv-alt-focus" in user.find(marker="alt-1").elements.pop().classes
    assert "tv-alt-focus" not in user.find(marker="alt-2").elements.pop().classes
    target = c.state.tokens[4].alternatives[1].token_id
    c.keyboard.on_key(key("Enter"))
    await wait_until(lambda: len(c.state.tokens) == 6 and c.state.tokens[4].token_id == target and not c.state.busy,
                     message="the keyboard choice, continued to the same length")
    c.keyboard.on_key(key("ArrowLeft"))
    c.keyboard.on_key(key("Enter"))  # no menu open: Enter opens it
    await user.should_see(content="Alternatives for token 3")
    c.keyboard.on_key(key("Escape"))
    assert c.views.tokens.menu is None
    c.keyboard.on_key(key("n", ctrl=True))  # ctrl-n is the browser's, not ours
    await idle(c)
    assert len(c.state.tokens) == 6
    c.keyboard.on_key(key("?"))
    await user.should_see(content="Keyboard shortcuts")
    await user.should_see(content="generate to the end")


async def test_escape_stops_generation(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.03)
    c.keyboard.on_key(key("g"))
    await wait_until(lambda: len(c.state.tokens) >= 2, message="a few tokens")
    c.keyboard.on_key(key("Escape"))
    assert not c.state.busy
    await user.should_see(content="stopped")


# ------------------------------------------------------------------------------------ 9. look and feel
async def test_speed_and_perplexity_read_outs(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page, step_delay=0.02)
    user.find(marker="max-tokens").elements.pop().value = 10
    user.find("Generate to End").click()
    await wait_until(lambda: len(c.state.tokens) >= 3, message="a few tokens")
    status = user.find(marker="gen-status").elements.pop().text
    assert "ms/token" in status and "tokens/s" in status
    await idle(c)
    import math
    logprobs = [s.logprob for s in c.state.tokens]
    expected = math.exp(-sum(logprobs) / len(logprobs))
    await user.should_see(content=f"sequence perplexity {expected:.3f}")
    await user.should_see(marker="dark-toggle")
