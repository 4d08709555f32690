"""The whole flow with a real guest (run only under /work/guest.lock): a
controller serving the page and a hostd on qemu:///system; in the browser,
the VM is created through the form, Run shows POWERING_UP and then UP with
the guest's IP and OS as its agent reports them (in its details too), Pause and Resume go through
PAUSED back to UP, and Stop brings it DOWN."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.support.real import GuestImage
from tests.web.page import WebStack, shot, sign_in, start_web_stack, unique, vm_row, wait_live

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def guest_stack(
    page_built: Path, system_libvirt: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebStack]:
    workdir = tmp_path_factory.mktemp("web-guest")
    workdir.chmod(0o755)  # QEMU, running as another user, reaches the hostd's sockets
    stack = start_web_stack(workdir, system_libvirt)
    yield stack
    stack.stop()


async def create_through_the_form(page: Page, name: str, image: GuestImage) -> None:
    await page.click("a[data-view=new]")
    await page.fill("[data-field=name]", name)
    await page.fill("[data-field='spec.memory_mib']", "256")
    await page.fill("[data-field='spec.boot.kernel_path']", image.kernel)
    await page.fill("[data-field='spec.boot.initrd_path']", image.initrd)
    await page.fill("[data-field='spec.boot.cmdline']", image.cmdline)
    await shot(page, "10-guest-new-vm")
    await page.click("[data-testid=new-vm] button[type=submit]")


async def test_a_guest_created_run_and_stopped_from_the_page(
    guest_stack: WebStack, page: Page, guest_image: GuestImage
) -> None:
    name = unique("guest")
    await sign_in(page, guest_stack, guest_stack.admin_token)
    await create_through_the_form(page, name, guest_image)
    await wait_live(page)
    row = vm_row(page, name)
    await expect(row.get_by_test_id("state")).to_have_text("DOWN")
    await row.locator("button[data-verb=Run]").click()
    await expect(row.get_by_test_id("state")).to_have_text("POWERING_UP")
    await expect(row.get_by_test_id("state")).to_have_text("UP")
    await expect(row.get_by_test_id("ip")).to_have_text(re.compile(r"^\d+\.\d+\.\d+\.\d+$"))
    await expect(row.get_by_test_id("uptime")).not_to_be_empty()
    operation = page.get_by_test_id("operation")
    await expect(operation.get_by_test_id("operation-state")).to_have_text("SUCCEEDED")
    await expect(operation.locator("li[data-phase='up']")).to_have_count(1)
    await shot(page, "11-guest-up")
    await row.locator("a[data-action=details]").click()
    guest = page.get_by_test_id("details").get_by_test_id("guest")
    await expect(guest).to_contain_text("RESPONDING")
    await expect(guest).to_contain_text(await row.get_by_test_id("ip").inner_text())
    await shot(page, "12-guest-details")
    await row.locator("button[data-verb=Pause]").click()
    await expect(row.get_by_test_id("state")).to_have_text("PAUSED")
    await expect(operation).to_contain_text(f"PAUSE_VM {name}")
    await row.locator("button[data-verb=Resume]").click()
    await expect(row.get_by_test_id("state")).to_have_text("UP")
    await expect(operation).to_contain_text(f"RESUME_VM {name}")
    await expect(operation.get_by_test_id("operation-state")).to_have_text("SUCCEEDED")
    await row.locator("button[data-verb=Stop]").click()
    await expect(row.get_by_test_id("state")).to_have_text("DOWN")
    await expect(operation).to_contain_text(f"STOP_VM {name}")
    await shot(page, "13-guest-stopped")
