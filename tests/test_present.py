"""present/: one format and one colour table for the page and the HTML export (fast, no browser)."""

from __future__ import annotations

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
from tokviz_app.present.text import details_rows, fmt, hover_text, percent, visible_text


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
        ["–", "100.0%", "50.0%", "10.0%", "3.38%", "0.01%", "1.0e-07%", "0.0%"]
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
        assert [name for name, _ in legend_entries(scale.key)] == list(LEVELS)
    assert legend_entries("prob")[0] == ("green", "green > 70%") and legend_entries("rank")[0] == ("green", "top-1")


@pytest.mark.parametrize("mode, values, levels", [
    ("prob", (1.0, 0.7001, 0.70, 0.5, 0.4999, 0.3, 0.2999, 0.1, 0.0999, 0.0),
     ("green", "green", "blue", "blue", "purple", "purple", "orange", "orange", "red", "red")),
    ("rank", (1, 2, 10, 11, 100, 101, 1000, 1001),
     ("green", "blue", "blue", "purple", "purple", "orange", "orange", "red")),
    ("entropy", (0.0, 0.4999, 0.5, 1.4999, 1.5, 2.9999, 3.0, 4.9999, 5.0, 9.0),
     ("green", "green", "blue", "blue", "purple", "purple", "orange", "orange", "red", "red")),
    ("surprisal", (0.0, 0.999, 1.0, 2.999, 3.0, 5.999, 6.0, 9.999, 10.0, 30.0),
     ("green", "green", "blue", "blue", "purple", "purple", "orange", "orange", "red", "red")),
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
    assert step_classes(step(0.9, 1, 0.1)) == "tv-p-green tv-r-green tv-e-green tv-s-green"
    assert metric_value(step(0.5), "surprisal") == 1.0 and metric_value(first, "prob") is None


def test_generated_css_covers_every_mode_level_and_palette() -> None:
    css = mode_css()
    for scale in SCALES:
        for name in (*LEVELS, "none"):
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
    assert PALETTES["colorblind"]["green"][1] == "#0072b2"  # Okabe–Ito blue
    assert "#0072b2" in export_css("rank", "colorblind") and ".tv-mode-rank .tv-r-red" in export_css("rank", "default")


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
    assert "probability 3.38% · rank 12" in page and "probability 0.01% · rank 2000" in page


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
