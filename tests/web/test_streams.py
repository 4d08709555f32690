"""The page's long calls: a WatchVms the page leaves ends on the server at
once (it holds one of the principal's few stream slots), and the VMs table
stays right across a controller restart, resuming from its revision after
the stopping controller ended its watch with UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.support.virt import node_xml
from tests.web.page import (
    WebStack,
    define,
    shot,
    sign_in,
    stand_in_kernel,
    start_web_stack,
    unique,
    vm_row,
    wait_live,
)

SLOTS = 2
RECORD_STATUS = """() => {
  window.watchStatuses = [];
  const status = document.querySelector("[data-testid=watch-status]");
  new MutationObserver(() => window.watchStatuses.push(status.textContent))
    .observe(status, { childList: true, characterData: true, subtree: true });
}"""


@pytest.fixture(scope="module")
def small_stack(page_built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebStack]:
    """A controller allowing each principal SLOTS watch/wait calls at once."""
    workdir = tmp_path_factory.mktemp("web-streams")
    extra = ("--max-streams-per-client", str(SLOTS))
    stack = start_web_stack(workdir, node_xml(workdir / "node.xml"), extra)
    yield stack
    stack.stop()


async def test_a_watch_the_page_leaves_frees_its_slot(small_stack: WebStack, page: Page) -> None:
    await sign_in(page, small_stack, small_stack.admin_token)
    for _ in range(3 * SLOTS):
        await wait_live(page)  # refused (RESOURCE_EXHAUSTED) if the last watch had lingered
        await page.click("a[data-view=hosts]")
        await page.wait_for_selector("[data-testid=hosts-view]")
        await page.click("a[data-view=vms]")
    await wait_live(page)


async def test_the_table_stays_right_across_a_controller_restart(
    small_stack: WebStack, page: Page, tmp_path: Path
) -> None:
    before = unique("before-restart")
    define(small_stack, before, stand_in_kernel(tmp_path))
    await sign_in(page, small_stack, small_stack.admin_token)
    await wait_live(page)
    await expect(vm_row(page, before)).to_have_count(1)
    await page.evaluate(RECORD_STATUS)
    small_stack.restart_controller()
    after = unique("after-restart")
    define(small_stack, after, stand_in_kernel(tmp_path))
    await expect(vm_row(page, after).get_by_test_id("state")).to_have_text("DOWN")
    await expect(vm_row(page, before)).to_have_count(1)
    await wait_live(page)
    seen = await page.evaluate("() => window.watchStatuses")
    # The stopping controller ended the watch in words, not by a broken stream.
    assert "reconnecting: UNAVAILABLE: the controller is stopping" in seen
    await shot(page, "07-after-restart")
