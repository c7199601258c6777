"""Issue 13, item 4, under real mobile emulation in Chromium (390×844 CSS px, device scale 3, touch): a tapped
token shows its details in a bottom sheet in view, and its alternatives menu, percentages included, stays on
the screen wherever the token sits in its line. Also: a 10,000-character prompt leaves the buttons in view."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser_page import page_wait
from tests.test_browser import ARTIFACTS, driver, server  # noqa: F401 - the real server and Chromium fixtures

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WIDTH, HEIGHT = 390, 844
RECT = "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom];"


def emulate_phone(d) -> None:
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 3, "mobile": True})
    d.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})


def tap(d, element) -> None:
    """A finger's tap (touch events, the click the browser makes of them), at the element's centre."""
    left, top, right, bottom = d.execute_script(RECT, element)
    point = {"x": (left + right) / 2, "y": (top + bottom) / 2}
    d.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [point]})
    d.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def ready_with_tokens(d, wait, url: str, n: int) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def button(name: str):
        return d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")

    d.get(url)
    wait.until(lambda _: button("Initialize Model"))
    assert d.execute_script("return [innerWidth, innerHeight]") == [WIDTH, HEIGHT]
    tap(d, button("Initialize Model"))
    wait.until(lambda _: button("Generate to End").get_dom_attribute("disabled") is None)
    box = d.find_element(By.CSS_SELECTOR, ".tv-max-tokens input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(n))
    tap(d, button("Generate to End"))
    wait.until(lambda _: "finished" in d.find_element(By.CSS_SELECTOR, ".tv-gen-status").text)
    return d.find_elements(By.CSS_SELECTOR, ".tv-token")


def test_a_tapped_token_shows_its_details_and_alternatives_in_view(server, driver) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    d = driver
    wait = page_wait(d, 30, 0.05)
    emulate_phone(d)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    chips = ready_with_tokens(d, wait, server, 60)
    details = d.find_element(By.CSS_SELECTOR, ".tv-details")
    assert d.execute_script("return getComputedStyle(arguments[0]).position", details) != "fixed"

    def rect(element) -> list[float]:
        return d.execute_script(RECT, element)

    rects = [rect(chip) for chip in chips]
    middle = next(i for i, (left, _, right, _) in enumerate(rects) if left > 0.35 * WIDTH and right < 0.65 * WIDTH)
    right = max(range(len(chips)), key=lambda i: rects[i][2])  # the chip nearest the right edge
    for index, name in ((middle, "middle"), (right, "right")):
        chip = chips[index]
        # the line low on the screen, where the sheet will open: it must not hide the tapped token
        d.execute_script("window.scrollBy(0, arguments[0].getBoundingClientRect().top - 0.8 * innerHeight)", chip)
        time.sleep(0.2)
        tap(d, chip)
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
        wait.until(lambda _, i=index: f"generated token {i}" in details.text)
        time.sleep(0.4)  # the menu's transition
        menu = d.find_element(By.CSS_SELECTOR, ".tv-alt-menu")
        left, _, right_edge, _ = rect(menu)
        assert 0 <= left and right_edge <= WIDTH, f"{name}: the menu {left}…{right_edge} leaves the screen"
        for label in d.find_elements(By.CSS_SELECTOR, ".tv-alt-prob"):
            l, t, r, b = rect(label)
            assert 0 <= l and r <= WIDTH and re.fullmatch(r"[\d.e+-]+%", label.text), (name, label.text, l, r)
            assert d.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", label)
        d.save_screenshot(str(ARTIFACTS / f"phone-menu-{name}.png"))
        # the details: a bottom sheet in view, showing the token, with the tapped chip above it
        sheet_top, sheet_bottom = rect(details)[1], rect(details)[3]
        assert d.execute_script("return getComputedStyle(arguments[0]).position", details) == "fixed"
        assert sheet_top < HEIGHT and sheet_bottom <= HEIGHT + 1 and sheet_top >= 0.5 * HEIGHT
        assert rect(chip)[3] <= sheet_top, "the sheet hides the tapped token"
        assert rect(d.find_element(By.CSS_SELECTOR, "[data-position].tv-selected"))[3] <= sheet_top
        text = d.find_element(By.CSS_SELECTOR, ".tv-details .tv-detail-chip").text
        # a token of partial UTF-8 bytes: the chip joins it with its neighbours into the character, the details
        # show its own bytes (‹E2 9C›)
        assert (text == chip.text or "‹" in text) and text in details.text, (text, chip.text)
        tap(d, d.find_element(By.CSS_SELECTOR, ".tv-logo"))  # a tap outside closes the menu
        wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt") == [])
        time.sleep(0.3)
        d.save_screenshot(str(ARTIFACTS / f"phone-details-sheet-{name}.png"))
        tap(d, d.find_element(By.CSS_SELECTOR, ".tv-sheet-close"))  # the sheet goes; the details stay below
        wait.until(lambda _: d.execute_script("return getComputedStyle(arguments[0]).position", details) != "fixed")
        assert f"generated token {index}" in details.text
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


def test_a_long_paste_leaves_the_buttons_on_the_phone_screen(server, driver) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    d, wait = driver, page_wait(driver, 30, 0.05)
    emulate_phone(d)
    d.get(server)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-buttons .q-btn"))
    check_long_paste(d, wait, HEIGHT)


def check_long_paste(d, wait, height: int) -> None:
    """10,000 characters in the prompt box: it stops growing at a third of the screen and scrolls, and the
    generate buttons stay in view."""
    from selenium.webdriver.common.by import By

    box = d.find_element(By.CSS_SELECTOR, ".tv-prompt-box textarea")
    d.execute_script("window.scrollTo(0, 0); arguments[0].focus();"
                     "arguments[0].value = 'All work and no play makes Jack a dull boy. '.repeat(228).slice(0, 10000);"
                     "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", box)
    wait.until(lambda _: len(box.get_property("value")) == 10_000)
    time.sleep(0.5)  # autogrow
    assert d.execute_script("return arguments[0].scrollHeight > arguments[0].clientHeight + 100", box)
    assert box.rect["height"] <= 0.3 * height + 2
    for name in ("Generate Next Token", "Generate to End"):
        button = d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")
        _, top, _, bottom = d.execute_script(RECT, button)
        assert 0 <= top and bottom <= height, f"{name} at {top}…{bottom}, off a screen {height} px high"
