"""Migrations through the controller's MigrateVm that fail or are cut off,
with real guests on two real hosts (h1: a hostd on qemu:///system, h2: one
on the second libvirtd; tests.support.two_hosts):

- h2 refuses: its before_vm_migrate_destination hook fails, or the VM's
  disk is not under its image roots (a disk it does not have);
- the destination's hostd is killed (SIGKILL) mid-transfer;
- the source's hostd is killed mid-transfer, then started again;
- the controller is killed mid-transfer, then started again on the same
  database.

Each ends with exactly one running domain across the two libvirt daemons
(asked directly), the controller showing the VM UP on that host, the
migration's operation ended with its reason, and nothing left booked on
the host the VM is not on. Transfers are slowed with the controller's
migration_max_bandwidth_mib so that the faults land mid-way. Waits have
deadlines that only bound them (WAIT); nothing is timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

import virtplane_client as vp
from tests.support.events import vm_until
from tests.support.guests import guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.rig_hosts import add_daemon
from tests.support.stack import Daemon
from tests.support.two_hosts import (
    destroy_domain,
    in_process_controller,
    start_hosts,
)
from tests.support.virt import disk_image

S = vp.VmState
OpState = vp.OperationState
pytestmark = pytest.mark.guest
WAIT = 180.0  # guests may take 40 s to boot on a loaded machine
_RUN = os.getpid()
HOOKED, BARE = (f"fault-{n}-{_RUN}" for n in ("hooked", "bare"))
REFUSAL = "migrations to this host are closed for the night"
HOOK = f'#!/bin/sh\necho "{REFUSAL}" >&2\nexit 1\n'


def running_domains(uris: tuple[str, str], vm_id: str) -> list[str]:
    """The libvirt URIs that run a domain of the VM, asked directly."""
    found = []
    for uri in uris:
        conn = libvirt.open(uri)
        try:
            if any(d.UUIDString() == vm_id and d.isActive() for d in conn.listAllDomains()):
                found.append(uri)
        finally:
            conn.close()
    return found


@pytest.fixture
def only_h1() -> Iterator[Path]:
    """A folder of disk images that h1 admits and h2 does not (both admit
    the temporary folder: tests.support.real.IMAGE_ROOTS)."""
    path = Path(tempfile.mkdtemp(prefix="vp-h1-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def refusing_hosts(
    workdir: Path, only_h1: Path, system_libvirt: str, second_libvirt: str
) -> Iterator[list[Daemon]]:
    """h1 with only_h1 as an image root; h2 with a before-migration hook
    that always fails."""
    script = workdir / "hooks" / "before_vm_migrate_destination" / "10-refuse"
    script.parent.mkdir(parents=True)
    script.write_text(HOOK)
    script.chmod(0o755)
    extra = (("--image-root", str(only_h1)), ("--hooks-dir", str(workdir / "hooks")))
    yield from start_hosts(workdir, (system_libvirt, second_libvirt), extra)


async def _booked(client: vp.AsyncClient, host: str) -> int:
    return (await client.hosts.get(host)).status.vcpus_used


async def _refused(
    client: vp.AsyncClient, vm: str, uris: tuple[str, str], h1: vp.Host
) -> vp.Operation:
    """MigrateVm of vm (UP on h1) is refused: the VM stays UP on h1, its one
    running domain there, nothing booked on h2; returns the operation."""
    with pytest.raises(vp.ClientError):
        await client.vms.migrate(vm, to="h2")
    ops = await client.operations.list(vm=vm)
    failed = next(op for op in ops if op.kind is vp.OperationKind.MIGRATE_VM)
    assert failed.state is OpState.FAILED and failed.error is not None, failed
    after = await client.vms.get(vm)
    assert (after.status.state, after.status.host_id) == (S.UP, h1.id)
    assert running_domains(uris, after.id) == [uris[0]]
    assert await _booked(client, "h2") == 0
    return failed


async def test_a_destination_that_refuses_leaves_the_vm_up_on_its_source(
    refusing_hosts: list[Daemon],
    guest_image: GuestImage,
    only_h1: Path,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    uris = (system_libvirt, second_libvirt)
    made: list[str] = []
    async with in_process_controller(database_url) as client:
        try:
            # Both boot on h1, the only host until they run.
            h1 = await add_daemon(client, "h1", refusing_hosts[0])
            seed = vp.Disk(
                name="seed", path=disk_image(only_h1 / "seed.img", "raw"), read_only=True
            )
            bare_spec = dataclasses.replace(guest_spec(guest_image), disks=(seed,))
            made += [
                (await client.vms.create(HOOKED, guest_spec(guest_image))).id,
                (await client.vms.create(BARE, bare_spec)).id,
            ]
            for vm in (HOOKED, BARE):
                await client.vms.start(vm)
            await asyncio.gather(*(vm_until(client, vm, guest_reported, WAIT) for vm in made))
            await add_daemon(client, "h2", refusing_hosts[1])

            hooked = await _refused(client, HOOKED, uris, h1)
            assert hooked.error is not None and REFUSAL in hooked.error.message, hooked.error
            assert "before_vm_migrate_destination" in hooked.error.message

            bare = await _refused(client, BARE, uris, h1)
            assert bare.error is not None and "disks[0].path" in bare.error.message, bare.error
        finally:
            for vm in (HOOKED, BARE):
                with contextlib.suppress(vp.ClientError):
                    await client.vms.stop(vm)
            for vm_id in made:
                destroy_domain(system_libvirt, vm_id)
                destroy_domain(second_libvirt, vm_id)
