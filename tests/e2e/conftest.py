"""Headless Debian chromium driven by Playwright, against pytest-django's live server.

No browser download: Playwright launches /usr/bin/chromium (scripts/test.sh installs it).
"""

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection, connections
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# A page that loads images makes many requests at once; SQLite's shared in-memory test
# database refuses concurrent access (the suite runs on PostgreSQL: scripts/test.sh).
NEEDS_POSTGRESQL = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrent requests need PostgreSQL"
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """A chromium per test: Playwright's event loop then runs only while the test does.

    While it runs, the ORM calls a test makes between browser steps are plain blocking
    calls, which Django would refuse inside a running event loop without this flag.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium not found (scripts/test.sh installs Debian's chromium)")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()
        # Inside a running event loop Django keeps connections per context, not per
        # thread: close the ones this test opened before the loop goes away.
        connections.close_all()


@pytest.fixture
def page_factory(browser: Browser, live_server) -> Iterator:
    """New pages at a given viewport size; console errors are collected for assertions."""
    contexts = []

    def make(width: int, height: int, touch: bool = False) -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": height}, has_touch=touch, is_mobile=touch
        )
        contexts.append(context)
        page = context.new_page()
        page.console_errors = []  # type: ignore[attr-defined]
        page.on(
            "console",
            lambda msg: msg.type == "error" and page.console_errors.append(msg.text),  # type: ignore[attr-defined]
        )
        page.set_default_timeout(10_000)
        return page

    yield make
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> None:
    """A picture of the page for people reviewing the run, never the reason a test fails:
    a WebGL page under SwiftShader on a busy 2-core machine can take over 10 s to draw."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, timeout=30_000)
    except PlaywrightTimeoutError:
        warnings.warn(f"screenshot {name} timed out: no artifact", stacklevel=2)
