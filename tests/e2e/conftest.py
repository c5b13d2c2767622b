"""Fixtures shared by the e2e browser tests (tests/e2e/browser.py has the rest). They
import tests.e2e.browser only when a test asks for them: the modules that do have
imported it already, and skipped where Chromium is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest) -> Path:
    """The screenshot directory; the test module's SCREENSHOT_PREFIX names a temporary one."""
    from tests.e2e.browser import screenshots

    return screenshots(getattr(request.module, "SCREENSHOT_PREFIX", "idnode-web-"))


@pytest.fixture(scope="module")
def browser(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """One headless Chromium for the test module, its window WINDOW_SIZE wide and high."""
    from tests.e2e.browser import chromium

    size = getattr(request.module, "WINDOW_SIZE", "1100,900")
    with chromium(tmp_path_factory.mktemp("chromium"), size) as driver:
        yield driver
