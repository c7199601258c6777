"""The sampler lens on the page (issue 14), on the fake backend (its samplers: tests/fake_sampling.py): raw and
sampled side by side in the menu, the details and the search; the new sampler settings; the colour mode "Probability
after sampling" and the chart's second line; the What if panel re-colouring the text without generating."""

from __future__ import annotations

from nicegui.testing import User

from tests.fake_backend import FakeModel
from tests.ui_helpers import (
    chips,
    generate,
    idle,
    open_ready,
    prompt_chips,
    text_of,
    wait_until,
)
from tokviz_app.core.contract import Capabilities
from tokviz_app.core.types import SamplingParams
from tokviz_app.present.scales import WHAT_IF, value_class
from tokviz_app.present.text import after_sampling, kept_text, percent


def present(user: User, marker: str) -> bool:
    try:
        return bool(user.find(marker=marker).elements)
    except AssertionError:  # nothing found
        return False


def setting(user: User, marker: str, value) -> None:
    user.find(marker=marker).elements.pop().value = value


async def test_menu_and_details_show_raw_and_sampled_side_by_side(user: User, tokviz_page) -> None:
    """Top-k 3: three alternatives with their raw and sampled numbers, seven greyed and marked "dropped by top-k";
    the details list both too and say how many tokens the samplers kept."""
    _, c = await open_ready(user, tokviz_page)
    c.state.continue_after_pick = False
    setting(user, "top-k", 3)
    await generate(user, c, 6)
    step = c.state.tokens[2]
    assert step.sampling.top_k == 3 and step.kept_count == 3
    user.find(marker="token-2").click()
    await user.should_see(marker="alt-menu")
    for i, alt in enumerate(step.alternatives):
        (item,) = user.find(marker=f"alt-{i}").elements
        if i < 3:
            assert "tv-alt-dropped" not in item.classes and not present(user, f"alt-{i}-dropped")
            assert text_of(user, f"alt-{i}-sampled") == after_sampling(alt.sampled_prob) != "→ 0%"
        else:
            assert "tv-alt-dropped" in item.classes and text_of(user, f"alt-{i}-dropped") == "dropped by top-k"
    assert sum("tv-alt-dropped" in e.classes for e in user.find(marker="alt").elements) == 7
    await user.should_see(content="probability: raw → after the samplers")
    # the details panel: the same two numbers, and what the samplers kept
    assert text_of(user, "details-kept") == kept_text(step) == \
        f"kept 3 tokens holding {percent(step.kept_mass)} of the raw mass"
    assert text_of(user, "chart-0-sampled") == after_sampling(step.alternatives[0].sampled_prob)
    assert text_of(user, "chart-9-dropped") == "dropped by top-k"
    await user.should_see(content="Top 10: raw → after the samplers")


