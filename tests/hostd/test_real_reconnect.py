"""libvirtd restarted under a running hostd, with real guests (TCG).

The machine's libvirtd is shared and never restarted here: hostd runs on a
private libvirtd of the test's own (tests/hostd/private_libvirtd.py). Two
guests boot; libvirtd is stopped; while it is away, verbs are refused and
health says NOT_SERVING, and one guest's QEMU is killed; libvirtd starts
again. hostd must reconnect by itself, find the killed guest DOWN, keep the
other RUNNING, and follow its events again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import libvirt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd.builder import domain_name
from hostd.config import HostdConfig
from hostd.server import Hostd
from tests.hostd.guest_configs import guest_config
from tests.support.connect import TEST_HOST_ID, hostd_channel, new_identity
from tests.support.private_libvirtd import PrivateLibvirtd
from tests.support.real import IMAGE_ROOTS, GuestImage
from tests.support.waiting import until

S = pb.HostVm
TIMEOUT = 240.0
"""Generous: guests boot under TCG, several at once."""

pytestmark = pytest.mark.guest


@dataclass
class Rig:
    hostd: Hostd
    stub: pb_grpc.HostAgentServiceAsyncStub
    health: health_pb2_grpc.HealthStub
    libvirtd: PrivateLibvirtd
    kept: pb.VmConfig
    killed: pb.VmConfig

    def state(self, vm_id: str) -> S.State.ValueType:
        listed = {vm.vm_id: S.State.ValueType(vm.state) for vm in self.hostd.vms.list()}
        return listed.get(vm_id, S.STATE_DOWN)

    def states(self, vm_id: str, since: int = 0) -> list[pb.HostVm]:
        return [
            e.vm_state
            for e in self.hostd.journal.after(since)
            if e.WhichOneof("payload") == "vm_state" and e.vm_state.vm_id == vm_id
        ]

    async def serving(self) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
        request = health_pb2.HealthCheckRequest(service="virtplane.v1.HostAgentService")
        return (await self.health.Check(request)).status


@pytest.fixture(scope="module")
async def rig(guest_image: GuestImage, state_root: Path) -> AsyncIterator[Rig]:
    why = PrivateLibvirtd.usable()
    if why is not None:
        if os.environ.get("VIRTPLANE_REQUIRE_REAL") == "1":
            pytest.fail(why)
        pytest.skip(why)
    libvirtd = PrivateLibvirtd(state_root / "lv")
    await asyncio.to_thread(libvirtd.start)
    pki = new_identity(state_root / "s")
    hostd = Hostd(
        HostdConfig(
            listen="127.0.0.1:0",
            libvirt_uri=libvirtd.uri,
            state_dir=state_root / "s",
            reconnect_max_seconds=1.0,
            image_roots=IMAGE_ROOTS,
        )
    )
    channel: grpc.aio.Channel | None = None
    try:
        port = await hostd.start()
        channel = hostd_channel(f"127.0.0.1:{port}", pki, TEST_HOST_ID)
        rig = Rig(
            hostd,
            pb_grpc.HostAgentServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
            libvirtd,
            guest_config(guest_image, "reconnect-kept"),
            guest_config(guest_image, "reconnect-killed"),
        )
        for config in (rig.kept, rig.killed):
            await rig.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        for config in (rig.kept, rig.killed):
            await until(
                lambda c=config: rig.state(c.vm_id) == S.STATE_RUNNING,
                what=f"{config.name} RUNNING",
                within=TIMEOUT,
            )
        yield rig
    finally:
        with contextlib.suppress(Exception):
            await asyncio.gather(*(hostd.vms.destroy(vm.vm_id) for vm in hostd.vms.list()))
        if channel is not None:
            await channel.close(None)
        await hostd.stop(grace=1)
        await asyncio.to_thread(libvirtd.stop)


def _suspend(uri: str, vm_id: str, pause: bool) -> None:
    """Pauses or resumes a domain behind hostd's back: only its events can tell hostd."""
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByUUIDString(vm_id)
        if pause:
            dom.suspend()
        else:
            dom.resume()
    finally:
        conn.close()


async def test_libvirtd_restarted_under_a_running_hostd(rig: Rig) -> None:
    kept, killed = rig.kept.vm_id, rig.killed.vm_id
    qemu = rig.libvirtd.qemu_pid(domain_name(rig.killed.name))
    assert await rig.serving() == health_pb2.HealthCheckResponse.SERVING
    since = rig.hostd.journal.last_sequence

    await asyncio.to_thread(rig.libvirtd.stop_libvirtd)
    await until(
        lambda: bool(rig.hostd.vms.hypervisor_unreachable), what="libvirt lost", within=TIMEOUT
    )
    lost_at = time.monotonic()
    assert await rig.serving() == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=kept))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "is unreachable (libvirtd closed the connection); hostd is reconnecting" in (
        caught.value.details() or ""
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=rig.kept))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS  # the existing-VM check first
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rig.stub.GetHostStats(pb.HostAgentServiceGetHostStatsRequest())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    os.kill(qemu, signal.SIGKILL)  # a guest dies while nobody watches
    await asyncio.sleep(1.0)  # hostd keeps trying meanwhile
    await asyncio.to_thread(rig.libvirtd.start_libvirtd)

    await until(
        lambda: rig.state(killed) == S.STATE_DOWN, what="the killed VM DOWN", within=TIMEOUT
    )
    await until(
        lambda: not rig.hostd.vms.hypervisor_unreachable, what="libvirt found", within=TIMEOUT
    )
    print(f"\nlibvirtd: hostd back {time.monotonic() - lost_at:.1f} s after the loss")
    (down,) = rig.states(killed, since)
    assert (down.state, down.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_UNSPECIFIED)
    assert down.message == (
        "the domain is gone; libvirt was unreachable, so how it stopped is unknown"
    )
    assert rig.state(kept) == S.STATE_RUNNING
    assert rig.states(kept, since) == [], "the running VM did not flicker"
    assert await rig.serving() == health_pb2.HealthCheckResponse.SERVING

    # Events resume: a pause and a resume made behind hostd's back show up.
    mark = rig.hostd.journal.last_sequence
    await asyncio.to_thread(_suspend, rig.libvirtd.uri, kept, True)
    await until(
        lambda: rig.state(kept) == S.STATE_PAUSED, what="PAUSED from its event", within=TIMEOUT
    )
    await asyncio.to_thread(_suspend, rig.libvirtd.uri, kept, False)
    await until(
        lambda: rig.state(kept) == S.STATE_RUNNING, what="RUNNING from its event", within=TIMEOUT
    )
    assert [s.state for s in rig.states(kept, mark)] == [S.STATE_PAUSED, S.STATE_RUNNING]
    # And verbs work again.
    paused = await rig.stub.PauseVm(pb.HostAgentServicePauseVmRequest(vm_id=kept))
    assert paused.vm.state == S.STATE_PAUSED
