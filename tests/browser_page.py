"""What the browser tests do on the page, on top of selenium: find by CSS, buttons by their label, wait."""

from __future__ import annotations


class BrowserPage:
    def __init__(self, d, timeout: float = 120) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.by = d, By
        # a part of the page being rendered again is briefly gone: a wait's `css(...)[0]` then raises IndexError
        # (or its element goes stale), which must mean "not yet", not a failure (seen on a busy 2-core machine)
        self.wait = WebDriverWait(d, timeout, poll_frequency=0.05,
                                  ignored_exceptions=[StaleElementReferenceException, IndexError])

    def css(self, selector: str):
        return self.d.find_elements(self.by.CSS_SELECTOR, selector)

    def button(self, name: str):
        return self.d.find_element(self.by.XPATH, f"//button[.//span[normalize-space()='{name}']]")
