"""Fixtures of hostd's tests; their building blocks are in tests.support
(hostd_rig, served, fake_guest, waiting)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hostd.config import ChannelLimits
from tests.hostd.fakes import FakeHypervisor
from tests.support.hostd_rig import Rig, make_rig
from tests.support.hostd_rig import boot_files as make_boot_files
from tests.support.served import Served, serve


@pytest.fixture
def boot_files(tmp_path: Path) -> tuple[str, str]:
    """A kernel and an initrd that exist (the test driver never boots them)."""
    return make_boot_files(tmp_path)


@pytest.fixture
async def rig(tmp_path: Path, boot_files: tuple[str, str]) -> AsyncIterator[Rig]:
    """A VmService on a fresh fake hypervisor (tests.support.hostd_rig)."""
    rig = await make_rig(FakeHypervisor(), tmp_path, boot_files[0])
    yield rig
    await rig.vms.stop()


@pytest.fixture
async def served(short_tmp: Path) -> AsyncIterator[Served]:
    """A hostd served over gRPC on libvirt's test driver (tests.support.served)."""
    async with serve(short_tmp / "state", ChannelLimits(connect_timeout_seconds=60)) as served:
        yield served


@pytest.fixture
async def small_journal(short_tmp: Path) -> AsyncIterator[Served]:
    """As served, with a journal of three events."""
    channel = ChannelLimits(connect_timeout_seconds=0.01, connect_retry_seconds=0.01)
    async with serve(short_tmp / "state", channel, journal_size=3) as served:
        yield served


@pytest.fixture(scope="module")
def state_root() -> Iterator[Path]:
    """A short temporary directory shared by one module's tests (a hostd's state)."""
    path = Path(tempfile.mkdtemp(prefix="vp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vp-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
