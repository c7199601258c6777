"""Issue 13 in Chromium: a reload brings the tab's work back; "continue after a pick" is remembered per
browser; the pick continues the text."""

from __future__ import annotations

import pytest

from tests.browser_page import page_wait
from tests.test_browser import driver, server  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_reload_keeps_the_work_and_the_switch(server, driver) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    d, wait = driver, page_wait(driver, 30, 0.05)

    def button(name: str):
        return d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")

    def css(selector: str):
        return d.find_elements(By.CSS_SELECTOR, selector)

    def enabled(name: str) -> bool:
        return button(name).get_dom_attribute("disabled") is None

    def switch_on() -> bool:
        return css(".tv-continue")[0].get_attribute("aria-checked") == "true"

    d.get(server)
    wait.until(lambda _: button("Initialize Model"))
    button("Initialize Model").click()
    wait.until(lambda _: enabled("Generate Next Token"))
    for n in range(1, 5):
        button("Generate Next Token").click()
        wait.until(lambda _, n=n: len(css(".tv-token")) == n and enabled("Generate Next Token"))
    assert switch_on(), "continue after a pick is on by default"
    css(".tv-token")[1].click()
    wait.until(lambda _: len(css(".tv-alt")) == 10)
    pick = next(a for a in css(".tv-alt") if "tv-alt-current" not in a.get_dom_attribute("class"))
    pick.click()
    wait.until(lambda _: len(css(".tv-branch")) == 2 and len(css(".tv-token")) == 4 and enabled("Generate Next Token"))
    texts = [t.text for t in css(".tv-token")]

    d.refresh()
    wait.until(lambda _: len(css(".tv-token")) == 4 and len(css(".tv-branch")) == 2)
    assert [t.text for t in css(".tv-token")] == texts
    wait.until(lambda _: enabled("Generate Next Token"))  # live again: the model is loaded, generate on
    assert any(t.get_dom_attribute("data-position") == "1" for t in css(".tv-token"))
    button("Generate Next Token").click()
    wait.until(lambda _: len(css(".tv-token")) == 5)

    css(".tv-continue")[0].click()
    wait.until(lambda _: not switch_on())
    d.refresh()
    wait.until(lambda _: len(css(".tv-token")) == 5 and css(".tv-continue"))
    wait.until(lambda _: not switch_on())  # remembered in this browser
    d.switch_to.new_window("tab")
    d.get(server)
    wait.until(lambda _: css(".tv-continue"))
    wait.until(lambda _: not switch_on())  # a new tab of the same browser: the switch, not the text
    assert css(".tv-token") == []
