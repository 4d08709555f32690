"""Fixtures of the controller's tests; their building blocks are in
tests.support (controller_rig, stack)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from virtplane.v1 import vm_pb2

from tests.support.controller_rig import Rig, boot_source, close_rig, config, open_rig
from tests.support.rig_hosts import shared_hostd
from tests.support.served import Served


@pytest.fixture(scope="module")
async def test_hostd() -> AsyncIterator[Served]:
    """A hostd on libvirt's test driver in this process, shared by a module's
    tests; a test adds it with tests.support.rig_hosts.add_test_host."""
    workdir = Path(tempfile.mkdtemp(prefix="vp-"))  # short: socket paths must fit
    async with shared_hostd(workdir) as served:
        yield served
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    """A controller on a fresh database of each engine."""
    opened = await open_rig(config(database_url))
    yield opened
    await close_rig(opened)


@pytest.fixture
def boot(tmp_path: Path) -> vm_pb2.BootSource:
    return boot_source(tmp_path)
