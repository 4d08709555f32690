"""A real Debian 12 guest (`make debian-image`: systemd, udev, the agent
installed from its .deb) through the whole stack, in one boot:

- udev starts virtplane-guestd.service on the host's port, and the VM goes UP
  with the distribution's own name and version, its installed packages, its
  root file system on the virtio disk, its DHCP address, time zone, the
  ordinary user logged in on the serial console, and its uptime;
- the image's test unit (virtplane.test.kill_agent on the kernel command line)
  kills the agent with SIGKILL: the host marks it NOT_RESPONDING with its facts
  kept, then RESPONDING again when systemd has restarted it;
- RebootVm reboots it through the agent: UP again with the new boot's report,
  never DOWN;
- ShutdownVm powers it off through the agent (systemd's poweroff), DOWN with
  GUEST_SHUTDOWN.

Prints the figures guestd/README.md quotes: start → first full report, the
size of a full report, the number of applications.
"""

from __future__ import annotations

import contextlib
import os
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from google.protobuf import json_format
from virtplane.v1 import guest_channel_pb2 as gc

import virtplane_client as vp
from hostd.layout import StateLayout
from tests.support.debian_image import (
    DebianImage,
    copy_image,
    debian_spec,
    require_debian_image,
)
from tests.support.guests import Api
from tests.support.real import REPO
from tests.support.stack import Stack
from tests.support.waiting import until

pytestmark = pytest.mark.guest
BOOT_WAIT = 300.0
"""systemd reaches the login prompt ~32 s after create under TCG; a loaded
machine may take several times that."""
KILL_AGENT = " virtplane.test.kill_agent"
"""The image's virtplane-test-kill-agent.service: SIGKILL to the agent 20 s
after it started, restarted by systemd 30 s later; once per disk (not again
after the reboot)."""
Agent = vp.AgentState


@pytest.fixture(scope="module")
def debian_image(system_libvirt: str, images: Path) -> DebianImage:
    """A copy of the image for this module's VM (its writes stay in the copy)."""
    return copy_image(require_debian_image(), images / f"debian-{os.getpid()}")


@pytest.fixture
async def debian_vm(api: Api, debian_image: DebianImage) -> AsyncIterator[str]:
    spec = debian_spec(debian_image, extra_cmdline=KILL_AGENT)
    created = await api.client.vms.create(f"debian-{os.getpid()}", spec)
    yield created.id
    with contextlib.suppress(vp.ClientError):
        await api.client.vms.stop(created.id)
    with contextlib.suppress(vp.ClientError):
        await api.client.vms.delete(created.id)


def _agent(vm: vp.Vm) -> Agent:
    return vm.status.guest.agent_state if vm.status.guest else Agent.UNSPECIFIED


def _reported(vm: vp.Vm) -> bool:
    g = vm.status.guest
    return bool(g and g.os_name and g.application_count and g.filesystems and g.uptime_seconds)


def _settled(vm: vp.Vm) -> bool:
    """Also the facts that come once the guest is up: DHCP's address, the login."""
    g = vm.status.guest
    return bool(_reported(vm) and g and g.ipv4_addresses and g.users)


def _observed(vm: vp.Vm) -> float:
    g = vm.status.guest
    return g.observed_time.timestamp() if g and g.observed_time else 0.0


def _console(stack: Stack, vm_id: str) -> str:
    path = StateLayout(stack.workdir / "hostd").console_log(vm_id)
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")
    return f"(no console log at {path})"


def _check_facts(guest: vp.GuestInfo, image: DebianImage) -> None:
    # the distribution's own os-release, kernel and packages
    assert (guest.os_name, guest.os_version) == ("Debian GNU/Linux", "12")
    assert guest.kernel_release.endswith("-amd64") and guest.architecture == "x86_64"
    assert guest.application_count == image.applications > 100
    assert guest.hostname == "virtplane-debian" and guest.timezone == "UTC"  # tzdata: Etc/UTC
    # the agent installed from the .deb
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert guest.agent_version == version
    root = {f.mount_point: f for f in guest.filesystems}["/"]
    assert (root.device, root.type) == ("/dev/vda", "ext4")
    assert 0 < root.used_bytes < root.total_bytes
    assert guest.uptime_seconds > 0 and guest.cpus == 1
    assert [(u.name, u.terminal) for u in guest.users] == [(image.user, "ttyS0")]
    assert guest.ipv4_addresses == ("10.0.2.15",)  # user-mode networking's DHCP


