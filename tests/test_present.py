"""present/: one format and one colour table for the page and the HTML export (fast, no browser)."""

from __future__ import annotations

import dataclasses
import html
import math
import re
import subprocess
import sys

import pytest

from tokviz_app.core.types import Alternative, Branch, SamplingParams, SessionSnapshot, TokenStep
from tokviz_app.exports.html import render_html
from tokviz_app.present.scales import (
    LEVELS,
    MODES,
    PALETTES,
    SCALES,
    export_css,
    legend_entries,
    level,
    level_of_value,
    metric_value,
    mode_class,
    mode_css,
    step_classes,
)
from tokviz_app.present.text import (
    CONTINUES,
    chip_texts,
    details_rows,
    fmt,
    hover_text,
    model_line,
    percent,
    token_bytes,
    visible_text,
)


def step(prob=0.5, rank=1, entropy=1.0, *, text="x", position=0, prompt=False, alternatives=()) -> TokenStep:
    logprob = None if prob is None else math.log(prob)
    return TokenStep(7, text, prob, logprob, rank, entropy, prob, tuple(alternatives), position, prompt)


def snapshot(prompt: list[TokenStep], tokens: list[TokenStep]) -> SessionSnapshot:
    return SessionSnapshot(model={"key": "m", "label": "M"}, settings=SamplingParams(), prompt="p",
                           prompt_ids=[s.token_id for s in prompt], prompt_tokens=prompt, branches=[Branch(0, tokens)])


