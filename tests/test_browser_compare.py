"""Issue 15 in Chromium: Compare with a second model (the tiny GPT-2 and a sibling with the same tokenizer and
other weights) shows Δ colours from the palette, both numbers in the details and both lines in the chart; the
bundled SmolLM2 after another context makes the README's picture (`TOKVIZ_UPDATE_SCREENSHOT=1` saves it to
assets/compare.png, as tests/test_browser.py does for assets/screenshot.png).

Uses the driver fixture of tests/test_browser.py and the real entry point.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.browser_page import BrowserPage
from tests.server_process import clean_env, free_port, serve, tokviz_command
from tests.test_browser import ARTIFACTS, CHROMEDRIVER, CHROMIUM, ROOT, driver  # noqa: F401  (pytest fixture)
from tests.tiny_model import build_tiny_model
from tokviz_app.present.scales import DIVERGING, PALETTES

pytestmark = [pytest.mark.slow, pytest.mark.browser]
SIBLING = "tiny-sibling"


@pytest.fixture(scope="module")
def sibling_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / SIBLING, seed=1)


def start(tmp_path: Path, *models: str):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed")
    port = free_port()
    args = [arg for model in models for arg in ("--model", model)]
    return serve(tokviz_command("--port", str(port), *args, "--device", "cpu"), clean_env(), tmp_path / "server.log",
                 port, timeout=120), f"http://localhost:{port}"


def rgb(hex_colour: str) -> str:
    return "rgba({}, {}, {}, 1)".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


class Page(BrowserPage):
    def ready(self, url: str) -> None:
        self.d.get(url)
        self.wait.until(lambda _: self.button("Initialize Model"))
        self.button("Initialize Model").click()
        self.wait.until(lambda _: self.button("Generate Next Token").get_dom_attribute("disabled") is None)

    def type_into(self, selector: str, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        # a box revealed by the last click arrives with the server's answer: wait until it can take keys
        box = self.wait.until(lambda _: next((b for b in self.css(selector) if b.is_displayed() and b.is_enabled()),
                                             False))
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(text)

    def choose(self, select_class: str, option: str) -> None:
        self.css(f".{select_class}")[0].click()
        self.wait.until(lambda _: [o for o in self.css(".q-menu .q-item") if option in o.text])
        next(o for o in self.css(".q-menu .q-item") if option in o.text).click()

    def compare(self) -> None:
        chip = self.css(".tv-token")[0]
        self.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", self.button("Compare"))
        self.button("Compare").click()
        self.wait.until(lambda _: "Compared with" in self.css(".tv-compare")[0].text)
        self.wait.until(lambda _: "tv-mode-delta" in self.css(".tv-text")[0].get_dom_attribute("class"))
        assert chip  # the text was on screen before

    def chart_series(self) -> list[dict]:
        return self.d.execute_script(
            "const c = getElement(arguments[0].id.slice(1)).chart;"
            "return c.getOption().series.map((s) => ({name: s.name || '', points: (s.data || []).length}));",
            self.css(".tv-chart")[0])


def test_compare_two_models_in_chromium(driver, tiny_model_path, sibling_path, tmp_path) -> None:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    running, url = start(tmp_path, str(tiny_model_path), str(sibling_path))
    with running:
        p = Page(driver)
        p.ready(url)
        p.type_into("textarea", "A language model predicts the next token. The quick brown fox jumps over the lazy dog.")
        p.button("Score text").click()  # a fixed text: the two models' numbers are the same on every run
        p.wait.until(lambda _: "scored" in p.css(".tv-gen-status")[0].text)
        p.choose("tv-compare-select", SIBLING)
        p.compare()

        # Δ colours: every generated chip carries a Δ class, and its background is that band's palette colour
        chips = p.css(".tv-token")
        classes = [next(c for c in chip.get_dom_attribute("class").split() if c.startswith("tv-x-")) for chip in chips]
        assert "tv-x-none" not in classes and len(set(classes)) > 1, (classes, p.css(".tv-compare")[0].text)
        for chip, cls in zip(chips, classes):
            assert chip.value_of_css_property("background-color") == rgb(PALETTES["default"][cls[5:]][0])
        legend = p.css(".tv-legend")[0].text
        assert "Δ log p (B − A)" in legend and "within ±0.5 bits" in legend
        swatches = p.css(".tv-legend .tv-swatch")[:5]
        assert [s.value_of_css_property("background-color") for s in swatches] == \
            [rgb(PALETTES["default"][name][0]) for name in DIVERGING]
        assert SIBLING in chips[2].get_dom_attribute("title") and "Δ " in chips[2].get_dom_attribute("title")

        # both numbers in the details: the ranks, the two top-5 lists, the KL
        p.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", chips[2])
        chips[2].click()
        p.wait.until(lambda _: "rank A / B" in p.css(".tv-details")[0].text)
        details = p.css(".tv-details")[0].text
        assert "KL(A‖B)" in details and "Top 5 · A" in details and "Top 5 · B" in details
        assert len(p.css(".tv-details .tv-compare-alt")) == 10
        p.d.find_element(p.by.CSS_SELECTOR, "body").send_keys("\ue00c")  # Escape closes the alternatives

        # both lines in the chart (the surprisal metric: A's and B's)
        p.d.find_element(p.by.XPATH, "//div[contains(@class,'q-btn-toggle')]//button[.//span[normalize-space()="
                                     "'surprisal (bits)']]").click()
        p.wait.until(lambda _: [s for s in p.chart_series() if s["name"].startswith("B:") and s["points"] == len(chips)])
        assert any(s["name"] == "A (shown)" and s["points"] == len(chips) for s in p.chart_series())
        time.sleep(0.3)
        p.d.save_screenshot(str(ARTIFACTS / "browser-compare.png"))

        # the colour-blind palette keeps the Δ bands apart (its own diverging colours)
        p.d.find_element(p.by.XPATH, "//div[contains(@class,'q-toggle')][.//*[normalize-space()="
                                     "'Colour-blind palette']]").click()
        p.wait.until(lambda _: "tv-cb" in p.d.find_element(p.by.TAG_NAME, "body").get_dom_attribute("class"))
        assert p.css(".tv-token")[0].value_of_css_property("background-color") == \
            rgb(PALETTES["colorblind"][classes[0][5:]][0])
        severe = [e for e in p.d.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe


def test_compare_after_another_context_with_smollm2_in_chromium(driver, tmp_path) -> None:  # noqa: F811
    """The README's picture: SmolLM2 reads a sentence about Paris after its first word, and after a context
    about Rome: the tokens the context made less (or more) likely stand out."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    running, url = start(tmp_path, "smollm2-135m")
    with running:
        p = Page(driver)
        p.d.set_window_size(1280, 900)
        p.ready(url)
        p.type_into("textarea", "The Eiffel Tower stands in Paris, the capital of France, on the banks of the Seine.")
        p.button("Score text").click()
        p.wait.until(lambda _: "scored" in p.css(".tv-gen-status")[0].text)
        p.d.find_element(p.by.XPATH, "//div[contains(@class,'q-btn-toggle')]//button[.//span[normalize-space()="
                                     "'Another context']]").click()
        p.type_into(".tv-compare textarea", "A travel guide to Rome, the capital of Italy. The Colosseum")
        p.compare()
        chips = p.css(".tv-token")
        paris = next(chip for chip in chips if chip.text.strip("·") == "Paris")
        assert "tv-x-down" in paris.get_dom_attribute("class"), "after Rome, Paris is less likely"
        p.d.execute_script("arguments[0].scrollIntoView({block: 'center'})", paris)
        paris.click()
        p.wait.until(lambda _: "rank A / B" in p.css(".tv-details")[0].text)
        p.d.find_element(p.by.CSS_SELECTOR, "body").send_keys("\ue00c")
        p.d.find_element(p.by.XPATH, "//div[contains(@class,'q-btn-toggle')]//button[.//span[normalize-space()="
                                     "'surprisal (bits)']]").click()
        p.wait.until(lambda _: [s for s in p.chart_series() if s["name"].startswith("B:") and s["points"]])
        p.d.set_window_size(1280, 1500)  # the text, the Compare card and the chart with both lines in one picture
        p.d.execute_script("window.scrollTo(0, document.querySelector('.tv-output').getBoundingClientRect().top"
                           " + window.scrollY - 70)")
        time.sleep(0.5)
        shot = ARTIFACTS / "browser-compare-context.png"
        p.d.save_screenshot(str(shot))
        if os.environ.get("TOKVIZ_UPDATE_SCREENSHOT"):
            shutil.copyfile(shot, ROOT / "assets" / "compare.png")
