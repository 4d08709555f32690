"""A real Debian 12 guest (`make debian-image`: systemd, udev, the agent
installed from its .deb) through the whole stack, all in one booted guest
(module scope), the tests in order:

- udev starts virtplane-guestd.service on the host's port, and the VM goes UP
  with the distribution's own name and version, its installed packages, its
  root file system on the virtio disk, its DHCP address, time zone, the
  ordinary user logged in on the serial console, and its uptime;
- dpkg installs a package inside the guest: the agent sends a delta holding
  the changed application list, not a full report, and the controller's
  list gains the package;
- `systemctl restart virtplane-guestd`, then a SIGKILL of the agent: each time
  the host marks it NOT_RESPONDING with its facts kept, then RESPONDING again
  once systemd has (re)started it;
- HibernateVm, then StartVm restores it: the same boot, its uptime carrying
  on, the agent reconnected;
- `dpkg -r virtplane-guestd` leaves no unit, rule or running agent, and the
  host sees the agent silent; `dpkg -i` of the same .deb brings it back;
- RebootVm reboots it through the agent: UP again with the new boot's report,
  never DOWN;
- ShutdownVm powers it off through the agent: a clean systemd poweroff (the
  journal on its disk and its console say so), DOWN with GUEST_SHUTDOWN.

The tests drive the guest through the image's test unit
(virtplane-test-control.service; tests.support.guest_control). Prints the
figures guestd/README.md quotes: start → first full report, the size of a
full report, the number of applications.
"""

from __future__ import annotations

import contextlib
import os
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
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
    read_journal,
    require_debian_image,
)
from tests.support.guest_control import GuestControl
from tests.support.guests import Api
from tests.support.real import REPO
from tests.support.stack import Stack
from tests.support.waiting import until

pytestmark = pytest.mark.guest
BOOT_WAIT = 300.0
"""systemd reaches the login prompt ~32 s after create under TCG; a loaded
machine may take several times that."""
AGENT = "virtplane-guestd.service"
Agent = vp.AgentState


@dataclass(frozen=True)
class Booted:
    """The module's guest, once it has sent its first full report."""

    vm_id: str
    image: DebianImage
    control: GuestControl
    first_report_s: float
    """StartVm → the first full report, as the controller's watch saw it."""
    first: int
    """The watch's index of that report."""


@pytest.fixture(scope="module")
def debian_image(system_libvirt: str, images: Path) -> DebianImage:
    """A copy of the image for this module's VM (its writes stay in the copy)."""
    return copy_image(require_debian_image(), images / f"debian-{os.getpid()}")


@pytest.fixture(scope="module")
async def control() -> AsyncIterator[GuestControl]:
    control = GuestControl()
    await control.start()
    yield control
    await control.close()


@pytest.fixture(scope="module")
async def debian_vm(
    api: Api, stack: Stack, debian_image: DebianImage, control: GuestControl
) -> AsyncIterator[Booted]:
    """The guest, booted once for the module and started here."""
    spec = debian_spec(debian_image, extra_cmdline=control.cmdline)
    created = await api.client.vms.create(f"debian-{os.getpid()}", spec)
    try:
        since, started = api.watch.mark(), time.monotonic()
        await api.client.vms.start(created.id)
        first, vm = await _next_vm(
            api, stack, created.id, "the first full report", _reported, since=since
        )
        first_report_s = time.monotonic() - started
        assert vm.status.state == vp.VmState.UP and _agent(vm) == Agent.RESPONDING
        yield Booted(created.id, debian_image, control, first_report_s, first)
    finally:
        with contextlib.suppress(vp.ClientError):
            await api.client.vms.stop(created.id)
        with contextlib.suppress(vp.ClientError):
            await api.client.vms.delete(created.id)


