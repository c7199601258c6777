"""Take the README screenshot (assets/screenshot.png) on the bundled SmolLM2 model in headless Chromium.

    uv run python scripts/screenshot.py [--out assets/screenshot.png]

Starts `python -m tokviz_app` on a free port, generates, picks an alternative (so the branch panel has two
branches), selects a token (chart marker and details), and saves a 1400x1070 screenshot.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "assets" / "screenshot.png"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompt", default="The best thing about learning a new language is")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "tokviz_app", "--port", str(port), "--model", args.model,
                               "--device", "cpu"], cwd=ROOT)
    url = f"http://localhost:{port}"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1215",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    d = None
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        wait = WebDriverWait(d, 120, poll_frequency=0.1)

        def button(name: str):
            return d.find_element(By.XPATH, f"//button[.//span[normalize-space()='{name}']]")

        d.get(url)
        wait.until(lambda _: button("Initialize Model")).click()
        wait.until(lambda _: button("Generate Next Token").get_dom_attribute("disabled") is None)
        prompt = d.find_element(By.CSS_SELECTOR, "textarea")
        prompt.send_keys(Keys.CONTROL, "a")
        prompt.send_keys(args.prompt)
        maxt = d.find_element(By.CSS_SELECTOR, ".tv-max-tokens input")
        maxt.send_keys(Keys.CONTROL, "a")
        maxt.send_keys("40")
        button("Generate to End").click()
        wait.until(lambda _: "finished" in d.find_element(By.CSS_SELECTOR, ".tv-gen-status").text)
        d.find_elements(By.CSS_SELECTOR, ".tv-token")[12].click()
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
        alt = next(a for a in d.find_elements(By.CSS_SELECTOR, ".tv-alt")
                   if "tv-alt-current" not in a.get_dom_attribute("class"))
        alt.click()
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-branch")) == 2)
        button("Generate to End").click()
        wait.until(lambda _: "finished" in d.find_element(By.CSS_SELECTOR, ".tv-gen-status").text)
        wait.until(lambda _: "40 tokens" in d.find_elements(By.CSS_SELECTOR, ".tv-branch")[1].text
                   or "finished" in d.find_element(By.CSS_SELECTOR, ".tv-gen-status").text)
        d.find_elements(By.CSS_SELECTOR, ".tv-token")[20].click()
        wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, ".tv-alt")) == 10)
        d.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)  # close the menu: show text and chart
        wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, ".tv-alt") == [])
        time.sleep(0.6)
        d.save_screenshot(args.out)
        print("saved", args.out)
    finally:
        if d is not None:
            d.quit()
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
