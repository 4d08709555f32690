"""A real Debian 12 guest (`make debian-image`: systemd, udev, the agent
installed from its .deb) through the whole stack: udev starts
virtplane-guestd.service on the host's port, and the VM goes UP with the
distribution's own name and version, its installed packages, its root file
system on the virtio disk and its uptime; ShutdownVm then powers it off
through the agent (systemd's poweroff), DOWN with GUEST_SHUTDOWN.

Prints the figures guestd/README.md quotes: start → first full report, the
size of a full report, the number of applications.
"""

from __future__ import annotations

import contextlib
import os
import time
import tomllib
from collections.abc import AsyncIterator
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


@pytest.fixture(scope="module")
def debian_image(system_libvirt: str, images: Path) -> DebianImage:
    """A copy of the image for this module's VM (its writes stay in the copy)."""
    return copy_image(require_debian_image(), images / f"debian-{os.getpid()}")


@pytest.fixture
async def debian_vm(api: Api, debian_image: DebianImage) -> AsyncIterator[str]:
    created = await api.client.vms.create(f"debian-{os.getpid()}", debian_spec(debian_image))
    yield created.id
    with contextlib.suppress(vp.ClientError):
        await api.client.vms.stop(created.id)
    with contextlib.suppress(vp.ClientError):
        await api.client.vms.delete(created.id)


def _reported(vm: vp.Vm) -> bool:
    g = vm.status.guest
    return bool(g and g.os_name and g.application_count and g.filesystems and g.uptime_seconds)


def _console_tail(stack: Stack, vm_id: str) -> str:
    path = StateLayout(stack.workdir / "hostd").console_log(vm_id)
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-3000:]
    return f"(no console log at {path})"


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


async def test_a_debian_guest_reports_through_the_stack_and_powers_off(
    api: Api, stack: Stack, debian_image: DebianImage, debian_vm: str
) -> None:
    started = time.monotonic()
    await api.client.vms.start(debian_vm)
    try:
        vm = await api.watch.wait_for(debian_vm, _reported, BOOT_WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nconsole:\n{_console_tail(stack, debian_vm)}") from exc
    first_report_s = time.monotonic() - started
    guest = vm.status.guest
    assert vm.status.state == vp.VmState.UP and guest is not None
    # the distribution's own os-release, kernel and packages
    assert (guest.os_name, guest.os_version) == ("Debian GNU/Linux", "12")
    assert guest.kernel_release.endswith("-amd64")
    assert guest.application_count == debian_image.applications > 100
    assert guest.hostname == "virtplane-debian"
    # the agent installed from the .deb
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert guest.agent_version == version
    root = {f.mount_point: f for f in guest.filesystems}["/"]
    assert (root.device, root.type) == ("/dev/vda", "ext4")
    assert 0 < root.used_bytes < root.total_bytes
    assert guest.uptime_seconds > 0 and guest.cpus == 1
    assert guest.agent_state == vp.AgentState.RESPONDING

    report_bytes = await _full_report_bytes(api, debian_vm)
    print(
        f"\ndebian guest: start → first full report {first_report_s:.1f} s, "
        f"full report {report_bytes} bytes, {guest.application_count} applications"
    )

    # ShutdownVm goes through the agent: systemd powers the guest off
    at = api.watch.mark()
    await api.client.vms.shutdown(debian_vm, timeout_seconds=120)
    _, down = await api.watch.next_vm(
        debian_vm, lambda v: v.status.state == vp.VmState.DOWN, "DOWN", at, BOOT_WAIT
    )
    assert down.status.exit_reason == vp.ExitReason.GUEST_SHUTDOWN, _console_tail(stack, debian_vm)
    assert "reboot: Power down" in _console_tail(stack, debian_vm)  # the kernel's last word
