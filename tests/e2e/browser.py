"""Debian's headless Chromium, driven by Selenium through Debian's chromedriver, for the
e2e tests of the web pages, the console and the dashboard.

Importing this module skips the importing test module where Chromium, chromedriver or
Selenium is missing. The `shots` and `browser` fixtures are in tests/e2e/conftest.py; a
test module may set WINDOW_SIZE (default "1100,900") and SCREENSHOT_PREFIX (default
"idnode-web-") to change them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_WAIT = 15.0  # seconds a page may take to appear on a loaded machine (not a timing check)

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (scripts/test installs them as root)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install -e '.[test]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "PAGE_WAIT",
    "By",
    "WebDriverWait",
    "chromium",
    "ec",
    "open_page",
    "screenshots",
    "sign_in",
]


def screenshots(prefix: str) -> Path:
    """Where screenshots go: $IDNODE_SCREENSHOTS, else a new temporary directory
    (printed, so a person can find them)."""
    where = os.environ.get("IDNODE_SCREENSHOTS") or tempfile.mkdtemp(prefix=prefix)
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {path}")
    return path


@contextmanager
def chromium(user_data_dir: Path, window_size: str) -> Iterator[Any]:
    """A headless Chromium with its own profile, quit on leaving."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={window_size}",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def open_page(
    browser: Any,
    url: str,
    until: tuple[str, str] = (By.TAG_NAME, "main"),
    wait: float = PAGE_WAIT,
) -> None:
    browser.get(url)
    WebDriverWait(browser, wait).until(ec.presence_of_element_located(until))


def sign_in(browser: Any, http: str, handle: str, secret: str, wait: float = PAGE_WAIT) -> None:
    """Signs in by secret through the console's own sign-in page (after signing out of
    whatever session the browser had)."""
    browser.delete_all_cookies()
    browser.get(http + "/console/signin?lang=en")
    WebDriverWait(browser, wait).until(ec.presence_of_element_located((By.ID, "s-handle")))
    browser.find_element(By.ID, "s-handle").clear()
    browser.find_element(By.ID, "s-handle").send_keys(handle)
    browser.find_element(By.ID, "s-secret").send_keys(secret)
    browser.find_element(By.CSS_SELECTOR, "#by-secret button[type=submit]").click()
    WebDriverWait(browser, wait).until(ec.presence_of_element_located((By.ID, "signout")))