async def _next_vm(
    api: Api, stack: Stack, vm_id: str, what: str, check: Callable[[vp.Vm], object], *, since: int
) -> tuple[int, vp.Vm]:
    """The watch's next VM that check accepts; a failure shows the guest's console."""
    try:
        return await api.watch.next_vm(vm_id, check, what, since, BOOT_WAIT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nconsole:\n{_console(stack, vm_id)[-3000:]}") from exc


def _agent(vm: vp.Vm) -> Agent:
    return vm.status.guest.agent_state if vm.status.guest else Agent.UNSPECIFIED


def _silent(vm: vp.Vm) -> bool:
    return _agent(vm) == Agent.NOT_RESPONDING


def _responding(vm: vp.Vm) -> bool:
    return _agent(vm) == Agent.RESPONDING


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


async def _raw_report_since(
    api: Api, vm_id: str, since: float, what: str, check: Callable[[gc.GuestMessage], bool]
) -> gc.GuestMessage:
    """hostd's record of the last report message, once one received after
    since (Unix time) passes check."""
    found: list[gc.GuestMessage] = []

    async def arrived() -> bool:
        raw = (await api.client.vms.guest_report(vm_id, raw=True)).raw_report
        if raw is None or raw.received_time is None or raw.received_time.timestamp() < since:
            return False
        message = json_format.Parse(raw.report_json, gc.GuestMessage())
        found[:] = [message] if check(message) else []
        return bool(found)

    await until(arrived, what=what, within=120, every=0.5)
    return found[0]


async def _full_report_bytes(api: Api, vm_id: str) -> int:
    """The protobuf size of a full report the agent sends when asked (a refresh)."""
    asked = time.time()
    await api.client.vms.refresh_guest_report(vm_id)
    full = await _raw_report_since(
        api, vm_id, asked, "a full report after the refresh", lambda m: m.report.full
    )
    return full.ByteSize()


async def _stale_then_fresh(
    api: Api, stack: Stack, vm_id: str, at: int, what: str
) -> tuple[vp.Vm, vp.Vm]:
    """NOT_RESPONDING with the facts kept, then RESPONDING with newer facts."""
    at, stale = await _next_vm(api, stack, vm_id, f"NOT_RESPONDING after {what}", _silent, since=at)
    assert stale.status.state == vp.VmState.UP and stale.status.guest is not None
    assert stale.status.guest.os_name == "Debian GNU/Linux"  # kept as last observed
    kept = _observed(stale)
    _, fresh = await _next_vm(
        api, stack, vm_id, f"RESPONDING again after {what}",
        lambda v: _responding(v) and _observed(v) > kept, since=at,
    )  # fmt: skip
    return stale, fresh


async def test_udev_starts_the_agent_and_the_vm_reports_the_distribution(
    api: Api, stack: Stack, debian_vm: Booted
) -> None:
    _, settled = await _next_vm(
        api, stack, debian_vm.vm_id, "the address and the login", _settled, since=debian_vm.first
    )
    assert settled.status.guest is not None
    _check_facts(settled.status.guest, debian_vm.image)
    # udev's rule wanted the unit when the port appeared
    wanted = await debian_vm.control.run("systemctl", "show", "-P", "WantedBy", AGENT)
    device = wanted.check().output.strip().strip('"')  # the port's sys-devices-… unit
    assert "x2dports-vport" in device and device.endswith(".device"), device  # virtio-ports

    report_bytes = await _full_report_bytes(api, debian_vm.vm_id)
    print(
        f"\ndebian guest: start → first full report {debian_vm.first_report_s:.1f} s, "
        f"full report {report_bytes} bytes, {settled.status.guest.application_count} applications"
    )


async def test_installing_a_package_sends_a_delta_with_the_application_list(
    api: Api, debian_vm: Booted
) -> None:
    image, vm_id = debian_vm.image, debian_vm.vm_id
    before = (await api.client.vms.get(vm_id)).status.guest
    assert before is not None and before.application_count == image.applications
    assert not any(a.startswith(f"{image.test_package} ") for a in before.applications)

    at, installed = api.watch.mark(), time.time()
    (await debian_vm.control.run("dpkg", "-i", image.test_package_deb)).check()
    entry = f"{image.test_package} 1.0"

    def has_package(message: gc.GuestMessage) -> bool:
        return entry in message.report.applications.applications

    delta = await _raw_report_since(
        api, vm_id, installed, "a report with the new package", has_package
    )
    # hostd received a delta: not full, with the applications section and not the
    # unchanged ones (the system section only if its content changed)
    assert not delta.report.full
    sections = {field.name for field, _ in delta.report.ListFields()}
    assert "applications" in sections and not sections & {"os", "network", "users"}
    assert len(delta.report.applications.applications) == image.applications + 1
    # the controller's record gains it
    _, vm = await api.watch.next_vm(
        vm_id, lambda v: v.status.guest and entry in v.status.guest.applications, since=at
    )
    assert vm.status.guest is not None
    assert vm.status.guest.application_count == image.applications + 1
    assert vm.status.guest.os_name == before.os_name  # the other facts are kept


async def test_systemctl_restart_of_the_agent_goes_stale_then_fresh(
    api: Api, stack: Stack, debian_vm: Booted
) -> None:
    at = api.watch.mark()
    (await debian_vm.control.run("systemctl", "restart", AGENT)).check()
    stale, fresh = await _stale_then_fresh(api, stack, debian_vm.vm_id, at, "systemctl restart")
    assert fresh.status.guest is not None and stale.status.guest is not None
    assert fresh.status.guest.uptime_seconds > stale.status.guest.uptime_seconds


async def test_a_killed_agent_goes_stale_then_systemd_restarts_it(
    api: Api, stack: Stack, debian_vm: Booted
) -> None:
    control = debian_vm.control
    restarts = int((await control.run("systemctl", "show", "-P", "NRestarts", AGENT)).output)
    at = api.watch.mark()
    (await control.run("systemctl", "kill", "--signal=KILL", AGENT)).check()
    await _stale_then_fresh(api, stack, debian_vm.vm_id, at, "kill -9")
    # systemd's Restart=always brought it back, not anyone else
    shown = await control.run("systemctl", "show", "-P", "NRestarts", AGENT)
    assert int(shown.check().output) == restarts + 1


async def test_hibernate_and_restore_carry_on_the_same_boot(
    api: Api, stack: Stack, debian_vm: Booted
) -> None:
    vms, ops, vm_id = api.client.vms, api.client.operations, debian_vm.vm_id
    boot_id = await debian_vm.control.boot_id()
    before = (await vms.get(vm_id)).status.guest
    assert before is not None and before.uptime_seconds > 0

    saving = await vms.hibernate(vm_id)
    op = await ops.result(saving.operation, BOOT_WAIT)
    assert op.state == vp.OperationState.SUCCEEDED, op.error
    assert (await vms.get(vm_id)).status.state == vp.VmState.SUSPENDED

    at = api.watch.mark()
    restoring = await vms.start(vm_id)
    op = await ops.result(restoring.operation, BOOT_WAIT)
    assert op.state == vp.OperationState.SUCCEEDED, op.error

    def back(vm: vp.Vm) -> bool:
        return (
            vm.status.state == vp.VmState.UP
            and _agent(vm) == Agent.RESPONDING
            and _observed(vm) > (before.observed_time.timestamp() if before.observed_time else 0)
        )

    _, up = await _next_vm(api, stack, vm_id, "the agent back after the restore", back, since=at)
    assert up.status.guest is not None
    # the guest went on where it was: the same boot, its uptime continuing
    assert up.status.guest.uptime_seconds >= before.uptime_seconds
    assert vp.VmState.DOWN not in api.watch.states(vm_id, at)
    assert await debian_vm.control.boot_id() == boot_id


async def test_removing_the_agent_leaves_no_unit_rule_or_agent(
    api: Api, stack: Stack, debian_vm: Booted
) -> None:
    control, vm_id = debian_vm.control, debian_vm.vm_id
    owned = (await control.run("dpkg-query", "-L", "virtplane-guestd")).check().output.split()
    unit = [p for p in owned if p.endswith(f"/{AGENT}")]
    rule = [p for p in owned if p.endswith("-virtplane-guestd.rules")]
    assert len(unit) == len(rule) == 1, owned

    at = api.watch.mark()
    (await control.run("dpkg", "-r", "virtplane-guestd")).check()
    # the host sees the agent go silent
    await _next_vm(api, stack, vm_id, "NOT_RESPONDING once removed", _silent, since=at)
    # no unit, no rule, no process
    for path in unit + rule:
        assert (await control.run("test", "-e", path)).rc == 1, f"{path} is still there"
    known = await control.run("systemctl", "list-unit-files", "--no-legend", AGENT)
    assert AGENT not in known.output
    assert (await control.run("systemctl", "is-active", AGENT)).output.strip() == "inactive"
    assert (await control.run("pgrep", "-f", "virtplane-guestd")).rc == 1
    rules_dirs = ("/etc/udev/rules.d", "/lib/udev/rules.d", "/usr/lib/udev/rules.d")
    rules = await control.run("grep", "-rl", "virtplane", *rules_dirs)
    assert rules.rc == 1, rules.output  # grep found nothing
    assert (await api.client.vms.get(vm_id)).status.state == vp.VmState.UP

    # dpkg -i of the same .deb starts it again on the port (the postinst's udev trigger)
    at = api.watch.mark()
    (await control.run("dpkg", "-i", debian_vm.image.agent_deb)).check()
    await _next_vm(api, stack, vm_id, "RESPONDING once installed again", _responding, since=at)


async def test_rebootvm_through_the_agent_is_up_again_never_down(
    api: Api, stack: Stack, debian_vm: Booted
) -> None:
    vm_id = debian_vm.vm_id
    before = (await api.client.vms.guest_report(vm_id)).guest
    assert before is not None
    # the kernel's banners so far (a restore starts a new console log)
    banners = _console(stack, vm_id).count("Linux version ")
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

    await _next_vm(
        api,
        stack,
        vm_id,
        "UP again after the reboot, with the new boot's report",
        rebooted,
        since=at,
    )
    assert vp.VmState.DOWN not in api.watch.states(vm_id, at)  # a reboot is not a stop
    assert _console(stack, vm_id).count("Linux version ") == banners + 1  # a new kernel


async def test_shutdownvm_through_the_agent_is_a_clean_systemd_poweroff(
    api: Api, stack: Stack, debian_vm: Booted, tmp_path: Path
) -> None:
    vm_id = debian_vm.vm_id
    at = api.watch.mark()
    await api.client.vms.shutdown(vm_id, timeout_seconds=120)
    _, down = await _next_vm(
        api, stack, vm_id, "DOWN", lambda v: v.status.state == vp.VmState.DOWN, since=at
    )
    assert down.status.exit_reason == vp.ExitReason.GUEST_SHUTDOWN
    console = _console(stack, vm_id)
    assert "reboot: Power down" in console  # the kernel's last word
    # the last boot's journal, read from the disk: systemd went down in order
    journal = read_journal(debian_vm.image.disk, tmp_path / "journal", "-b", "0", "-o", "cat")
    assert "System is powering down." in journal  # logind took the poweroff
    assert "Reached target poweroff.target - System Power Off." in journal
    assert journal.rstrip().endswith("Journal stopped")  # journald closed its files
