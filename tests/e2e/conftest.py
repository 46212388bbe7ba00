"""What every browser test shares: one headless Chromium per test module (Debian's, driven by Playwright)."""

from __future__ import annotations

import pytest

from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
