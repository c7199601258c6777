"""What the browser tests do on the page, on top of selenium: find by CSS, buttons by their label, wait."""

from __future__ import annotations


def page_wait(d, timeout: float = 30, poll: float = 0.05):
    """A WebDriverWait for which a part of the page being rendered again means "not yet": a wait's `css(...)[0]`
    then raises IndexError, or an element it found a moment before goes stale (seen on a busy 2-core machine: a
    token chip replaced between two reads of the same wait), which must not fail the test."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(d, timeout, poll_frequency=poll,
                         ignored_exceptions=[StaleElementReferenceException, IndexError])


class BrowserPage:
    def __init__(self, d, timeout: float = 120) -> None:
        from selenium.webdriver.common.by import By

        self.d, self.by = d, By
        self.wait = page_wait(d, timeout)

    def css(self, selector: str):
        return self.d.find_elements(self.by.CSS_SELECTOR, selector)

    def button(self, name: str):
        return self.d.find_element(self.by.XPATH, f"//button[.//span[normalize-space()='{name}']]")