async def test_new_sampler_settings_reach_the_session_and_odd_values_are_said(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    setting(user, "min-p", 0.2)
    setting(user, "repetition-penalty", 1.3)
    setting(user, "typical-p", 0.9)
    setting(user, "top-n", 20)
    await generate(user, c, 3)
    params = c.state.tokens[0].sampling
    assert (params.min_p, params.repetition_penalty, params.typical_p, params.top_n) == (0.2, 1.3, 0.9, 20)
    assert len(c.state.tokens[0].alternatives) == 20
    user.find(marker="token-0").click()
    await user.should_see(marker="alt-19")
    setting(user, "min-p", -1)
    setting(user, "repetition-penalty", 0)
    user.find("Generate Next Token").click()
    await idle(c)
    assert "Min-p -1 is below 0; using 0 (off)." in user.notify.messages
    assert "A repetition penalty of 0 is not allowed (it must be above 0); using 1 (off)." in user.notify.messages
    assert c.state.tokens[-1].sampling.min_p == 0.0 and c.state.tokens[-1].sampling.repetition_penalty == 1.0


async def test_search_shows_both_numbers(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    c.state.continue_after_pick = False
    setting(user, "top-k", 5)
    await generate(user, c, 4)
    user.find(marker="token-1").click()
    kept = next(a for a in c.state.tokens[1].alternatives[:5] if a.text.strip().isalpha())  # inside the top-5
    user.find(marker="token-search").type(kept.text.strip())
    user.find(marker="token-search-button").click()
    await wait_until(lambda: present(user, "search-hit-0"), 10, "search results")
    found = c.state.model.find_tokens(kept.text.strip(), 12)
    scored = {t: (p, q) for t, p, _, q in c.state.handle.session.score(1, [t for t, _ in found])}
    shown = {(text_of(user, f"search-prob-{i}"), text_of(user, f"search-sampled-{i}")) for i in range(len(found))}
    assert shown == {(percent(p), after_sampling(q)) for p, q in scored.values()}
    assert scored[kept.token_id][1] == kept.sampled_prob > 0
    assert any(q == 0 for _, q in scored.values())  # the top-5 cut dropped the rest


async def test_colour_by_probability_after_sampling_and_the_chart_line(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    setting(user, "temperature", 0.5)
    await generate(user, c, 6)
    user.find(marker="color-mode").elements.pop().value = "sampled"
    await user.should_see(content="Probability after sampling:")  # the legend's title names the distribution
    assert "tv-mode-sampled" in c.views.tokens.container.classes
    for chip, step in zip(chips(user), c.state.tokens):
        assert value_class(step.sampled_prob, "sampled") in chip.classes
    options = c.views.chart.chart.options
    assert options["series"][3]["data"] == [round(s.sampled_prob, 6) for s in c.state.tokens]
    assert options["legend"]["show"] and options["legend"]["data"] == ["raw", "after the samplers"]
    c.views.chart.set_metric("entropy")
    assert options["series"][3]["data"] == [] and not options["legend"]["show"]


async def test_what_if_recolours_without_generating(user: User, tokviz_page) -> None:
    """Top-k 1 in the What if panel: the mode switches to what-if probability, every token that was not the most
    likely is struck through and counted; no token is added or changed."""
    app, c = await open_ready(user, tokviz_page)
    c.state.what_if_temperature = 1.0
    await generate(user, c, 12)
    tokens, steps = list(c.state.tokens), app.manager.steps
    setting(user, "what-if-top-k", 1)
    await wait_until(lambda: "would be impossible" in text_of(user, "what-if-status"), 10, "the replay")
    assert c.state.mode == WHAT_IF and user.find(marker="color-mode").elements.pop().value == WHAT_IF
    assert "tv-mode-whatif" in c.views.tokens.container.classes
    await user.should_see(content="What-if probability:")
    expected = [1.0 if t.rank == 1 else 0.0 for t in tokens]
    assert c.state.handle.session.what_if(SamplingParams(top_k=1)) == expected
    for chip, p in zip(chips(user), expected):
        assert value_class(p, WHAT_IF) in chip.classes and ("tv-whatif-zero" in chip.classes) == (p == 0)
    prompt = [t for t in c.state.prompt_tokens[1:]]
    assert all(("tv-whatif-zero" in chip.classes) == (t.rank != 1) for chip, t in zip(prompt_chips(user)[1:], prompt))
    impossible = expected.count(0.0) + sum(t.rank != 1 for t in prompt)
    assert f": {impossible} of {len(tokens) + len(prompt)} tokens would be impossible" in text_of(user, "what-if-status")
    assert c.state.tokens == tokens and app.manager.steps == steps and len(chips(user)) == len(tokens)
    # back to no cut: every token possible again, the struck-through marks go
    setting(user, "what-if-top-k", 0)
    await wait_until(lambda: not any("tv-whatif-zero" in chip.classes for chip in chips(user)), 10, "the marks to go")
    assert "0 of" in text_of(user, "what-if-status")


async def test_what_if_starts_from_the_sampling_settings_and_follows_new_text(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    setting(user, "temperature", 0.7)
    setting(user, "top-k", 4)
    await generate(user, c, 5)
    user.find(marker="what-if-copy").click()
    await wait_until(lambda: "would be impossible" in text_of(user, "what-if-status"), 10, "the replay")
    assert c.state.what_if_params() == SamplingParams(temperature=0.7, top_k=4)
    # its own settings: the what-if colours are the probability-after-sampling colours, nothing impossible
    for chip, step in zip(chips(user), c.state.tokens):
        assert value_class(step.sampled_prob, WHAT_IF) in chip.classes and "tv-whatif-zero" not in chip.classes
    await generate(user, c, 3)  # new chips: replayed again when the generation ends
    await wait_until(lambda: all(any(k.startswith("tv-w-") and k != "tv-w-none" for k in chip.classes)
                                 for chip in chips(user)), 10, "the new chips' colours")
    assert len(c.state.tokens) == 8


async def test_a_model_that_cannot_replay_says_so(user: User, tokviz_page, monkeypatch) -> None:
    monkeypatch.setattr(FakeModel, "capabilities", property(lambda self: Capabilities()))
    _, c = await open_ready(user, tokviz_page)
    await generate(user, c, 3)
    setting(user, "what-if-temperature", 0.5)
    await wait_until(lambda: "cannot replay" in text_of(user, "what-if-status"), 5, "the note")
    assert text_of(user, "what-if-status") == "GPT-2 cannot replay its text under other sampling settings."
