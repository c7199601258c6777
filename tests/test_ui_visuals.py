"""Issue 13, items 4 and 10 on the page (User fixture): the chart's points carry the token text and their
colour band, the details panel opens as a sheet on selection, the seed box's label is short."""

from __future__ import annotations

from nicegui.testing import User

from tests.ui_helpers import idle, open_ready
from tokviz_app.present.scales import LEVELS, PALETTES, level
from tokviz_app.present.text import percent, visible_text
from tokviz_app.ui.chart import TOOLTIP


async def _generated(user: User, tokviz_page, n: int = 8):
    _, c = await open_ready(user, tokviz_page)
    c.state.prompt = "Hello <b>world</b> & the cat"
    user.find(marker="max-tokens").elements.pop().value = n
    user.find(marker="Generate to End").click()
    await idle(c)
    assert len(c.state.tokens) == n
    return c


def _points(c) -> list[list]:
    return c.views.chart.chart.options["series"][1]["data"]


async def test_chart_points_carry_position_text_value_and_band(user: User, tokviz_page) -> None:
    c = await _generated(user, tokviz_page)
    options = c.views.chart.chart.options
    assert options["series"][0]["data"] == [round(s.prob, 6) for s in c.state.tokens]  # the line, unchanged
    assert options["series"][0]["silent"] and options["series"][1]["type"] == "scatter"
    for i, (point, step) in enumerate(zip(_points(c), c.state.tokens)):
        assert point == [i, round(step.prob, 6), LEVELS.index(level(step, "prob")), visible_text(step.text),
                         f"probability {percent(round(step.prob, 6))}"]
    # the tooltip shows them, escaped (token text is untrusted), whatever series the pointer is on
    assert options["tooltip"][":formatter"] == TOOLTIP and "esc(text)" in TOOLTIP and "&#" in TOOLTIP
    # the colours: the palette's accent of each level, as the chips' underlines
    pieces = options["visualMap"]["pieces"]
    assert options["visualMap"]["dimension"] == 2 and options["visualMap"]["seriesIndex"] == 1
    assert [p["color"] for p in pieces] == [PALETTES["default"][name][1] for name in (*LEVELS, "none")]
    assert [p["value"] for p in pieces] == list(range(len(LEVELS) + 1))


async def test_chart_points_follow_the_colour_mode_palette_and_metric(user: User, tokviz_page) -> None:
    c = await _generated(user, tokviz_page)
    user.find(marker="color-mode").elements.pop().value = "rank"
    assert [p[2] for p in _points(c)] == [LEVELS.index(level(s, "rank")) for s in c.state.tokens]
    user.find(marker="colorblind").elements.pop().value = True
    pieces = c.views.chart.chart.options["visualMap"]["pieces"]
    assert [p["color"] for p in pieces] == [PALETTES["colorblind"][name][1] for name in (*LEVELS, "none")]
    user.find(marker="chart-metric").elements.pop().value = "entropy"
    point, step = _points(c)[3], c.state.tokens[3]
    assert point[1] == round(step.entropy, 6) and point[4] == f"entropy {round(step.entropy, 6):.2f} bits"
    assert point[2] == LEVELS.index(level(step, "rank"))  # colour: the mode; height: the chart's metric


async def test_a_click_on_a_point_selects_its_token(user: User, tokviz_page) -> None:
    c = await _generated(user, tokviz_page)
    point = _points(c)[5]
    user.find(marker="chart").trigger("componentClick", {  # what ECharts sends for a click on point 5
        "componentType": "series", "seriesType": "scatter", "seriesIndex": 1, "seriesName": "", "name": "",
        "dataIndex": 5, "data": point, "dataType": None, "value": point})
    assert c.state.selected is c.state.tokens[5]
    await user.should_see(content="generated token 5")


async def test_details_open_as_a_sheet_on_selection_and_close(user: User, tokviz_page) -> None:
    c = await _generated(user, tokviz_page, n=4)
    card = c.views.details.card
    assert "tv-sheet-open" not in card.classes
    user.find(marker="token-2").click()
    await user.should_see(content="generated token 2")
    assert "tv-sheet-open" in card.classes  # a bottom sheet on phones (CSS); the side panel on wide screens
    user.find(marker="details-close").click()
    assert "tv-sheet-open" not in card.classes
    await user.should_see(content="generated token 2")  # the details stay, below the text
    user.find(marker="token-1").click()
    assert "tv-sheet-open" in card.classes
    user.find(marker="Reset").click()
    assert "tv-sheet-open" not in card.classes


async def test_the_seed_box_has_a_short_label_and_says_blank_is_random(user: User, tokviz_page) -> None:
    _, c = await open_ready(user, tokviz_page)
    seed = user.find(marker="seed").elements.pop()
    assert seed.props["label"] == "Seed" and seed.props["placeholder"] == "random"
    await user.should_see(content="Leave blank for a random seed")
