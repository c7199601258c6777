"""The layer lens in real Chromium (issue 16): the details' Layers section with its sparkline, and the "Decided
at layer" heatmap with its legend, on the tiny GPT-2 (`tests/test_browser.py`'s server) and on the bundled
SmolLM2 (a Llama: 30 blocks), whose page is the README's screenshot (`TOKVIZ_UPDATE_SCREENSHOT=1` copies it
to assets/layer-lens.png).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.browser_page import BrowserPage
from tests.test_browser import ARTIFACTS, ROOT, driver, server, smollm2_server  # noqa: F401 (fixtures)
from tokviz_app.present.scales import PALETTES

pytestmark = [pytest.mark.slow, pytest.mark.browser]


class Page(BrowserPage):
    """The few things these tests do on the page."""

    def details(self) -> str:
        return self.css(".tv-details")[0].text

    def start(self, url: str, prompt: str | None = None, max_tokens: int | None = None, greedy: bool = False) -> None:
        from selenium.webdriver.common.keys import Keys

        self.d.get(url)
        self.wait.until(lambda _: self.button("Initialize Model"))
        self.button("Initialize Model").click()
        self.wait.until(lambda _: "Ready:" in self.css(".tv-status")[0].text)
        for selector, value in ((".tv-max-tokens input", max_tokens), ("textarea", prompt)):
            if value is not None:
                box = self.css(selector)[0]
                box.send_keys(Keys.CONTROL, "a")
                box.send_keys(Keys.DELETE)
                box.send_keys(str(value))
        if greedy:
            self.css(".tv-sampling .q-expansion-item__container > .q-item")[0].click()
            self.wait.until(lambda _: self.css(".tv-sampling .q-toggle")[0].is_displayed())
            self.css(".tv-sampling .q-toggle")[0].click()
            self.wait.until(lambda _: "q-toggle__inner--truthy" in self.css(".tv-sampling .q-toggle__inner")[0]
                            .get_dom_attribute("class"))
        self.button("Generate to End").click()
        self.wait.until(lambda _: "finished" in self.css(".tv-gen-status")[0].text)

    def colour_by(self, label: str) -> None:
        self.css(".tv-mode-select")[0].click()
        self.wait.until(lambda _: [i for i in self.css(".q-menu .q-item") if i.text == label])
        next(i for i in self.css(".q-menu .q-item") if i.text == label).click()
        self.wait.until(lambda _: not self.css(".q-menu .q-item"))

    def close_menu(self) -> None:
        from selenium.webdriver.common.keys import Keys

        self.d.find_element(self.by.CSS_SELECTOR, "body").send_keys(Keys.ESCAPE)
        self.wait.until(lambda _: not self.css(".tv-alt"))

    def decided_classes(self) -> list[str]:
        return [next((c for c in (chip.get_dom_attribute("class") or "").split() if c.startswith("tv-d-")), "")
                for chip in self.css(".tv-token")]

    def background(self, element) -> str:
        return self.d.execute_script("return getComputedStyle(arguments[0]).backgroundColor", element)


def rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def check_layer_view(page: Page, layers: int) -> None:
    """The Layers section of the selected token: a row per layer, the sparkline drawn with a point per layer."""
    page.wait.until(lambda _: page.css(".tv-layer-grid"))
    names = [e.text for e in page.css(".tv-layer-name")]
    assert names == ["embeddings", *[f"block {k}" for k in range(1, layers)], f"block {layers} · output"]
    assert len(page.css(".tv-layer-top")) == layers + 1
    assert all(e.text.startswith("#") and "%" in e.text for e in page.css(".tv-layer-prob"))
    spark = page.css("svg.tv-spark")[0]
    points = page.d.execute_script("return arguments[0].querySelector('polyline').points.numberOfItems", spark)
    assert points == layers + 1
    assert spark.size["width"] > 100 and spark.size["height"] > 20, "the sparkline is drawn, not collapsed"
    assert "Decided" in page.details() or "Never the top-1" in page.details(), page.details()


def check_heatmap(page: Page) -> None:
    """Every generated chip gets its decided-at-layer level, coloured as the legend says."""
    page.colour_by("Decided at layer")
    page.wait.until(lambda _: "tv-mode-decided" in page.css(".tv-text")[0].get_dom_attribute("class"))
    page.wait.until(lambda _: all(c and c != "tv-d-none" for c in page.decided_classes()))
    legend = page.css(".tv-legend")[0].text
    assert "Decided at layer:" in legend and "never: not the model's top-1" in legend
    chip = page.css(".tv-token")[0]
    level = page.decided_classes()[0].removeprefix("tv-d-")
    assert page.background(chip) == rgb(PALETTES["default"][level][0])


def test_layer_view_and_heatmap_in_chromium(server, driver) -> None:
    page = Page(driver)
    page.start(server, max_tokens=12)
    page.css(".tv-token")[3].click()
    check_layer_view(page, 2)
    page.close_menu()
    check_heatmap(page)
    page.css(".tv-token")[5].click()  # clicking a chip of the heatmap still opens its layers
    page.wait.until(lambda _: "generated token 5" in page.details())
    check_layer_view(page, 2)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "browser-layer-lens-tiny.png"))


def test_smollm2_layer_lens_screenshot(smollm2_server, driver) -> None:
    page = Page(driver)
    page.start(smollm2_server, prompt="The capital of France is Paris. The capital of Germany is", max_tokens=30,
               greedy=True)
    check_heatmap(page)
    assert len(set(page.decided_classes())) >= 3, "a real model decides tokens at different depths"
    chips = page.css(".tv-token")
    pick = next((c for c in chips if "Berlin" in c.text), chips[0])
    pick.click()
    check_layer_view(page, 30)
    page.close_menu()
    # the screenshot starts at the coloured text's card: the heatmap on the left, the layer view on the right
    driver.set_window_size(1440, 1000)
    driver.execute_script("window.scrollTo(0, document.querySelector('.tv-output').getBoundingClientRect().top"
                          " + window.scrollY - document.querySelector('.q-header').offsetHeight - 8)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "layer-lens.png"
    driver.save_screenshot(str(shot))
    if os.environ.get("TOKVIZ_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "assets" / "layer-lens.png")
