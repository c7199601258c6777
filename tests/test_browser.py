"""Real-browser test: `python -m tokviz_app` with the tiny model, driven by Debian's Chromium.

Artifacts (screenshots) go to $TOKVIZ_ARTIFACT_DIR (default: test-artifacts/ in the repository).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.browser_page import page_wait
from tests.server_process import clean_env, free_port, serve, tokviz_command

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("TOKVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOKVIZ_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TOKVIZ_ARTIFACT_DIR", ROOT / "test-artifacts"))


@pytest.fixture
def server(tiny_model_path, tmp_path):
    """The real entry point, serving the tiny model; yields its URL."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed")
    port = free_port()
    command = tokviz_command("--port", str(port), "--model", str(tiny_model_path), "--device", "cpu")
    with serve(command, clean_env(), tmp_path / "server.log", port, timeout=90) as running:
        url = f"http://localhost:{port}"
        assert f"serving on {url}" in running.output(), "the address is printed"
        yield url


@pytest.fixture
def smollm2_server(tmp_path):
    """The real entry point serving the bundled SmolLM2 (converted once into the default cache)."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed")
    port = free_port()
    command = tokviz_command("--port", str(port), "--model", "smollm2-135m", "--device", "cpu")
    with serve(command, clean_env(), tmp_path / "server.log", port, timeout=120):
        yield f"http://localhost:{port}"


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    d.set_page_load_timeout(30)
    try:
        yield d
    finally:
        d.quit()


def test_initialize_generate_choose_reset_in_chromium(server, driver) -> None:
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d, wait = driver, page_wait(driver, 30, 0.05)

    def button(name: str):
        return d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")

    def tokens():
        return d.find_elements(By.CSS_SELECTOR, ".tv-token")

    def enabled(name: str) -> bool:
        return button(name).get_dom_attribute("disabled") is None

    d.get(server)
    wait.until(lambda _: button("Initialize Model"))
    for name in ("Initialize Model", "Generate Next Token", "Generate to End", "Stop", "Reset"):
        assert button(name).text == name, "buttons read exactly (no upper-casing)"
    assert not enabled("Generate Next Token") and not enabled("Stop")
    assert "local folder" in d.find_element(By.CSS_SELECTOR, ".tv-model-select").text

    # 1. initialize
    button("Initialize Model").click()
    wait.until(lambda _: "Ready: tiny-gpt2" in d.find_element(By.CSS_SELECTOR, ".tv-status").text)
    wait.until(lambda _: enabled("Generate Next Token"))

    # 2. three steps
    for i in range(3):
        wait.until(lambda _: enabled("Generate Next Token"))
        button("Generate Next Token").click()
        wait.until(lambda _, n=i + 1: len(tokens()) == n)
    chips = tokens()
    assert [c.get_dom_attribute("data-position") for c in chips] == ["0", "1", "2"]
    for chip in chips:
        assert 0.0 <= float(chip.get_dom_attribute("data-prob")) <= 1.0
        assert "probability" in chip.get_dom_attribute("title") and "rank" in chip.get_dom_attribute("title")
        assert any(f"tv-p-{c}" in chip.get_dom_attribute("class") for c in ("green", "blue", "purple", "orange", "red"))
    prompt_chips = d.find_elements(By.CSS_SELECTOR, ".tv-prompt-token")
    assert "".join(c.text for c in prompt_chips) == "The·quick·brown·fox"

    # 3. click a token: ten alternatives, the details panel follows
    chips[1].click()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
    alts = d.find_elements(By.CSS_SELECTOR, ".tv-alt")
    ids = [a.get_dom_attribute("data-token-id") for a in alts]
    assert all(i is not None and i.isdigit() for i in ids)
    assert len(d.find_elements(By.CSS_SELECTOR, ".tv-alt-current")) <= 1
    wait.until(lambda _: "generated token 1" in d.find_element(By.CSS_SELECTOR, ".tv-details").text)
    d.save_screenshot(str(ARTIFACTS / "browser-alternatives.png"))

    # 4. choose one that differs from the current token
    current = chips[1].get_dom_attribute("title")
    pick = next(a for a in alts if "tv-alt-current" not in a.get_dom_attribute("class"))
    picked_id = pick.get_dom_attribute("data-token-id")
    pick.click()
    # the text continues after the pick, to the length it had ("continue after a pick" is on by default)
    wait.until(lambda _: len(tokens()) == 3 and tokens()[1].get_dom_attribute("title") != current)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt") == [])  # the menu closed
    detail_id = d.find_element(By.CSS_SELECTOR, ".tv-details").text
    assert f"token id\n{picked_id}" in detail_id or picked_id in detail_id

    # right click opens the same menu (and no browser context menu)
    ActionChains(d).context_click(tokens()[0]).perform()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
    wait.until(lambda _: "Alternatives for token 0" in d.find_element(By.CSS_SELECTOR, ".tv-alt-menu").text)
    d.find_element(By.CSS_SELECTOR, "body").send_keys(Keys.ESCAPE)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt") == [])

    # 5. generate to end (default max 50 new tokens)
    max_tokens = d.find_element(By.CSS_SELECTOR, ".tv-max-tokens input")
    assert int(max_tokens.get_attribute("value")) >= 50
    button("Generate to End").click()
    wait.until(lambda _: "finished" in d.find_element(By.CSS_SELECTOR, ".tv-gen-status").text)
    n = len(tokens())
    assert 3 <= n <= 3 + 50
    assert [t.get_dom_attribute("data-position") for t in tokens()] == [str(i) for i in range(n)]
    tokens()[min(n - 1, 20)].click()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
    time.sleep(0.4)  # let the menu's transition finish for a clean picture
    shot = ARTIFACTS / "browser-generated.png"
    d.save_screenshot(str(shot))
    if os.environ.get("TOKVIZ_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "assets" / "screenshot.png")
    d.find_element(By.CSS_SELECTOR, "body").send_keys(Keys.ESCAPE)  # Escape closes the menu
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt") == [])

    # 6. narrow phone screen: the layout reflows and a tap opens the alternatives
    d.set_window_size(390, 844)
    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, ".tv-side").rect["y"]
               > d.find_element(By.CSS_SELECTOR, ".tv-main").rect["y"] + 100)
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    chip = tokens()[2]
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", chip)
    chip.click()
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
    time.sleep(0.4)
    d.save_screenshot(str(ARTIFACTS / "browser-phone.png"))
    d.find_element(By.CSS_SELECTOR, "body").send_keys(Keys.ESCAPE)
    d.set_window_size(1280, 1000)

    # 7. reset: tokens gone, prompt and model kept
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt") == [])
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", button("Reset"))  # not under the header
    button("Reset").click()
    wait.until(lambda _: tokens() == [])
    assert d.find_element(By.CSS_SELECTOR, "textarea").get_attribute("value") == "The quick brown fox"
    assert enabled("Generate Next Token")
    assert "Ready: tiny-gpt2" in d.find_element(By.CSS_SELECTOR, ".tv-status").text

    # 8. a prompt with markup is shown as text, never run as HTML
    prompt = d.find_element(By.CSS_SELECTOR, "textarea")
    prompt.send_keys(Keys.CONTROL, "a")
    prompt.send_keys(Keys.DELETE)
    prompt.send_keys("<img src=x onerror=window.__xss=1><script>alert('x')</script>")
    button("Generate Next Token").click()
    wait.until(lambda _: len(tokens()) == 1)
    prompt_chips = d.find_elements(By.CSS_SELECTOR, ".tv-prompt-token")
    assert "".join(c.text for c in prompt_chips).replace("·", " ") == "<img src=x onerror=window.__xss=1><script>alert('x')</script>"
    assert d.find_elements(By.CSS_SELECTOR, ".tv-text script, .tv-text img") == []
    assert d.execute_script("return window.__xss === undefined")

    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


def test_keyboard_chart_branches_and_dark_mode_in_chromium(server, driver) -> None:
    """Issue 4 in a real browser: keyboard flow, chart click <-> token selection, branch switch, dark mode."""
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    d = driver
    wait = page_wait(driver, 30, 0.05)

    def button(name: str):
        return d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")

    def tokens():
        return d.find_elements(By.CSS_SELECTOR, ".tv-token")

    def press(*keys: str) -> None:
        ActionChains(d).send_keys(*keys).perform()

    def details() -> str:
        return d.find_element(By.CSS_SELECTOR, ".tv-details").text

    d.get(server)
    wait.until(lambda _: button("Initialize Model"))
    button("Initialize Model").click()
    wait.until(lambda _: button("Generate Next Token").get_dom_attribute("disabled") is None)
    max_tokens = d.find_element(By.CSS_SELECTOR, ".tv-max-tokens input")
    max_tokens.send_keys(Keys.CONTROL, "a")
    max_tokens.send_keys("8")
    d.find_element(By.CSS_SELECTOR, ".tv-logo").click()  # leave the input: shortcuts are off while typing

    press("n")  # next token
    wait.until(lambda _: len(tokens()) == 1)
    press("g")  # generate to end
    wait.until(lambda _: "finished" in d.find_element(By.CSS_SELECTOR, ".tv-gen-status").text)
    n = len(tokens())
    assert n >= 3
    original = [t.text for t in tokens()]

    press(Keys.ARROW_LEFT)  # nothing selected: the last token
    wait.until(lambda _: f"generated token {n - 1}" in details())
    press(Keys.ARROW_LEFT, Keys.ARROW_LEFT)
    wait.until(lambda _: f"generated token {n - 3}" in details())
    assert "tv-selected" in tokens()[n - 3].get_dom_attribute("class")
    press(Keys.ARROW_DOWN)  # opens the alternatives, first one highlighted
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt-focus"))
    alts = d.find_elements(By.CSS_SELECTOR, ".tv-alt")
    pick = next(i for i, a in enumerate(alts) if "tv-alt-current" not in a.get_dom_attribute("class"))
    press(*([Keys.ARROW_DOWN] * pick))
    wait.until(lambda _: "tv-alt-focus" in d.find_elements(By.CSS_SELECTOR, ".tv-alt")[pick].get_dom_attribute("class"))
    picked_id = alts[pick].get_dom_attribute("data-token-id")
    press(Keys.ENTER)  # picks it: a new branch, continued to the length the text had
    wait.until(lambda _: len(tokens()) == n and len(d.find_elements(By.CSS_SELECTOR, ".tv-branch")) == 2
               and "finished" in d.find_element(By.CSS_SELECTOR, ".tv-gen-status").text)
    wait.until(lambda _: picked_id in details())
    wait.until(lambda _: "tv-branch-active" in d.find_elements(By.CSS_SELECTOR, ".tv-branch")[1]
               .get_dom_attribute("class"))
    wait.until(lambda _: "tv-split" in tokens()[n - 3].get_dom_attribute("class"))

    # the chart: clicking point 1 selects token 1; selecting a token moves the chart's marker
    chart = d.find_element(By.CSS_SELECTOR, ".tv-chart")
    assert "tv-chart" in chart.get_dom_attribute("class")
    wait.until(lambda _: d.execute_script(
        "const c = getElement(arguments[0].id.slice(1)).chart; return c.getOption().series[0].data.length",
        chart) == n)
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    time.sleep(0.2)
    x, y = d.execute_script(
        "const c = getElement(arguments[0].id.slice(1)).chart;"
        "return c.convertToPixel({seriesIndex: 0}, [1, c.getOption().series[0].data[1]]);", chart)
    rect = chart.rect
    ActionChains(d).move_to_element_with_offset(chart, int(x - rect["width"] / 2), int(y - rect["height"] / 2)) \
        .click().perform()
    wait.until(lambda _: "generated token 1" in details())
    wait.until(lambda _: "tv-selected" in tokens()[1].get_dom_attribute("class"))
    press(Keys.ESCAPE)  # closes the menu if the click opened one
    tokens()[0].click()
    wait.until(lambda _: d.execute_script(
        "const c = getElement(arguments[0].id.slice(1)).chart;"
        "const m = c.getOption().series[0].markPoint.data; return m.length ? m[0].coord[0] : null", chart) == 0)
    press(Keys.ESCAPE)
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt") == [])
    time.sleep(0.3)
    d.save_screenshot(str(ARTIFACTS / "browser-branches-chart.png"))

    # back to the first branch: nothing was lost
    d.find_elements(By.CSS_SELECTOR, ".tv-branch")[0].click()
    wait.until(lambda _: [t.text for t in tokens()] == original)

    # import opens the browser's file picker (a hidden uploader does the upload); in view below the fixed header
    picker = d.find_element(By.XPATH, "//button[.//span[normalize-space()='Import JSON']]")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", picker)
    picker.click()

    # help overlay, then dark mode remembered across a reload
    press("?")
    wait.until(lambda _: "Keyboard shortcuts" in d.find_element(By.TAG_NAME, "body").text)
    press(Keys.ESCAPE)
    wait.until(lambda _: "Keyboard shortcuts" not in d.find_element(By.TAG_NAME, "body").text)
    d.find_element(By.CSS_SELECTOR, ".tv-dark-toggle").click()
    wait.until(lambda _: "body--dark" in d.find_element(By.TAG_NAME, "body").get_dom_attribute("class"))
    d.refresh()
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-layout"))
    wait.until(lambda _: "body--dark" in d.find_element(By.TAG_NAME, "body").get_dom_attribute("class"))
    time.sleep(0.3)
    d.save_screenshot(str(ARTIFACTS / "browser-dark.png"))
    d.find_element(By.CSS_SELECTOR, ".tv-dark-toggle").click()
    wait.until(lambda _: "body--dark" not in d.find_element(By.TAG_NAME, "body").get_dom_attribute("class"))

    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe


def test_html_export_opens_without_a_server(driver, tiny_model, tmp_path) -> None:
    """The exported HTML file: coloured tokens with hover details, straight from disk."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed")
    from selenium.webdriver.common.by import By

    from tokviz_app.core.types import SamplingParams
    from tokviz_app.exports.html import render_html

    session = tiny_model.start("The quick <b>brown</b> fox", SamplingParams(seed=3))
    try:
        session.generate(12)
        snapshot = session.snapshot()
    finally:
        session.close()
    page = tmp_path / "session.html"
    page.write_text(render_html(snapshot, mode="prob"), encoding="utf-8")
    driver.get(page.as_uri())
    chips = driver.find_elements(By.CSS_SELECTOR, ".k.g")
    assert len(chips) == len(snapshot.tokens)
    for chip, step in zip(chips, snapshot.tokens):
        assert chip.get_dom_attribute("data-prob") == f"{step.prob:.6f}"
        assert f"rank {step.rank}" in chip.get_dom_attribute("title")
        assert chip.value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
    assert driver.find_elements(By.CSS_SELECTOR, "b") == [driver.find_element(By.CSS_SELECTOR, "p b")], \
        "token text is escaped, never markup"
    assert not [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_html_export_lays_tokens_out_as_prose(driver, tmp_path) -> None:
    """Tokens flow inline and wrap like prose: a line break only after a token that holds a newline."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed")
    from tokviz_app.core.types import Branch, SamplingParams, SessionSnapshot, TokenStep
    from tokviz_app.exports.html import render_html

    words = "The quick brown fox jumps over the lazy dog and runs far into the green".split()
    texts = [" " + w for w in words] + ["\n", "Next", " line"]
    tokens = [TokenStep(i, text, 0.5, -0.69, 1, 1.0, 0.5, position=i) for i, text in enumerate(texts)]
    snapshot = SessionSnapshot(model={"key": "m", "label": "M"}, settings=SamplingParams(), prompt="", prompt_ids=[],
                               prompt_tokens=[], branches=[Branch(0, tokens)])
    page = tmp_path / "prose.html"
    page.write_text(render_html(snapshot), encoding="utf-8")
    driver.set_window_size(1200, 900)
    driver.get(page.as_uri())
    tops = driver.execute_script("return [...document.querySelectorAll('.k')].map(k => k.offsetTop)")
    assert len(tops) == len(texts) and len(words) >= 12
    assert len(set(tops[:len(words)])) <= 3, f"one token per line: {tops}"
    newline = len(words)
    assert tops[newline + 1] > tops[newline] and tops[newline + 1] == tops[newline + 2], tops
