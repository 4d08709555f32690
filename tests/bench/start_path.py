"""The start path, raw libvirt against the whole stack, on the same guest.

(a) raw createXML → STARTED event; (b) StartVm → POWERING_UP seen by a
WatchVms client; (c) raw createXML → first guest message read straight from
the channel socket; (d) StartVm → UP (first guest report) seen by WatchVms.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path

import grpc
import libvirt
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from hostd import builder, convert, domxml
from hostd.defaults import with_defaults
from hostd.layout import StateLayout
from hostd.virt_type import detect_virt_type
from tests.support.real import GuestImage
from tests.support.stack import start_controller, start_hostd

URI = "qemu:///system"
S = vm_pb2.Vm


def _spec(image: GuestImage) -> vm_pb2.VmSpec:
    return vm_pb2.VmSpec(
        vcpus=1,
        memory_mib=256,
        boot=vm_pb2.BootSource(
            kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline
        ),
        nics=[vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)],
    )


class LibvirtEventLoop:
    """libvirt's default event loop on a thread, so STARTED events arrive."""

    _started = False

    @classmethod
    def ensure(cls) -> None:
        if cls._started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True, name="libvirt-events").start()
        cls._started = True


def raw_xml(image: GuestImage, layout: StateLayout, vm_id: str) -> str:
    """The domain XML hostd would create for the benchmark's guest."""
    config = agent_pb2.VmConfig(vm_id=vm_id, name=f"bench-raw-{vm_id[:8]}", spec=_spec(image))
    filled = with_defaults(convert.config_from_proto(config))  # as hostd's create path does
    return domxml.to_xml(builder.build_domain(filled, detect_virt_type("auto"), layout))


def raw_round(image: GuestImage, workdir: Path) -> tuple[float, float]:
    """One raw boot: seconds to STARTED, and to the first guest bytes."""
    LibvirtEventLoop.ensure()
    layout = StateLayout(workdir / "raw")
    layout.prepare()
    vm_id = str(uuid.uuid4())
    xml = raw_xml(image, layout, vm_id)
    conn = libvirt.open(URI)
    started = threading.Event()
    stamp: list[float] = []

    def on_event(_c: object, dom: libvirt.virDomain, event: int, _d: int, _o: object) -> None:
        if dom.UUIDString() == vm_id and event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            stamp.append(time.perf_counter())
            started.set()

    cb = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None)
    try:
        t0 = time.perf_counter()
        dom = conn.createXML(xml, 0)
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(layout.channel_socket(vm_id)))
                sock.settimeout(120)
                sock.recv(1)
                t_guest = time.perf_counter()
            started.wait(30)
            return stamp[0] - t0, t_guest - t0
        finally:
            dom.destroy()
    finally:
        conn.domainEventDeregisterAny(cb)
        conn.close()


async def stack_rounds(image: GuestImage, workdir: Path, rounds: int) -> list[tuple[float, float]]:
    """Boots through StartVm; seconds to POWERING_UP and to UP, per round."""
    hostd = start_hostd(workdir)
    controller = start_controller(workdir)
    try:
        async with grpc.aio.insecure_channel(controller.address) as channel:
            hosts = host_grpc.HostServiceStub(channel)
            vms = vm_grpc.VmServiceStub(channel)
            await hosts.AddHost(host_api.AddHostRequest(name="bench", address=hostd.address))
            created = await vms.CreateVm(vm_api.CreateVmRequest(name="bench", spec=_spec(image)))
            vm_id = created.vm.id
            results = []
            for _ in range(rounds):
                results.append(await _stack_round(vms, vm_id))
                await vms.StopVm(vm_api.StopVmRequest(vm=vm_id))
            return results
    finally:
        controller.stop()
        hostd.stop()


async def _stack_round(vms: vm_grpc.VmServiceAsyncStub, vm_id: str) -> tuple[float, float]:
    call = vms.WatchVms(vm_api.WatchVmsRequest())
    async for msg in call:
        if msg.kind == vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE:
            break
    t0 = time.perf_counter()
    await vms.StartVm(vm_api.StartVmRequest(vm=vm_id))
    powering_up = up = 0.0
    async with asyncio.timeout(120):
        async for msg in call:
            if msg.vm.id != vm_id:
                continue
            state = msg.vm.status.state
            now = time.perf_counter() - t0
            if state in (S.STATE_POWERING_UP, S.STATE_UP) and not powering_up:
                powering_up = now
            if state == S.STATE_UP:
                up = now
                break
    call.cancel()
    return powering_up, up


def run(image: GuestImage, workdir: Path, rounds: int) -> dict[str, float]:
    raw = [raw_round(image, workdir) for _ in range(rounds)]
    stack = asyncio.run(stack_rounds(image, workdir, rounds))
    a = statistics.median(r[0] for r in raw)
    c = statistics.median(r[1] for r in raw)
    b = statistics.median(s[0] for s in stack)
    d = statistics.median(s[1] for s in stack)
    return {
        "rounds": rounds,
        "a_raw_create_to_started_s": a,
        "b_startvm_to_powering_up_s": b,
        "b_over_a_ratio": b / a,
        "c_raw_create_to_first_guest_message_s": c,
        "d_startvm_to_first_guest_report_up_s": d,
        "d_over_c_ratio": d / c,
    }
