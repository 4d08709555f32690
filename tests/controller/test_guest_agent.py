"""The guest agent as the controller sees it, fast: a controller, a real hostd
on libvirt's test driver, and a fake agent on the VM's channel socket (where
libvirt would bind the virtio-serial port) speaking the real protocol.

Refresh and the raw last report through the controller (also after the
controller restarted), a flooding agent THROTTLED, a silent one
NOT_RESPONDING with its facts kept. The same on real guests:
tests/e2e/test_guest_agent.py and tests/hostd/test_real_hostile_guest.py.
"""

from __future__ import annotations

# Raw stubs: this module checks GetVmGuestInfo's reply and status codes as
# sent; a VM's state is awaited on virtplane_client's watch.
import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy.orm import Session
from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from controller import convert
from controller.app import Controller
from db.models import Vm
from hostd.layout import StateLayout
from tests.support.controller_rig import admin_channel, config
from tests.support.events import vm_until
from tests.support.fake_guest import FakeGuest
from tests.support.rig_hosts import next_host_id, start_test_hostd
from tests.support.stack import Daemon
from tests.support.waiting import TIMEOUT, until
from virtplane_common.framing import encode


@dataclass
class Rig:
    workdir: Path
    database_url: str
    hostd: Daemon
    guest: FakeGuest
    vm_id: str
    controller: Controller | None = None
    vms: vm_grpc.VmServiceAsyncStub | None = None
    channel: grpc.aio.Channel | None = None
    client: vp.AsyncClient | None = None

    async def start_controller(self) -> vm_grpc.VmServiceAsyncStub:
        self.controller = Controller(config(self.database_url))
        await self.controller.start()
        self.channel = admin_channel(self.controller)
        self.vms = vm_grpc.VmServiceStub(self.channel)
        self.client = vp.AsyncClient(channel=self.channel)  # closed with the channel
        return self.vms

    async def stop_controller(self) -> None:
        if self.channel is not None:
            await self.channel.close(None)
        if self.controller is not None:
            await self.controller.stop(grace=0)
        self.controller = self.channel = self.vms = self.client = None

    async def state(self, state: vp.VmState) -> vp.Vm:
        """The VM once the client's watch shows it in state."""
        assert self.client is not None
        return await self.client.vms.wait_for(self.vm_id, state, timeout=TIMEOUT)

    async def guest_until(self, check: Callable[[vp.GuestInfo], object]) -> vp.Vm:
        """The VM once the client's watch shows a guest report check accepts."""
        assert self.client is not None
        return await vm_until(
            self.client,
            self.vm_id,
            lambda v: v.status.guest is not None and check(v.status.guest),
            TIMEOUT,
        )

    async def info(self) -> vm_api.GetVmGuestInfoResponse:
        assert self.vms is not None
        request = vm_api.GetVmGuestInfoRequest(vm=self.vm_id, include_raw_report=True)
        return await self.vms.GetVmGuestInfo(request)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def rig(workdir: Path, database_url: str) -> AsyncIterator[Rig]:
    (workdir / "vmlinuz").write_bytes(b"")  # the test driver boots nothing
    hostd = start_test_hostd(workdir)
    rig = Rig(workdir, database_url, hostd, FakeGuest(Path()), "")
    try:
        vms = await rig.start_controller()
        assert rig.channel is not None
        hosts = host_grpc.HostServiceStub(rig.channel)
        with next_host_id(hostd.host_id):
            await hosts.AddHost(host_api.AddHostRequest(name="h1", address=hostd.address))
        spec = vm_pb2.VmSpec(
            vcpus=1, memory_mib=128, boot=vm_pb2.BootSource(kernel_path=str(workdir / "vmlinuz"))
        )
        created = await vms.CreateVm(vm_api.CreateVmRequest(name="v1", spec=spec))
        rig.vm_id = created.vm.id
        rig.guest = FakeGuest(StateLayout(workdir / "hostd").channel_socket(rig.vm_id))
        rig.guest.path.parent.mkdir(parents=True, exist_ok=True)
        await rig.guest.start()
        await vms.StartVm(vm_api.StartVmRequest(vm=rig.vm_id))
        await rig.guest.next_message("HostHello")
        hello = gc.GuestHello(
            min_version=1, max_version=1, heartbeat_interval_ms=200, agent_version="7.1"
        )
        await rig.guest.send(gc.GuestMessage(hello=hello))
        await rig.guest.next_message("VersionChoice")
        await rig.guest.send(_report("first"))
        await rig.state(vp.VmState.UP)
        yield rig
    finally:
        await rig.stop_controller()
        await rig.guest.close()
        hostd.stop()


