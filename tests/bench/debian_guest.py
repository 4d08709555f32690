"""The Debian guest of `make debian-image`: how soon a real systemd guest's
agent reports, what its first report weighs and what it costs when idle.

One guest, booted once by a real hostd on qemu:///system (a copy of the
image's disk, its own kernel and initrd, 512 MiB, one vCPU, TCG):

- boot_to_first_report_s: CreateVm until the first guest report event
  carrying the agent's observations (systemd, udev and the agent's start);
- first_report_bytes: the protobuf size of the first full report, as hostd
  received it (GetVmGuestReport); if a partial report already followed it,
  the full report a refresh brings;
- applications: how many packages that report lists;
- idle_bytes_per_min: the bytes the agent sent per minute once the late
  facts (DHCP's address, the login) were in, counted by hostd on the
  channel over a window, with the default 5 s heartbeat (target: at most
  1 KB/min, as for the test image; tests/bench/guest_channel.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from google.protobuf import json_format
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from tests.bench.guest_channel import first_report
from tests.support.debian_image import copy_image, debian_spec, require_debian_image
from tests.support.stack import start_hostd
from virtplane_client.convert import spec_message

URI = "qemu:///system"
TIMEOUT = 300.0
"""systemd reaches the login prompt ~32 s after create under TCG; a loaded
machine may take several times that."""
SETTLE_AFTER = 10.0
"""Seconds waited once the late facts are in, before the idle window."""


async def _last_message(stub: pb_grpc.HostAgentServiceAsyncStub, vm_id: str) -> gc.GuestMessage:
    reply = await stub.GetVmGuestReport(pb.HostAgentServiceGetVmGuestReportRequest(vm_id=vm_id))
    if not reply.report_json:
        return gc.GuestMessage()
    return json_format.Parse(reply.report_json, gc.GuestMessage())


async def _full_report(stub: pb_grpc.HostAgentServiceAsyncStub, vm_id: str) -> gc.GuestMessage:
    """The first full report, or, if a partial one came since, a refresh's."""
    message = await _last_message(stub, vm_id)
    if message.report.full:
        return message
    await stub.RefreshVmGuestInfo(pb.HostAgentServiceRefreshVmGuestInfoRequest(vm_id=vm_id))
    async with asyncio.timeout(TIMEOUT):
        while True:
            again = await _last_message(stub, vm_id)
            if again.report.full and again.sequence > message.sequence:
                return again
            await asyncio.sleep(0.5)


async def _settled(stub: pb_grpc.HostAgentServiceAsyncStub, vm_id: str) -> None:
    """Waits until the guest's address and logged-in user are reported."""
    request = pb.HostAgentServiceListVmsRequest()
    async with asyncio.timeout(TIMEOUT):
        while True:
            for vm in (await stub.ListVms(request)).vms:
                guest = vm.guest
                if (
                    vm.vm_id == vm_id
                    and guest.users
                    and any(i.ipv4_addresses for i in guest.interfaces)
                ):
                    return
            await asyncio.sleep(1.0)


async def _idle_bytes(
    stub: pb_grpc.HostAgentServiceAsyncStub, vm_id: str, window: float
) -> dict[str, float]:
    request = pb.HostAgentServiceGetVmGuestReportRequest(vm_id=vm_id)
    await _settled(stub, vm_id)
    await asyncio.sleep(SETTLE_AFTER)
    before = (await stub.GetVmGuestReport(request)).channel
    await asyncio.sleep(window)
    after = (await stub.GetVmGuestReport(request)).channel
    per_minute = 60.0 / window
    return {
        "idle_bytes_per_min": (after.bytes_received - before.bytes_received) * per_minute,
        "idle_messages_per_min": (after.messages_received - before.messages_received) * per_minute,
        "idle_window_s": window,
    }


async def _run(workdir: Path, idle_window: float) -> dict[str, float]:
    image = copy_image(require_debian_image(), workdir / "image")
    hostd = start_hostd(workdir, URI)
    config = pb.VmConfig(
        vm_id=str(uuid.uuid4()), name="bench-debian", spec=spec_message(debian_spec(image))
    )
    try:
        async with hostd.channel() as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            listed = await stub.ListVms(pb.HostAgentServiceListVmsRequest())
            watching = asyncio.create_task(first_report(stub, listed.sequence, config.vm_id))
            await asyncio.sleep(0.2)  # the watch is open
            start = time.monotonic()
            await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
            try:
                event = await watching
                boot_s = time.monotonic() - start
                full = await _full_report(stub, config.vm_id)
                results = {
                    "boot_to_first_report_s": boot_s,
                    "first_report_bytes": float(full.ByteSize()),
                    "applications": float(event.guest_report.guest.application_count),
                }
                results.update(await _idle_bytes(stub, config.vm_id, idle_window))
            finally:
                await stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
    finally:
        hostd.stop()
    return results


def run(workdir: Path, idle_window: float = 60.0) -> dict[str, float]:
    return asyncio.run(_run(workdir, idle_window))
