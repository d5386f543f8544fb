"""The README's screenshot of `diamond-play serve`: starts the real server, opens the page in headless Chromium
(Debian's chromium + chromium-driver), picks the shipped Breakout engine, fires and moves the paddle, and saves the
page to docs/serve_page.png.

    python scripts/serve_screenshot.py [--port 8765] [--out docs/serve_page.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--out", type=Path, default=Path("docs/serve_page.png"))
    args = p.parse_args()
    server = subprocess.Popen([sys.executable, "-m", "diamond_play", "serve", "atari", "Breakout", "--port",
                               str(args.port), "--seed", "0", "--mode", "eager-bf16-cl"])
    url = f"http://127.0.0.1:{args.port}/"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,760"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 120)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#engines button"))
            driver.find_element(By.CSS_SELECTOR, "#engines button").click()
            wait.until(lambda d: "fps" in d.find_element(By.ID, "hud").text)
            canvas = driver.find_element(By.ID, "screen")
            canvas.click()
            ActionChains(driver).send_keys(" ").perform()
            ActionChains(driver).key_down("d").perform()
            time.sleep(3)
            ActionChains(driver).key_up("d").perform()
            time.sleep(3)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_bytes(driver.get_screenshot_as_png())
        finally:
            driver.quit()
    finally:
        server.terminate()
        server.wait(10)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
