"""A host's certificate renewed while a real guest runs on it: a controller
process giving hosts certificates of RENEWAL_LIFETIME seconds, a hostd on
qemu:///system enrolled with it, and the test guest booted there. Across the
renewal the VM stays UP, its host stays UP, and the streams opened before it
(the controller's WatchVms, the hostd's WatchEvents as the controller reads
it) keep delivering the guest's reports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from tests.support.enrolled import (
    certificate,
    host_cert_lifetime,
    host_state,
    named_host,
    renewed_while,
    served_serial,
)
from tests.support.events import HostEvents, VmEvents
from tests.support.guests import WAIT, guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.stack import Daemon, start_controller, start_host
from tests.support.virt import remove_domains

pytestmark = pytest.mark.guest
S = vp.VmState
RENEWAL_LIFETIME = 40  # seconds: renewed every ~27 s
RENEWED_WITHIN = 60.0
REPORTED_WITHIN = 60.0
VM_NAME = f"renewal-{os.getpid()}"  # domains are per libvirtd, shared by other runs


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Short paths (unix sockets), traversable by QEMU."""
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def controller(workdir: Path) -> Iterator[Daemon]:
    folder = workdir / "controller"
    folder.mkdir()
    lifetime = host_cert_lifetime(RENEWAL_LIFETIME)
    daemon = start_controller(folder, plaintext_hosts=False, extra=lifetime)
    yield daemon
    daemon.stop()


@pytest.fixture
def hostd(controller: Daemon, workdir: Path, system_libvirt: str) -> Iterator[Daemon]:
    folder = workdir / "h"
    folder.mkdir()
    folder.chmod(0o755)
    daemon = start_host(controller, folder, "h", system_libvirt)
    yield daemon
    daemon.stop()


def uptime(message: vm_pb2.Vm) -> float:
    return message.status.guest.uptime_seconds if message.status.HasField("guest") else 0.0


async def test_a_renewal_while_a_guest_runs_drops_nothing(
    controller: Daemon, hostd: Daemon, guest_image: GuestImage, system_libvirt: str
) -> None:
    vm_id = ""
    async with controller.client() as client, hostd.channel() as host_channel:
        watch = VmEvents.of_stub(vm_grpc.VmServiceStub(client.channel), within=WAIT)
        events = HostEvents.of_stub(agent_grpc.HostAgentServiceStub(host_channel), WAIT)
        try:
            vm_id = (await client.vms.create(VM_NAME, guest_spec(guest_image))).id
            await client.vms.start(vm_id)
            up = await client.vms.wait_for(vm_id, S.UP, timeout=WAIT)
            await watch.next_vm(vm_id, lambda v: uptime(v) > 0, "a guest report", within=WAIT)
            assert guest_reported(await client.vms.get(vm_id)), up
            assert await host_state(client, "h") == vp.HostState.UP

            # Renewals come every ~27 s: wait for one while the guest is UP.
            serial = await served_serial(hostd)

            async def steady() -> None:
                assert await host_state(client, "h") == vp.HostState.UP
                vm = await client.vms.get(vm_id)
                assert vm.status.state == S.UP, vm.status
                assert vm.status.host_id == hostd.host_id

            await renewed_while(lambda: served_serial(hostd), serial, steady, RENEWED_WITHIN)
            assert certificate(hostd).serial_number != serial
            assert named_host(hostd) == hostd.host_id

            # The guest goes on reporting, from the same boot, on both streams
            # opened before the renewal.
            renewed_at, host_renewed_at = watch.mark(), events.mark()
            last = max(
                (uptime(m.vm) for m in watch.events[:renewed_at] if m.vm.id == vm_id), default=0.0
            )
            # A full report, asked through the controller over its channel to
            # the renewed host (partial reports leave the uptime out).
            await client.vms.refresh_guest_report(vm_id)
            await watch.next_vm(
                vm_id,
                lambda v: v.status.state == vm_pb2.Vm.STATE_UP and uptime(v) > last,
                "a guest report after the renewal, on the WatchVms opened before it",
                since=renewed_at,
                within=REPORTED_WITHIN,
            )
            await events.until(
                "a guest report after the renewal, on the WatchEvents opened before it",
                lambda: events.up_reports(vm_id, host_renewed_at),
            )
            assert not watch._task.done(), "the controller's WatchVms stream ended"
            assert not events._task.done(), "hostd's WatchEvents stream ended"
            states = watch.states(vm_id)
            assert vm_pb2.Vm.STATE_DOWN not in states[states.index(vm_pb2.Vm.STATE_UP) :], states
            assert (await client.vms.get(vm_id)).status.state == S.UP
        finally:
            await watch.close()
            await events.close()
            if vm_id:
                with contextlib.suppress(vp.ClientError):
                    await client.vms.stop(vm_id)
                await asyncio.to_thread(remove_domains, system_libvirt, [vm_id])
