"""Issue 13 in Chromium: the colour-blind legend names meanings, not colours; an emoji split over two byte
tokens shows once; tiny probabilities read "< 0.01%"; the page names the model behind a read-only import.

Uses the fixtures of tests/test_browser.py (the real entry point serving the tiny model, headless Chromium).
"""

from __future__ import annotations

import math
import re

import pytest

from tests.browser_page import page_wait
from tests.test_browser import ARTIFACTS, driver, server  # noqa: F401  (pytest fixtures)
from tokviz_app.core.types import Branch, SamplingParams, SessionSnapshot, TokenStep
from tokviz_app.exports.snapshot import to_json
from tokviz_app.present.scales import LEVELS, PALETTES
from tokviz_app.present.text import CONTINUES

pytestmark = [pytest.mark.slow, pytest.mark.browser]

COLOUR_NAMES = re.compile(r"\b(green|blue|purple|orange|red|yellow|vermill?ion)\b", re.IGNORECASE)


def emoji_snapshot() -> SessionSnapshot:
    """ " 🙂!" generated as " ‹F0 9F›" + "‹99 82›" + "!", as GPT-2's byte-level tokens split it."""
    def step(i: int, text: str, prob: float, *, partial: bool = False) -> TokenStep:
        return TokenStep(100 + i, text, prob, math.log(prob), 3, 2.0, prob, (), i, False, partial)

    prompt = [TokenStep(5, "I", None, None, None, None, None, (), 0, True),
              TokenStep(6, " feel", 0.3, math.log(0.3), 2, 3.0, 0.3, (), 1, True)]
    tokens = [step(0, " ‹F0 9F›", 0.2, partial=True), step(1, "‹99 82›", 0.9, partial=True), step(2, "!", 3e-5)]
    return SessionSnapshot(model={"key": "elsewhere-7b", "label": "Elsewhere-7B"}, settings=SamplingParams(),
                           prompt="I feel", prompt_ids=[5, 6], prompt_tokens=prompt, branches=[Branch(0, tokens)])


def rgb(hex_colour: str) -> str:
    return "rgba({}, {}, {}, 1)".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


def test_colour_blind_legend_and_a_split_emoji_in_chromium(server, driver, tmp_path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    d, wait = driver, page_wait(driver, 30, 0.05)
    d.get(server)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-legend-item"))

    # the colour-blind palette: its swatches change, the legend's words do not name colours
    d.find_element(By.XPATH, "//div[contains(@class,'q-toggle')][.//*[normalize-space()='Colour-blind palette']]") \
        .click()
    wait.until(lambda _: "tv-cb" in d.find_element(By.TAG_NAME, "body").get_dom_attribute("class"))
    swatches = d.find_elements(By.CSS_SELECTOR, ".tv-legend .tv-swatch")[:len(LEVELS)]
    assert [s.value_of_css_property("background-color") for s in swatches] == \
        [rgb(PALETTES["colorblind"][name][0]) for name in LEVELS]
    legend = d.find_element(By.CSS_SELECTOR, ".tv-legend").text
    assert "> 70%" in legend and "< 10%" in legend and not COLOUR_NAMES.search(legend), legend

    # a read-only import whose generated text holds 🙂 as two byte tokens
    path = tmp_path / "emoji.json"
    path.write_text(to_json(emoji_snapshot()), encoding="utf-8")
    d.execute_script("document.querySelectorAll('.tv-upload').forEach(e => e.style.display = 'block')")
    d.find_element(By.CSS_SELECTOR, ".tv-upload input[type=file]").send_keys(str(path))
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-token")) == 3)
    chips = d.find_elements(By.CSS_SELECTOR, ".tv-token")
    assert [c.text for c in chips] == ["·🙂", CONTINUES, "!"], "the emoji once, on the chip where it starts"
    assert "".join(c.text for c in chips).count("🙂") == 1
    titles = [c.get_dom_attribute("title") for c in chips]
    assert "probability 20.0%" in titles[0] and "part 1 of 2 of “🙂”" in titles[0]
    assert "probability 90.0%" in titles[1] and "part 2 of 2 of “🙂”" in titles[1]
    assert "probability < 0.01%" in titles[2]
    model = d.find_element(By.CSS_SELECTOR, ".tv-active-model").text
    assert model.startswith("Model: Elsewhere-7B · read-only import"), model
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "browser-colourblind-emoji.png"))
    assert not [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
