"""A hostd served over gRPC on libvirt's test driver, and the helpers of the servicer tests.

The hostd serves mutual TLS with an identity from a TestPki of its own; the
stub is a controller's (tests.support.connect). The fixtures served and
small_journal (tests/hostd/conftest.py) are built on serve().
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits, HostdConfig, MigrationConfig
from hostd.server import Hostd
from tests.support.connect import TEST_HOST_ID, give_identity, hostd_channel
from tests.support.hostd_rig import vm_config
from tests.support.pki import TestPki
from tests.support.real import IMAGE_ROOTS
from tests.support.waiting import next_item

S = pb.HostVm


@dataclass
class Served:
    hostd: Hostd
    stub: pb_grpc.HostAgentServiceAsyncStub
    pki: TestPki
    """The CA of the hostd's identity; hostd_channel(address, pki, host_id) reaches it."""
    address: str
    channel: grpc.aio.Channel
    """The controller's channel the stub is on."""
    host_id: str = TEST_HOST_ID


@contextlib.asynccontextmanager
async def serve(
    state_dir: Path,
    channel: ChannelLimits,
    journal_size: int = HostdConfig.journal_size,
    *,
    pki: TestPki | None = None,
    host_id: str = TEST_HOST_ID,
    **settings: Any,
) -> AsyncIterator[Served]:
    """A started hostd (mutual TLS as host_id, its identity from pki, by
    default a new TestPki) and a controller's stub on it; its VMs are
    destroyed after. settings: other HostdConfig fields (by default the test
    image roots, and QEMU's TLS folder in state_dir)."""
    pki = pki or TestPki(state_dir.parent / "pki")
    give_identity(pki, state_dir, host_id)
    config = HostdConfig(
        listen="127.0.0.1:0",
        libvirt_uri="test:///default",
        state_dir=state_dir,
        virt_type="qemu",
        journal_size=journal_size,
        channel=channel,
        image_roots=IMAGE_ROOTS,
    )
    # QEMU's TLS folder of the test's own, never the machine's (which a
    # migration test running beside it may be using).
    settings.setdefault("migration", MigrationConfig(qemu_tls_dir=state_dir / "qemu-tls"))
    hostd = Hostd(dataclasses.replace(config, **settings))
    port = await hostd.start()
    address = f"127.0.0.1:{port}"
    grpc_channel = hostd_channel(address, pki, host_id)
    try:
        stub = pb_grpc.HostAgentServiceStub(grpc_channel)
        yield Served(hostd, stub, pki, address, grpc_channel, host_id)
    finally:
        for vm in hostd.vms.list():  # never leave domains behind
            await hostd.vms.destroy(vm.vm_id)
        await grpc_channel.close(None)
        await hostd.stop(grace=1)


@contextlib.asynccontextmanager
async def watching(
    served: Served, request: pb.WatchEventsRequest | None = None
) -> AsyncIterator[AsyncIterator[pb.WatchEventsResponse]]:
    """A WatchEvents stream (by default from the journal's position now), cancelled after."""
    if request is None:
        request = pb.WatchEventsRequest(after_sequence=served.hostd.journal.last_sequence)
    watch = served.stub.WatchEvents(request)
    try:
        yield watch.__aiter__()
    finally:
        watch.cancel()


async def create_running(
    served: Served, config: pb.VmConfig, events: AsyncIterator[pb.WatchEventsResponse]
) -> None:
    """Creates the VM and waits until the watch reports it RUNNING."""
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    await states_until(events, config.vm_id, S.STATE_RUNNING)


async def vm_states(
    events: AsyncIterator[pb.WatchEventsResponse], vm_id: str, count: int
) -> list[S]:
    states: list[S] = []
    while len(states) < count:
        event = (await next_item(events, f"state {len(states) + 1} of VM {vm_id}")).event
        if event.WhichOneof("payload") == "vm_state" and event.vm_state.vm_id == vm_id:
            states.append(event.vm_state)
    return states


async def states_until(
    events: AsyncIterator[pb.WatchEventsResponse], vm_id: str, last: int
) -> list[int]:
    """The states of one VM the watch brings, up to and including last."""
    seen: list[int] = []
    while not seen or seen[-1] != last:
        seen.extend(s.state for s in await vm_states(events, vm_id, 1))
    return seen


async def expect_precondition(call: Awaitable[object], *words: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for word in words:
        assert word in (caught.value.details() or "")


def disk_config(boot_files: tuple[str, str]) -> pb.VmConfig:
    """A VM with two disks (the boot files as their images: the test driver opens none)."""
    kernel, initrd = boot_files
    config = vm_config(kernel, initrd=initrd)
    config.spec.disks.extend(
        [
            vm_pb2.Disk(name="root", path=initrd, format=vm_pb2.Disk.FORMAT_QCOW2),
            vm_pb2.Disk(name="seed", path=kernel, read_only=True),
        ]
    )
    return config


def libvirt_test_xml(vm_id: str) -> str:
    """The test driver's XML of the VM's domain; empty when it has none."""
    conn = libvirt.open("test:///default")
    try:
        return str(conn.lookupByUUIDString(vm_id).XMLDesc())
    except libvirt.libvirtError:
        return ""
    finally:
        conn.close()
