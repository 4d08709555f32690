"""One real guest on qemu:///system: hostd boots it, hears its agent, destroys it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.config import HostdConfig
from hostd.server import Hostd
from tests.conftest import GuestImage
from tests.hostd.conftest import next_item, vm_config

S = pb.HostVm
BOOT_TIMEOUT = 180.0
"""Generous: a TCG guest reports in ~5-8 s, but CI machines may be loaded."""

pytestmark = pytest.mark.guest


def _domain_exists(uri: str, vm_id: str) -> bool:
    conn = libvirt.open(uri)
    try:
        conn.lookupByUUIDString(vm_id)
        return True
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def _destroy_if_left(uri: str, vm_id: str) -> None:
    conn = libvirt.open(uri)
    try:
        conn.lookupByUUIDString(vm_id).destroy()
    except libvirt.libvirtError:
        pass
    finally:
        conn.close()


async def _until(events: AsyncIterator[pb.WatchEventsResponse], vm_id: str, payload: str):
    while True:
        event = (await next_item(events, payload, BOOT_TIMEOUT)).event
        if event.WhichOneof("payload") != payload:
            continue
        if (event.vm_state if payload == "vm_state" else event.guest_report).vm_id == vm_id:
            return event


async def test_real_guest_boots_reports_and_is_destroyed(
    system_libvirt: str, guest_image: GuestImage, short_tmp: Path
) -> None:
    config = vm_config(
        guest_image.kernel,
        initrd=guest_image.initrd,
        memory_mib=256,
        vcpus=1,
        nics=(vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER),),
    )
    config.spec.boot.cmdline = guest_image.cmdline
    hostd = Hostd(
        HostdConfig(listen="127.0.0.1:0", libvirt_uri=system_libvirt, state_dir=short_tmp / "s")
    )
    port = await hostd.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.HostAgentServiceStub(channel)
    watch = stub.WatchEvents(pb.WatchEventsRequest())
    events = watch.__aiter__()
    try:
        caps = await stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        running = await _until(events, config.vm_id, "vm_state")
        while running.vm_state.state == S.STATE_WAIT_FOR_LAUNCH:
            running = await _until(events, config.vm_id, "vm_state")
        assert running.vm_state.state == S.STATE_RUNNING, running.vm_state.message
        assert _domain_exists(system_libvirt, config.vm_id)

        # DHCP may finish after the agent's first report; a later one carries the address.
        addresses: list[str] = []
        while "10.0.2.15" not in addresses:
            report = (await _until(events, config.vm_id, "guest_report")).guest_report.guest
            assert report.agent_state == vm_pb2.GuestInfo.AGENT_STATE_RESPONDING
            addresses = [a.split("/")[0] for i in report.interfaces for a in i.ipv4_addresses]
        assert report.os_name
        assert report.last_report_time.seconds > 0

        await stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
        down = await _until(events, config.vm_id, "vm_state")
        assert (down.vm_state.state, down.vm_state.exit_reason) == (
            S.STATE_DOWN,
            S.EXIT_REASON_DESTROYED,
        )
        assert not await asyncio.to_thread(_domain_exists, system_libvirt, config.vm_id)
        assert caps.hypervisor_type in {"kvm", "qemu"}
    finally:
        watch.cancel()
        await asyncio.to_thread(_destroy_if_left, system_libvirt, config.vm_id)
        await channel.close(None)
        await hostd.stop(grace=1)
