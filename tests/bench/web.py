"""The web page's measures (group `web`), on a controller serving the page
and a hostd on qemu:///system, in Debian's headless Chromium:

- watch_up_s: StartVm → UP seen by a gRPC WatchVms client (the median);
- run_to_up_badge_s: pressing Run → the row's badge says UP, timed in the
  page (a MutationObserver; the median); the two taken in turn on the same
  guest, so each pair sees the same machine; ratio: the second over the first;
- list_1000_render_s: loading the page, signed in, to its table showing
  1,000 VMs (from WatchVms's snapshot);
- bundle_gzip_kib: the page's files (web/dist) gzip-compressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import statistics
import time
from pathlib import Path

from playwright.async_api import Page, async_playwright

from tests.support.real import GuestImage
from tests.web.page import CHROMIUM, DIST, sign_in, start_web_stack, wait_live
from virtplane_client import AsyncClient, BootSource, ChangeKind, Nic, NicKind, VmChange, VmSpec
from virtplane_client import VmState as S

URI = "qemu:///system"
LISTED = 1000
TIMEOUT = 180

_PRESS_RUN_UNTIL_UP = """
(name) => new Promise((resolve) => {
  const row = () => document.querySelector(`tr[data-vm="${name}"]`);
  const observer = new MutationObserver(() => {
    if (row()?.querySelector("[data-testid=state]")?.textContent === "UP") {
      observer.disconnect();
      resolve((performance.now() - t0) / 1000);
    }
  });
  observer.observe(document.querySelector("[data-testid=vms] tbody"),
                   { childList: true, subtree: true, characterData: true });
  const t0 = performance.now();
  row().querySelector("button[data-verb=Run]").click();
})
"""

_RENDERED = "(n) => Number(document.querySelector('[data-testid=vms-view]')?.dataset.rendered) >= n"


def _spec(image: GuestImage, memory_mib: int = 256) -> VmSpec:
    boot = BootSource(kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline)
    return VmSpec(
        vcpus=1, memory_mib=memory_mib, boot=boot, nics=(Nic(name="nic0", kind=NicKind.USER),)
    )


def _state(change: VmChange, vm_id: str) -> S | None:
    return change.vm.status.state if change.vm is not None and change.vm.id == vm_id else None


async def _until(vp: AsyncClient, vm_id: str, wanted: S) -> None:
    """Until the VM is in state wanted (the watch's snapshot says it already is)."""
    changes = vp.vms.watch()
    async with contextlib.aclosing(changes), asyncio.timeout(TIMEOUT):
        async for change in changes:
            if _state(change, vm_id) is wanted:
                return


async def _watch_round(vp: AsyncClient, vm_id: str) -> float:
    """StartVm → UP as a gRPC WatchVms client sees it."""
    changes = vp.vms.watch()
    async with contextlib.aclosing(changes):
        async for change in changes:
            if change.kind is ChangeKind.SNAPSHOT_COMPLETE:
                break
        t0 = time.perf_counter()
        await vp.vms.start(vm_id)
        async with asyncio.timeout(TIMEOUT):
            async for change in changes:
                if _state(change, vm_id) is S.UP:
                    return time.perf_counter() - t0
    raise RuntimeError("the watch ended before the VM was UP")


async def _page_round(page: Page, name: str) -> float:
    """Run pressed → the UP badge, timed in the page."""
    async with asyncio.timeout(TIMEOUT):
        return float(await page.evaluate(_PRESS_RUN_UNTIL_UP, name))


async def _stop(vp: AsyncClient, vm_id: str) -> None:
    await vp.vms.stop(vm_id)
    await _until(vp, vm_id, S.DOWN)


async def _list_render(page: Page, vp: AsyncClient, image: GuestImage) -> float:
    spec = _spec(image, memory_mib=64)
    names = [f"bench-list-{i:04d}" for i in range(LISTED)]
    for start in range(0, LISTED, 20):
        await asyncio.gather(*(vp.vms.create(n, spec) for n in names[start : start + 20]))
    # Loaded anew (signed in: the token is kept in the tab); performance.now()
    # counts from the start of this navigation.
    await page.reload()
    await page.wait_for_function(_RENDERED, arg=LISTED, timeout=TIMEOUT * 1000)
    return float(await page.evaluate("() => performance.now() / 1000"))


def _bundle_gzip_kib() -> float:
    files = ("index.html", "app.js", "app.css")
    return sum(len(gzip.compress((DIST / f).read_bytes(), 9)) for f in files) / 1024


async def _run(image: GuestImage, workdir: Path, rounds: int) -> dict[str, float]:
    stack = start_web_stack(workdir, URI)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"]
            )
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            vp = stack.controller.client()
            try:
                name = "bench-web"
                vm = await vp.vms.create(name, _spec(image))
                await sign_in(page, stack, stack.admin_token)
                await wait_live(page)
                watch, badge = [], []
                for _ in range(rounds):
                    watch.append(await _watch_round(vp, vm.id))
                    await _stop(vp, vm.id)
                    badge.append(await _page_round(page, name))
                    await _stop(vp, vm.id)
                render = await _list_render(page, vp, image)
            finally:
                await vp.close()
                await browser.close()
    finally:
        stack.stop()
    watch_up, badge_up = statistics.median(watch), statistics.median(badge)
    return {
        "rounds": rounds,
        "watch_up_s": watch_up,
        "run_to_up_badge_s": badge_up,
        "ratio": badge_up / watch_up,
        "list_1000_render_s": render,
        "bundle_gzip_kib": _bundle_gzip_kib(),
    }


def run(image: GuestImage, workdir: Path, rounds: int) -> dict[str, float]:
    return asyncio.run(_run(image, workdir, rounds))