async def _full_report_bytes(api: Api, vm_id: str) -> int:
    """The protobuf size of a full report the agent sends when asked (a refresh)."""
    asked = time.time()
    await api.client.vms.refresh_guest_report(vm_id)
    sizes: list[int] = []

    async def full_since() -> bool:
        raw = (await api.client.vms.guest_report(vm_id, raw=True)).raw_report
        if raw is None or raw.received_time is None or raw.received_time.timestamp() < asked:
            return False
        message = json_format.Parse(raw.report_json, gc.GuestMessage())
        sizes[:] = [message.ByteSize()] if message.report.full else []
        return bool(sizes)

    await until(full_since, what="a full report after the refresh", within=60, every=0.5)
    return sizes[0]


NextVm = Callable[[str, Callable[[vp.Vm], object], int], Awaitable[tuple[int, vp.Vm]]]


async def _reboot(api: Api, vm_id: str, next_vm: NextVm) -> None:
    """RebootVm through the agent (systemctl reboot): UP again with a new
    boot's report, never DOWN."""
    before = (await api.client.vms.guest_report(vm_id)).guest
    assert before is not None
    at = api.watch.mark()
    rebooting = await api.client.vms.reboot(vm_id, timeout_seconds=120)
    assert rebooting.vm.status.state == vp.VmState.REBOOT_IN_PROGRESS

    def rebooted(vm: vp.Vm) -> bool:
        g = vm.status.guest
        return bool(
            vm.status.state == vp.VmState.UP
            and vm.status.revision > rebooting.vm.status.revision
            and g
            and 0 < g.uptime_seconds < before.uptime_seconds
            and _agent(vm) == Agent.RESPONDING
        )

    await next_vm("UP again after the reboot, with the new boot's report", rebooted, at)
    assert vp.VmState.DOWN not in api.watch.states(vm_id, at)  # a reboot is not a stop


async def test_a_debian_guest_reports_survives_a_killed_agent_reboots_and_powers_off(
    api: Api, stack: Stack, debian_image: DebianImage, debian_vm: str
) -> None:
    async def next_vm(what: str, check: Callable[[vp.Vm], object], since: int) -> tuple[int, vp.Vm]:
        try:
            return await api.watch.next_vm(debian_vm, check, what, since, BOOT_WAIT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nconsole:\n{_console(stack, debian_vm)[-3000:]}") from exc

    since, started = api.watch.mark(), time.monotonic()
    await api.client.vms.start(debian_vm)
    first, vm = await next_vm("the first full report", _reported, since)
    first_report_s = time.monotonic() - started
    assert vm.status.state == vp.VmState.UP and _agent(vm) == Agent.RESPONDING
    _, settled = await next_vm("the address and the login", _settled, first)
    assert settled.status.guest is not None
    _check_facts(settled.status.guest, debian_image)

    # kill -9 of the agent: stale, its facts kept; fresh once systemd restarts it
    at, stale = await next_vm("NOT_RESPONDING", lambda v: _agent(v) == Agent.NOT_RESPONDING, first)
    assert stale.status.state == vp.VmState.UP and stale.status.guest is not None
    assert stale.status.guest.os_name == "Debian GNU/Linux"
    kept = _observed(stale)
    await next_vm(
        "RESPONDING again", lambda v: _agent(v) == Agent.RESPONDING and _observed(v) > kept, at
    )
    assert "virtplane-test: kill -9 of virtplane-guestd.service" in _console(stack, debian_vm)

    report_bytes = await _full_report_bytes(api, debian_vm)
    print(
        f"\ndebian guest: start → first full report {first_report_s:.1f} s, "
        f"full report {report_bytes} bytes, {settled.status.guest.application_count} applications"
    )

    await _reboot(api, debian_vm, next_vm)
    assert _console(stack, debian_vm).count("Linux version ") == 2  # the kernel's banner

    # ShutdownVm goes through the agent: systemd powers the guest off
    at = api.watch.mark()
    await api.client.vms.shutdown(debian_vm, timeout_seconds=120)
    _, down = await next_vm("DOWN", lambda v: v.status.state == vp.VmState.DOWN, at)
    assert down.status.exit_reason == vp.ExitReason.GUEST_SHUTDOWN
    assert "reboot: Power down" in _console(stack, debian_vm)  # the kernel's last word
