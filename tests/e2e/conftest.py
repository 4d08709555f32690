"""Fixtures of the end-to-end tests: the whole stack as real processes (a
controller, a hostd on qemu:///system) and real guests booted from the test
image; and two real hosts for an in-process controller (hosts: a hostd on
qemu:///system and one on the second libvirtd). Their building blocks are in
tests.support (stack, guests, two_hosts)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import virtplane_client as vp
from tests.support.guests import Api, guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.stack import Daemon, Stack, start_stack
from tests.support.two_hosts import start_hosts
from tests.support.virt import disk_image


@pytest.fixture(scope="session")
def stack(system_libvirt: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    workdir.chmod(0o755)
    stack = start_stack(workdir, system_libvirt)
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
async def api(stack: Stack) -> AsyncIterator[Api]:
    api = await Api.open(stack)
    yield api
    await api.close()


@pytest.fixture(scope="session")
def images() -> Iterator[Path]:
    """A folder for disk images that QEMU, running as another user, can reach."""
    path = Path(tempfile.mkdtemp(prefix="vp-img-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_disk(images: Path) -> str:
    """The qcow2 image of the shared VM's disk."""
    return disk_image(images / "shared-data0.qcow2", "qcow2")


@pytest.fixture(scope="session")
async def up_vm(api: Api, guest_image: GuestImage, shared_disk: str) -> AsyncIterator[vp.Vm]:
    """A VM booted once and shared by the tests that only look at it; it has
    one disk, shared_disk."""
    disk = vp.Disk(name="data0", path=shared_disk, format=vp.DiskFormat.QCOW2)
    spec = dataclasses.replace(guest_spec(guest_image), disks=(disk,))
    # Named for this run: domains are named after VMs, and other runs may
    # share the machine's libvirtd.
    created = await api.client.vms.create(f"shared-{os.getpid()}", spec)
    await api.client.vms.start(created.id)
    vm = await api.watch.wait_for(created.id, guest_reported)
    yield vm
    with contextlib.suppress(vp.ClientError):
        await api.client.vms.stop(vm.id)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A new folder with a short path (hostd's unix sockets live under its
    state folder), traversable by QEMU; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="vp-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short paths (unix sockets), traversable by QEMU."""
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hosts(workdir: Path, system_libvirt: str, second_libvirt: str) -> Iterator[list[Daemon]]:
    """Two hosts for an in-process controller, over mutual TLS; a test may
    replace a daemon in the list (a restart), which is then the one stopped."""
    yield from start_hosts(workdir, (system_libvirt, second_libvirt))
