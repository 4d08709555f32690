"""The web page's test stack and what its tests do on the page: sign in,
read the VMs table, press a verb; and a gRPC-Web client (sonora's) for what
the page does not let a role try, so that the server's own refusal is seen."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import urllib3  # type: ignore[import-untyped]  # sonora's client pins urllib3 1.x, untyped
from playwright.async_api import Locator, Page
from sonora.client import WebChannel

import virtplane_client as vp
from tests.support.stack import Daemon, free_port, start_controller, start_host
from virtplane_client.principals import Role

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "web" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "build" / "web-screenshots"


@dataclass
class WebStack:
    controller: Daemon
    hostd: Daemon
    web: str
    """host:port of the page."""
    workdir: Path
    extra: tuple[str, ...]
    """The controller's arguments beyond start_controller's."""

    @property
    def url(self) -> str:
        return f"https://{self.web}/"

    @property
    def admin_token(self) -> str:
        return str(self.controller.credentials().token)

    def client(self) -> vp.Client:
        return vp.Client(self.controller.address, credentials=self.controller.credentials())

    def token_of(self, name: str, role: Role) -> str:
        """The secret of a new token of a new principal with role."""
        with self.client() as client:
            client.principals.create(name, role)
            return client.principals.create_token(name).secret

    def web_channel(self) -> WebChannel:
        """A gRPC-Web channel to the page's port, trusting the controller's CA."""
        channel = WebChannel(self.url)
        channel._session = urllib3.PoolManager(ca_certs=str(self.controller.ca_file))
        return channel

    def restart_controller(self) -> None:
        """Stops the controller and starts it again on the same database,
        state and page port."""
        self.controller.stop()
        self.controller = start_controller(self.workdir, extra=self.extra)

    def stop(self) -> None:
        self.hostd.stop()
        self.controller.stop()


def start_web_stack(workdir: Path, libvirt_uri: str, extra: tuple[str, ...] = ()) -> WebStack:
    """A controller serving the page on a port of its own (extra: more of
    its arguments), and one hostd (host "local") on libvirt_uri."""
    web = f"127.0.0.1:{free_port()}"
    extra = ("--web-listen", web, "--web-root", str(DIST), *extra)
    controller = start_controller(workdir, extra=extra)
    try:
        hostd = start_host(controller, workdir, "local", libvirt_uri)
    except Exception:
        controller.stop()
        raise
    return WebStack(controller, hostd, web, workdir, extra)


def stand_in_kernel(tmp_path: Path) -> str:
    """The test driver boots nothing, but hostd checks the kernel exists."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    return str(kernel)


def define(stack: WebStack, name: str, kernel: str) -> vp.Vm:
    spec = vp.VmSpec(vcpus=1, memory_mib=64, boot=vp.BootSource(kernel))
    with stack.client() as client:
        return client.vms.create(name, spec)


async def shot(page: Page, name: str) -> None:
    """A screenshot of the page as it is, for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, stack: WebStack, token: str) -> None:
    await page.goto(stack.url)
    await page.fill("#token", token)
    await page.click("[data-testid=signin] button[type=submit]")
    await page.wait_for_selector("[data-testid=who]")


def vm_row(page: Page, name: str) -> Locator:
    return page.locator(f"tr[data-vm='{name}']")


async def wait_live(page: Page) -> None:
    await page.wait_for_selector("[data-testid=watch-status]:text-is('live')")


def unique(prefix: str) -> str:
    """A VM name of this run (VM names are domain names on shared libvirtds)."""
    return f"web-{prefix}-{os.getpid()}"