# ------------------------------------------------------------------------------------------------------ text
def test_pure_python() -> None:
    """present/ and the export load without NiceGUI or torch (a fresh interpreter: this one has them)."""
    code = ("import sys, tokviz_app.present.scales, tokviz_app.present.text, tokviz_app.exports.html; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'nicegui', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_visible_text() -> None:
    assert visible_text(" a\nb\tc\r") == "·a↵b→c␍"
    assert visible_text("") == "∅"
    assert visible_text("\x00\x1b\x7f") == "␀␛␡"
    assert visible_text("\x01\x1f") == "␁␟"
    assert visible_text("<b>é") == "<b>é"


def test_number_formats() -> None:
    assert [percent(p) for p in (None, 1.0, 0.5, 0.1, 0.0338, 0.00012, 1e-9, 0.0)] == \
        ["–", "100%", "50.0%", "10.0%", "3.4%", "0.01%", "< 0.01%", "0%"]
    assert percent("<b>") == "<b>" and percent(True) == "True"  # untrusted snapshots: shown, never an error
    assert fmt(None) == "–" and fmt(1.23456, 2, " bits") == "1.23 bits" and fmt(3) == "3"
    assert fmt("x", 2) == "x" and fmt(-1.0, 4) == "-1.0000"


def test_hover_and_details() -> None:
    s = step(0.25, 3, 2.0, text=" a")
    assert hover_text(s) == "' a'\nprobability 25.0% · rank 3"
    assert hover_text(step(None, None, None)) == "'x'\nfirst token: no prediction"
    rows = {key: value for key, _, value in details_rows(s)}
    assert rows["prob"] == "25.0%" and rows["rank"] == "3" and rows["surprisal"] == "2.00 bits"
    assert rows["logprob"] == "-1.3863" and rows["entropy"] == "2.00 bits"
    hostile = TokenStep("id", "t", "p", "lp", "r", "e", "sp", sampling=SamplingParams())
    assert {key for key, _, _ in details_rows(hostile)} >= {"prob", "logprob", "surprisal", "rank", "sampling"}


# ---------------------------------------------------------------------------------------------------- scales
def test_every_mode_has_five_bands_and_labels() -> None:
    assert len(LEVELS) == 5 and list(MODES) == [scale.key for scale in SCALES]
    for scale in SCALES:
        assert len(scale.bands) == 5 and len(scale.labels) == 5, scale.key
        assert scale.bands[-1].op == "rest", "the last band takes what is left"
        assert [name for name, _ in legend_entries(scale.key)] == list(scale.colours)  # DIVERGING for Δ
    assert legend_entries("prob")[0] == ("green", "> 70%") and legend_entries("rank")[0] == ("green", "top-1")


@pytest.mark.parametrize("mode, values, levels", [
    ("prob", (1.0, 0.7001, 0.70, 0.5, 0.4999, 0.3, 0.2999, 0.1, 0.0999, 0.0),
     ("green", "green", "blue", "blue", "purple", "purple", "orange", "orange", "red", "red")),
    ("rank", (1, 2, 10, 11, 100, 101, 1000, 1001),
     ("green", "blue", "blue", "purple", "purple", "orange", "orange", "red")),
    ("entropy", (0.0, 0.4999, 0.5, 1.4999, 1.5, 2.9999, 3.0, 4.9999, 5.0, 9.0),
     ("green", "green", "blue", "blue", "purple", "purple", "orange", "orange", "red", "red")),
    ("surprisal", (0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999, 10.0, 30.0),
     ("green", "green", "blue", "blue", "purple", "purple", "orange", "orange", "red", "red")),
    ("decided", (0.0, 0.5, 0.5001, 0.8, 0.8001, 0.9999, 1.0, float("inf")),
     ("green", "green", "blue", "blue", "purple", "purple", "orange", "red")),
    ("delta", (-9.0, -2.0, -1.999, -0.5001, -0.5, 0.0, 0.5, 0.5001, 1.999, 2.0, 9.0),
     ("down2", "down2", "down1", "down1", "same", "same", "same", "up1", "up1", "up2", "up2")),
])
def test_levels_at_the_band_edges(mode, values, levels) -> None:
    assert [level_of_value(v, mode) for v in values] == list(levels)
    assert [level_of_value(v, mode) for v in (None, "1", True)] == [None, None, None]  # unknown, untrusted


def test_level_of_steps() -> None:
    assert level(step(0.70), "prob") == "blue" and level(step(0.71), "prob") == "green"
    assert level(step(0.5), "surprisal") == "blue"  # 1 bit
    assert level(step(0.9, rank=11), "rank") == "purple" and level(step(0.9, entropy=5.0), "entropy") == "red"
    first = step(None, None, None)
    assert {level(first, mode) for mode in MODES} == {None}
    assert mode_class(first, "rank") == "tv-r-none"
    # the "decided" mode's values are computed by the page (on_demand): a new chip shows "none" until then
    assert step_classes(step(0.9, 1, 0.1)).startswith("tv-p-green tv-r-green tv-e-green tv-s-green tv-d-none")
    assert "tv-x-none" in step_classes(step(0.9, 1, 0.1)).split()  # Δ: computed by a comparison
    assert metric_value(step(0.5), "surprisal") == 1.0 and metric_value(first, "prob") is None


def test_generated_css_covers_every_mode_level_and_palette() -> None:
    css = mode_css()
    for scale in SCALES:
        for name in (*scale.colours, "none"):
            assert f".tv-mode-{scale.key} .tv-{scale.prefix}-{name} {{" in css
            assert f".tv-mode-{scale.key} .tv-prompt-token.tv-{scale.prefix}-{name} {{" in css
    for name in (*LEVELS, "none"):
        assert f".tv-p-{name} {{" in css
    for name in LEVELS:
        assert f".tv-token.tv-p-{name} {{" in css and f".tv-alt-fill.tv-p-{name} {{" in css
    for palette, selector in (("default", ":root {"), ("colorblind", "body.tv-cb {")):
        block = css.split(selector, 1)[1].split("}", 1)[0]
        for name, (bg, accent) in PALETTES[palette].items():
            assert f"--tv-{name}: {bg};" in block and f"--tv-{name}-b: {accent};" in block
    assert "#5f2c4e" in export_css("rank", "colorblind") and ".tv-mode-rank .tv-r-red" in export_css("rank", "default")


def test_hand_written_css_has_no_palette() -> None:
    from pathlib import Path

    css = (Path(__file__).resolve().parents[1] / "assets" / "tokviz.css").read_text(encoding="utf-8")
    assert not re.search(r"--tv-\w+\s*:", css) and not re.search(r"^\.tv-(token\.|alt-fill\.)?tv-p-", css, re.MULTILINE)


# ---------------------------------------------------------------------------------------------------- export
def test_export_tokens_are_inline_and_match_the_page() -> None:
    prompt = [step(None, None, None, text="The", prompt=True), step(0.3, 4, 2.0, text=" cat", position=1, prompt=True)]
    tokens = [step(0.9, 1, 0.2, text=" sat", alternatives=[Alternative(7, " sat", 0.9, 0.9)]),
              step(0.0338, 12, 3.0, text="\n", position=1), step(0.00012, 2000, 6.0, text="\ton", position=2)]
    page = render_html(snapshot(prompt, tokens))
    body = page.split('<div class="tv-text', 1)[1].split("</div>", 1)[0]
    between = re.sub(r"<span [^>]*>[^<]*</span>", "", body.split(">", 1)[1])  # the text around the chips
    assert between == "<br>", "no whitespace between token spans, one <br> after the newline token"
    assert body.count("<br>") == 1 and re.search(r"↵</span><br><span", body)
    chips = re.findall(r'<span class="([^"]*)"[^>]*title="([^"]*)">([^<]*)</span>', body)
    assert len(chips) == 5
    for (classes, title, text), s in zip(chips, [*prompt, *tokens]):
        assert text == visible_text(s.text)
        assert html.unescape(title).startswith(hover_text(s)), "the page's hover text, then the details"
        assert mode_class(s, "prob") in classes.split()
        assert ("tv-prompt-token" in classes) == s.is_prompt
    assert "probability 3.4% · rank 12" in page and "probability 0.01% · rank 2000" in page
    assert "<p>Settings: T=1, top-k=off, top-p=1. Hover" in page
    sampled = dataclasses.replace(snapshot(prompt, tokens), settings=SamplingParams(temperature=0.8, top_p=0.9,
                                                                                     min_p=0.05, seed=3))
    assert "Settings: T=0.8, top-k=off, top-p=0.9, min-p=0.05, seed=3." in render_html(sampled)


def test_export_escapes_text_that_looks_like_html() -> None:
    evil = step(0.25, 3, 2.0, text='<script>alert("x")</script> & \'q\'',
                alternatives=[Alternative(8, '"><img src=x>', 0.5, 0.5)])
    snap = snapshot([step(None, None, None, text="<b>", prompt=True)], [evil])
    snap.model["label"] = '<i>"M"</i>'
    page = render_html(snap, mode="rank", palette="colorblind")
    assert "<script" not in page and "<img" not in page and "<i>" not in page
    assert page.count("<b>") == 1, "only the model label's own <b>"
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;·&amp;·&#x27;q&#x27;" in page
    assert "&lt;i&gt;&quot;M&quot;&lt;/i&gt;" in page and "&quot;&gt;&lt;img" in page


# ------------------------------------------------------------------------------------- issue 13: one format
def test_percent_rule() -> None:
    """One readable format: one decimal from 1%, two under 1%, "< 0.01%" under that; no exponents."""
    cases = {1.0: "100%", 0.99999: "> 99.9%", 0.421: "42.1%", 0.0521: "5.2%", 0.01: "1.0%", 0.00995: "1.0%",
             0.0035: "0.35%", 0.0005: "0.05%", 0.0001: "0.01%", 0.0000999: "< 0.01%", 5.2e-6: "< 0.01%",
             1e-300: "< 0.01%", 0.0: "0%", math.nan: "nan", math.inf: "inf"}
    assert {p: percent(p) for p in cases} == cases
    assert percent(0) == "0%"  # an int zero (0 == 0.0 as a dict key, so checked apart)
    assert all("e" not in percent(10.0 ** -k) for k in range(0, 30))


def test_export_never_prints_zero_for_a_tiny_probability() -> None:
    tiny = step(3e-7, 40000, 9.0, text=" z", alternatives=[Alternative(7, " z", 3e-7, 3e-7)])
    page = html.unescape(render_html(snapshot([step(None, None, None, text="a", prompt=True)], [tiny])))
    assert "probability < 0.01% · rank 40000" in page and "0.00%" not in page and "e-0" not in page


def test_byte_markers_keep_their_spaces() -> None:
    """‹F0 9F› is two bytes, not text: no visible-space dot inside it (the legend writes it the same way)."""
    assert visible_text("‹F0 9F›") == "‹F0 9F›"
    assert visible_text(" ‹E2 80› x") == "·‹E2 80›·x"
    assert visible_text("‹not hex›") == "‹not·hex›"


def byte_step(text: str, position: int, *, partial: bool = True, prob: float = 0.25) -> TokenStep:
    return TokenStep(300 + position, text, prob, math.log(prob), 2, 1.0, prob, (), position, False, partial)


def test_a_character_split_over_byte_tokens_shows_once() -> None:
    smile = [byte_step("‹F0 9F›", 0), byte_step("‹99 82›", 1, prob=0.5), byte_step("!", 2, partial=False)]
    shown = chip_texts(smile)
    assert [s.text for s in shown] == ["🙂", CONTINUES, "!"]
    assert shown[0].note == "part 1 of 2 of “🙂” (U+1F642)" and shown[1].note == "part 2 of 2 of “🙂” (U+1F642)"
    assert hover_text(smile[0], shown[0].note).splitlines()[1:] == ["probability 25.0% · rank 2", shown[0].note]
    assert "probability 50.0%" in hover_text(smile[1], shown[1].note), "each chip keeps its own numbers"
    # one byte per token, and a token that ends one character and starts the next
    one_byte_each = [byte_step(f"‹{b}›", i) for i, b in enumerate(["F0", "9F", "99", "82"])]
    assert [s.text for s in chip_texts(one_byte_each)] == ["🙂", CONTINUES, CONTINUES, CONTINUES]
    two = [byte_step("‹F0 9F›", 0), byte_step("‹99 82 F0›", 1), byte_step("‹9F 98 80›", 2)]
    assert [s.text for s in chip_texts(two)] == ["🙂", CONTINUES + "😀", CONTINUES]
    assert chip_texts(two)[1].note == "part 2 of 2 of “🙂” (U+1F642); part 1 of 2 of “😀” (U+1F600)"


def test_bytes_that_join_nothing_stay_as_they_are() -> None:
    alone = [byte_step("‹F0 9F›", 0), byte_step("a", 1, partial=False), byte_step("‹99 82›", 2)]
    assert [s.text for s in chip_texts(alone)] == ["‹F0 9F›", "a", "‹99 82›"], "a whole token between: no join"
    assert [(s.text, s.note) for s in chip_texts([byte_step(" ‹E2›", 0), byte_step("‹41›x", 1)])] == \
        [("·‹E2›", ""), ("‹41›x", "")], "an invalid sequence is not a character"
    assert token_bytes("a‹F0 9F›·") == b"a\xf0\x9f\xc2\xb7"


def test_export_joins_split_characters_like_the_page() -> None:
    tokens = [byte_step("‹F0 9F›", 0), byte_step("‹99 82›", 1)]
    page = render_html(snapshot([step(None, None, None, text="a", prompt=True)], tokens))
    texts = re.findall(r'data-position="\d+" title="[^"]*">([^<]*)</span>', page)
    assert texts == ["🙂", CONTINUES] and "part 1 of 2 of “🙂”" in html.unescape(page)


def test_legend_names_meanings_not_colours() -> None:
    colours = re.compile(r"green|blue|purple|orange|red|yellow|vermill?ion", re.IGNORECASE)
    for scale in SCALES:
        for _, text in legend_entries(scale.key):
            assert not colours.search(text), (scale.key, text)
    assert [text for _, text in legend_entries("prob")] == ["> 70%", "50–70%", "30–50%", "10–30%", "< 10%"]


def test_model_line() -> None:
    assert model_line("GPT-2", "cpu") == "Model: GPT-2 · cpu"
    assert model_line(None, None) == "Model: none loaded yet"
    assert model_line(None, None, "GPT-2 Medium") == \
        "Model: GPT-2 Medium · read-only import (not loaded here)"
    assert model_line("GPT-2", "cpu", "GPT-2 Medium") == \
        "Model: GPT-2 Medium · read-only import (not loaded here) · loaded: GPT-2 · cpu"
