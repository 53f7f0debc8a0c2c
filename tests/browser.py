"""A real headless browser for page tests: Chromium driven by Selenium through the distribution's
chromedriver (never a downloaded one), with the page's console errors and network requests collected.

In a test module:

    from browser import browser_fixture
    browser = browser_fixture()          # one Chromium per module; skips with the reason if none exists

    def test_page(browser, tmp_path):
        browser.open(page_path, viewport=(390, 844))
        ...
        assert browser.console_errors() == [] and browser.network_requests() == []

As a script it takes the README screenshots:
    python tests/browser.py PAGE.html OUT.png [--size 1200x800] [--click CSS] [--hover CSS] [--keys KEYS]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")
BROWSER_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
# URLs a page may "request" without touching the network: itself, inline data, and blank frames.
_LOCAL_SCHEMES = ("data:", "blob:", "about:")


def find_browser() -> tuple[str | None, str | None, str]:
    """(browser binary, chromedriver, reason) — the reason says what is missing when either is None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install selenium)"
    binary = next((p for p in BROWSER_CANDIDATES if os.access(p, os.X_OK)), None) or shutil.which("chromium")
    driver = next((p for p in DRIVER_CANDIDATES if os.access(p, os.X_OK)), None) or shutil.which("chromedriver")
    if binary is None:
        return None, driver, "no Chromium found (apt-get install chromium; .ci/run does this)"
    if driver is None:
        return binary, None, "no chromedriver found (apt-get install chromium-driver; .ci/run does this)"
    return binary, driver, ""


class Browser:
    """One headless Chromium; `open` loads a local page and waits for it, the rest inspects it."""

    def __init__(self, binary: str, driver_path: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="cnnlab-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(driver_path), options=options)
        self.url: str | None = None
        self._console: list[dict] = []
        self._requests: list[str] = []

    # --- loading -------------------------------------------------------------------------------------------
    def open(self, path: str | os.PathLike, viewport: tuple[int, int] = (1280, 900), ready: str | None =
             "document.body.dataset.ready === '1'", timeout: float = 10.0) -> None:
        """Load a local file at the given viewport (CSS pixels) and wait until `ready` (JS) is true."""
        self._drain()
        self._console, self._requests = [], []
        self.set_viewport(*viewport)
        self.url = Path(path).resolve().as_uri()
        self.driver.get(self.url)
        if ready:
            self.wait_for(ready, timeout)

    def set_viewport(self, width: int, height: int) -> None:
        """Emulate a screen of width x height CSS pixels (a phone: 390x844)."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

    def wait_for(self, js_condition: str, timeout: float = 10.0):
        """Poll a JavaScript expression until it is truthy; returns its value (AssertionError on timeout)."""
        end = time.monotonic() + timeout
        while True:
            value = self.driver.execute_script(f"return ({js_condition});")
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {js_condition}; console: {self.console_errors()}")
            time.sleep(0.05)

    # --- inspecting ----------------------------------------------------------------------------------------
    def _drain(self) -> None:
        for entry in self.driver.get_log("browser"):
            self._console.append(entry)
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                params = msg["params"]
                # The browser's own start page (chrome://new-tab-page) loads in the background; a web page
                # cannot request chrome:// URLs, so those are the browser's, not the page's.
                if not params.get("documentURL", "").startswith("chrome://"):
                    self._requests.append(params["request"]["url"])

    def console_messages(self) -> list[dict]:
        """Every console entry since `open` (level, message, source)."""
        self._drain()
        return list(self._console)

    def console_errors(self) -> list[str]:
        """Console errors, failed loads and uncaught exceptions since `open` (level SEVERE)."""
        return [e["message"] for e in self.console_messages() if e.get("level") == "SEVERE"]

    def network_requests(self) -> list[str]:
        """URLs the page requested since `open`, other than itself and inline data/blob/about URLs."""
        self._drain()
        return [u for u in self._requests if u != self.url and not u.startswith(_LOCAL_SCHEMES)]

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def keys(self, *keys) -> None:
        """Send key presses to whatever has focus (the page body unless a control was focused)."""
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(*keys).perform()

    def screenshot(self, out: str | os.PathLike, full_height: bool = False) -> Path:
        """A PNG of the viewport (or the whole page height), quantised to keep it small."""
        out = Path(out)
        if full_height:
            h = self.js("return document.documentElement.scrollHeight")
            w = self.js("return window.innerWidth")
            self.set_viewport(w, h)
        png = self.driver.get_screenshot_as_png()
        try:
            import io

            from PIL import Image

            img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
            img.save(out, optimize=True)
        except ImportError:
            out.write_bytes(png)
        return out

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def browser_fixture():
    """A module-scoped pytest fixture yielding a Browser, or skipping the module's tests with the reason
    when Selenium, Chromium or chromedriver is missing."""
    import pytest

    @pytest.fixture(scope="module")
    def browser():
        binary, driver, reason = find_browser()
        if reason:
            pytest.skip(f"no headless browser: {reason}")
        b = Browser(binary, driver)
        try:
            yield b
        finally:
            b.quit()

    return browser


def _main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Screenshot a local page in headless Chromium (README images).")
    p.add_argument("page")
    p.add_argument("out")
    p.add_argument("--size", default="1200x800", help="viewport WxH in CSS pixels")
    p.add_argument("--click", action="append", default=[], help="CSS selector to click first (repeatable)")
    p.add_argument("--hover", help="CSS selector to move the pointer over last")
    p.add_argument("--script", action="append", default=[], help="JavaScript to run before the screenshot")
    args = p.parse_args(argv)
    binary, driver, reason = find_browser()
    if reason:
        print(f"cannot take a screenshot: {reason}", file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.size.lower().split("x"))
    b = Browser(binary, driver)
    try:
        b.open(args.page, viewport=(w, h))
        for css in args.click:
            b.find(css).click()
        for script in args.script:
            b.js(script)
        if args.hover:
            from selenium.webdriver.common.action_chains import ActionChains

            ActionChains(b.driver).move_to_element(b.find(args.hover)).perform()
        time.sleep(0.2)
        out = b.screenshot(args.out)
        errors = b.console_errors()
        print(f"{out}: {out.stat().st_size / 1024:.0f} KiB" + (f"; console errors: {errors}" if errors else ""))
        return 1 if errors else 0
    finally:
        b.quit()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
