"""Fixtures of the web page's tests: a controller serving the page
(--web-listen, TLS with its certificate, authentication on) and a hostd added
to it, as real processes; a headless Chromium (Debian's, driven by Playwright,
no browser download) that trusts nothing but is told to accept the test
controller's certificate; screenshots into build/web-screenshots/."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support.real import skip_or_fail
from tests.support.virt import node_xml
from tests.web.page import CHROMIUM, DIST, WebStack, start_web_stack

# What the page shows is waited for, never timed: a slow machine waits longer.
expect.set_options(timeout=60_000)


@pytest.fixture(scope="session")
def page_built() -> Path:
    if not (DIST / "app.js").is_file():
        skip_or_fail(f"the page is not built ({DIST}): run `make web`")
    if not CHROMIUM.is_file():
        skip_or_fail(f"no {CHROMIUM}: apt-get install chromium (make setup)")
    return DIST


@pytest.fixture(scope="module")
def web_stack(page_built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    """A controller serving the page and a hostd on libvirt's test driver."""
    workdir = tmp_path_factory.mktemp("web")
    stack = start_web_stack(workdir, node_xml(workdir / "node.xml"))
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
async def browser(page_built: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    # The test controller's CA is its own, made at its first start.
    context = await browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(60_000)
    page = await context.new_page()
    yield page
    await context.close()
