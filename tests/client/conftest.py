"""The client's tests run against the controller rig of tests/controller: an
in-process controller on a fresh database of each engine and, for what
needs a host, a hostd on libvirt's test driver (nothing boots there: a
started VM stays POWERING_UP)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.controller.conftest import boot, rig, test_hostd
from tests.support.controller_rig import Rig
from tests.support.stack import free_port
from virtplane_client import AsyncClient, Backoff, BootSource, Nic, VmSpec

__all__ = ["boot", "client", "free_address", "name", "rig", "test_hostd", "vm_spec"]

# Quick retries: a test's controller comes back within a second.
QUICK = Backoff(initial=0.05, maximum=0.5)


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[AsyncClient]:
    """An AsyncClient of the rig's controller."""
    async with AsyncClient(rig.address, credentials=rig.credentials, backoff=QUICK) as opened:
        yield opened


@pytest.fixture
def vm_spec(tmp_path: Path) -> VmSpec:
    # The test driver boots nothing, but hostd checks that the kernel exists.
    (tmp_path / "vmlinuz").write_bytes(b"")
    return VmSpec(
        vcpus=1,
        memory_mib=128,
        boot=BootSource(kernel_path=str(tmp_path / "vmlinuz")),
        nics=(Nic("nic0"),),
    )


@pytest.fixture
def free_address() -> str:
    """An address nothing listens on."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def name() -> str:
    """A unique VM name: the test driver's domains outlive a test's database."""
    return f"v-{uuid.uuid4().hex[:8]}"