def _report(hostname: str) -> gc.GuestMessage:
    return gc.GuestMessage(
        report=gc.GuestReport(
            full=True,
            system=gc.SystemSection(hostname=hostname, cpus=2),
            os=gc.OsSection(name="Debian GNU/Linux", version="12"),
        )
    )


async def test_refresh_and_the_raw_report_also_after_a_controller_restart(rig: Rig) -> None:
    assert rig.vms is not None
    await rig.vms.RefreshVmGuestInfo(vm_api.RefreshVmGuestInfoRequest(vm="v1"))
    asked = await rig.guest.next_message("Refresh")
    assert asked.WhichOneof("body") == "refresh"
    await rig.guest.send(_report("after\x1b[2Jrefresh"))
    info = await until(rig.info, lambda i: i.guest.hostname == "after[2Jrefresh")
    raw = json.loads(info.raw_report.report_json)
    assert raw["report"]["system"]["hostname"] == "after\x1b[2Jrefresh"  # as the agent sent it
    assert raw["agentInstance"] == "fake"
    assert info.raw_report.host_id and info.raw_report.unavailable_reason == ""

    await rig.stop_controller()
    await rig.start_controller()
    again = await until(rig.info, lambda i: bool(i.raw_report.report_json))
    assert again.raw_report.report_json == info.raw_report.report_json
    assert again.guest.hostname == "after[2Jrefresh"


async def test_a_flooding_agent_is_throttled_and_a_silent_one_goes_stale(rig: Rig) -> None:
    # thousands of tiny messages: far over the 20/s message budget
    beat = gc.GuestMessage(heartbeat=gc.Heartbeat(uptime_seconds=5.0, free_memory_kib=1000))
    await rig.guest.send_raw(encode(beat.SerializeToString()) * 3000)
    throttled = await rig.guest_until(lambda g: g.channel_state is vp.ChannelState.THROTTLED)
    assert throttled.status.guest is not None
    assert "messages dropped (limit 20/s)" in throttled.status.guest.channel_message
    assert throttled.status.guest.hostname == "first"  # the facts stay
    facts = {f.name: json.loads(f.value_json) for f in (await rig.info()).facts}
    assert facts["agent"]["channel"]["state"] == "THROTTLED"

    # then silence: 3 heartbeat intervals (0.2 s each) later, NOT_RESPONDING
    stale = await rig.guest_until(lambda g: g.agent_state is vp.AgentState.NOT_RESPONDING)
    assert stale.status.state is vp.VmState.UP and stale.status.guest is not None
    assert (stale.status.guest.hostname, stale.status.guest.os_name) == (
        "first",
        "Debian GNU/Linux",
    )
    assert stale.status.guest.memory_free_kib == 1000  # from the heartbeats that got through
    facts = {f.name: f for f in (await rig.info()).facts}
    assert facts["hostname"].stale and json.loads(facts["hostname"].value_json) == "first"
    assert not facts["agent"].stale  # hostd's word on the agent is current
    # calm for 10 s: the channel is OK again
    calm = await rig.guest_until(lambda g: g.channel_state is vp.ChannelState.OK)
    assert calm.status.guest is not None and calm.status.guest.channel_message == ""
    await rig.guest.send(_report("back"))
    # The agent keeps beating: a VM's reports are written at most once a
    # second, the latest winning (controller.coalescer), so a silent
    # agent's moment of RESPONDING could be replaced before it is stored.
    beating = asyncio.create_task(_beat(rig.guest, beat))
    try:
        fresh = await rig.guest_until(
            lambda g: g.hostname == "back" and g.agent_state is vp.AgentState.RESPONDING
        )
    finally:
        beating.cancel()
    assert fresh.status.guest is not None


async def _beat(guest: FakeGuest, beat: gc.GuestMessage) -> None:
    while True:
        await guest.send(beat)
        await asyncio.sleep(0.1)


async def test_the_agent_version_is_kept_for_the_next_start_and_sent_to_the_host(rig: Rig) -> None:
    assert rig.controller is not None and rig.vms is not None

    def stored(session: Session) -> tuple[str, str]:
        vm = session.get_one(Vm, rig.vm_id)
        return vm.guest_agent_version, convert.vm_config(vm).guest_agent_version

    assert await rig.controller.db.run(stored) == ("7.1", "7.1")
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=rig.vm_id))
    # Guest facts go with the run; the version the host should await stays.
    await rig.state(vp.VmState.DOWN)
    assert await rig.controller.db.run(stored) == ("7.1", "7.1")
