"""Half an emoji typed or pasted in real Chromium: the page says so and generates from the text on screen."""

from __future__ import annotations

import pytest

from tests.browser_page import page_wait
from tests.test_browser import driver, server  # noqa: F401 - the real server and Chromium fixtures

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_half_an_emoji_in_the_prompt_gets_a_message_and_no_stale_generation(server, driver) -> None:  # noqa: F811
    """Before: the browser's JSON held a lone "\\ud83d" escape, the server's decoder refused the whole
    message, and Generate ran on the previous prompt without a word."""
    from selenium.webdriver.common.by import By

    d, wait = driver, page_wait(driver, 60, 0.1)

    def button(name: str):
        return d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")

    def body() -> str:
        return d.find_element(By.TAG_NAME, "body").text

    d.get(server)
    wait.until(lambda _: button("Initialize Model"))
    button("Initialize Model").click()
    wait.until(lambda _: "Ready:" in d.find_element(By.CSS_SELECTOR, ".tv-status").text)
    assert "quick brown fox" in d.find_element(By.TAG_NAME, "textarea").get_property("value")
    d.execute_script("const t = document.querySelector('textarea'); t.value = 'Hello \\ud83d world';"
                     "t.dispatchEvent(new Event('input', {bubbles: true}));")
    wait.until(lambda _: "half a character" in body())
    wait.until(lambda _: button("Generate Next Token").get_dom_attribute("disabled") is None)
    button("Generate Next Token").click()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-token")) == 1)
    shown = "".join(chip.text for chip in d.find_elements(By.CSS_SELECTOR, ".tv-prompt-token"))
    assert "Hello" in shown and "world" in shown and "quick" not in shown, shown
    assert "Connection lost" not in body()
