"""hostd's own paths against raw libvirt on the same domain, on real guests.

- create: hostd's CreateVm (gRPC, a fresh start) until its RUNNING event
  arrives on WatchEvents, against a raw createXML of the domain XML hostd
  builds for the same configuration until libvirt's first event saying it
  runs (STARTED or RESUMED, what hostd's RUNNING comes from; they arrive
  before createXML returns, so the call's own duration is given too). Each
  round starts a new VM and destroys it after (not timed).
- hibernate: a booted 256 MiB guest hibernated through hostd (HibernateVm
  until SUSPENDED) and restored (CreateVm until RUNNING), against a raw
  libvirt save and restore of another booted guest of the same domain XML.

hostd runs as its own process (tests.support.stack.start_hostd), as in production.
Raw and hostd rounds alternate (raw, hostd, hostd, raw, ...), so that both
meet the same load (the machine is shared) and neither always goes first.
Medians over the rounds; ratios are hostd over raw.
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
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.layout import StateLayout
from tests.bench.start_path import URI, LibvirtEventLoop, raw_xml
from tests.support.real import GuestImage
from tests.support.stack import start_hostd
from tests.support.virt import remove_domains

S = pb.HostVm
MEMORY_MIB = 256
BOOT_TIMEOUT = 180.0
_RUNS = (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_RESUMED)


def _config(image: GuestImage, role: str) -> pb.VmConfig:
    vm_id = str(uuid.uuid4())
    return pb.VmConfig(
        vm_id=vm_id,
        name=f"bench-{role}-{vm_id[:8]}",
        spec=vm_pb2.VmSpec(
            vcpus=1,
            memory_mib=MEMORY_MIB,
            boot=vm_pb2.BootSource(
                kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline
            ),
            nics=[vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)],
        ),
    )


class _Watch:
    """hostd's events, followed from the start; waits for a VM's state."""

    def __init__(self, stub: pb_grpc.HostAgentServiceAsyncStub) -> None:
        self._call = stub.WatchEvents(pb.WatchEventsRequest())
        self._events = self._call.__aiter__()

    async def state(
        self, vm_id: str, state: S.State.ValueType, *, report: bool = False
    ) -> pb.HostEvent:
        """The next event that puts the VM in state (or, with report, its next guest report)."""
        async with asyncio.timeout(BOOT_TIMEOUT):
            while True:
                reply = await anext(self._events)
                event = reply.event
                which = event.WhichOneof("payload")
                if report and which == "guest_report" and event.guest_report.vm_id == vm_id:
                    return event
                if not report and which == "vm_state" and event.vm_state.vm_id == vm_id:
                    if event.vm_state.state == state:
                        return event
                    if event.vm_state.state == S.STATE_DOWN:
                        raise RuntimeError(f"VM {vm_id} went DOWN: {event.vm_state.message}")

    def close(self) -> None:
        self._call.cancel()


# -- create


def _raw_create(image: GuestImage, layout: StateLayout) -> tuple[float, float]:
    """createXML of the domain hostd would build: seconds until its first event saying
    it runs (what hostd's RUNNING comes from), and until the call returns. The
    domain is destroyed after."""
    LibvirtEventLoop.ensure()
    vm_id = str(uuid.uuid4())
    xml = raw_xml(image, layout, vm_id)
    conn = libvirt.open(URI)
    running = threading.Event()
    stamp: list[float] = []

    def on_event(_c: object, dom: libvirt.virDomain, event: int, _d: int, _o: object) -> None:
        if dom.UUIDString() == vm_id and event in _RUNS and not stamp:
            stamp.append(time.perf_counter())
            running.set()

    callback = conn.domainEventRegisterAny(
        None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_event, None
    )
    try:
        started = time.perf_counter()
        dom = conn.createXML(xml, 0)
        returned = time.perf_counter() - started
        running.wait(BOOT_TIMEOUT)
        dom.destroy()
        return stamp[0] - started, returned
    finally:
        conn.domainEventDeregisterAny(callback)
        conn.close()


async def _creates(
    image: GuestImage, address: str, layout: StateLayout, rounds: int
) -> tuple[list[tuple[float, float]], list[float]]:
    """Raw and hostd rounds in turn, so that both see the same load on the machine."""
    raw: list[tuple[float, float]] = []
    through_hostd: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.HostAgentServiceStub(channel)
        watch = _Watch(stub)
        try:
            for round_ in range(rounds * 2):
                if round_ % 4 in (0, 3):  # raw, hostd, hostd, raw, ...: no side always first
                    raw.append(await asyncio.to_thread(_raw_create, image, layout))
                    continue
                config = _config(image, "create")
                started = time.perf_counter()
                await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
                await watch.state(config.vm_id, S.STATE_RUNNING)
                through_hostd.append(time.perf_counter() - started)
                await stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
        finally:
            watch.close()
    return raw, through_hostd


def create(image: GuestImage, workdir: Path, rounds: int) -> dict[str, float]:
    layout = StateLayout(workdir / "raw")
    layout.prepare()
    hostd = start_hostd(workdir)
    try:
        raw, through_hostd = asyncio.run(_creates(image, hostd.address, layout, rounds))
    finally:
        hostd.stop()
    a = statistics.median(r[0] for r in raw)
    b = statistics.median(through_hostd)
    return {
        "rounds": rounds,
        "raw_createxml_to_running_event_s": a,
        "raw_createxml_call_s": statistics.median(r[1] for r in raw),
        "hostd_createvm_to_running_event_s": b,
        "hostd_over_raw_ratio": b / a,
    }


# -- hibernate and restore


def _raw_booted(image: GuestImage, layout: StateLayout) -> str:
    """A raw domain booted until its agent speaks; returns its UUID."""
    vm_id = str(uuid.uuid4())
    conn = libvirt.open(URI)
    try:
        conn.createXML(raw_xml(image, layout, vm_id), 0)
    finally:
        conn.close()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(layout.channel_socket(vm_id)))
        sock.settimeout(BOOT_TIMEOUT)
        sock.recv(1)
    return vm_id


def _raw_save_restore(vm_id: str, path: Path) -> float:
    conn = libvirt.open(URI)
    try:
        started = time.perf_counter()
        conn.lookupByUUIDString(vm_id).save(str(path))
        conn.restore(str(path))
        took = time.perf_counter() - started
    finally:
        conn.close()
        path.unlink(missing_ok=True)
    return took


async def _hibernations(
    image: GuestImage, address: str, layout: StateLayout, rounds: int
) -> tuple[list[float], list[float]]:
    """Boots a raw guest and one through hostd, then saves and restores each in turn."""
    raw: list[float] = []
    through_hostd: list[float] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.HostAgentServiceStub(channel)
        watch = _Watch(stub)
        config = _config(image, "hibernate")
        vm_id = config.vm_id
        raw_id = ""
        try:
            await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
            raw_id = await asyncio.to_thread(_raw_booted, image, layout)
            await watch.state(vm_id, S.STATE_RUNNING, report=True)  # booted, its agent talking
            for round_ in range(rounds * 2):
                if round_ % 4 in (0, 3):  # raw, hostd, hostd, raw, ...: no side always first
                    path = layout.root / "raw-save.img"
                    raw.append(await asyncio.to_thread(_raw_save_restore, raw_id, path))
                    continue
                started = time.perf_counter()
                await stub.HibernateVm(pb.HostAgentServiceHibernateVmRequest(vm_id=vm_id))
                await watch.state(vm_id, S.STATE_SUSPENDED)
                await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
                await watch.state(vm_id, S.STATE_RUNNING)
                through_hostd.append(time.perf_counter() - started)
        finally:
            watch.close()
            await stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm_id))
            if raw_id:
                await asyncio.to_thread(remove_domains, URI, [raw_id], undefine=False)
    return raw, through_hostd


def hibernate(image: GuestImage, workdir: Path, rounds: int) -> dict[str, float]:
    layout = StateLayout(workdir / "raw")
    layout.prepare()
    hostd = start_hostd(workdir)
    try:
        raw, through_hostd = asyncio.run(_hibernations(image, hostd.address, layout, rounds))
    finally:
        hostd.stop()
    a, b = statistics.median(raw), statistics.median(through_hostd)
    return {
        "rounds": rounds,
        "memory_mib": MEMORY_MIB,
        "raw_save_plus_restore_s": a,
        "hostd_hibernate_plus_restore_s": b,
        "hostd_over_raw_ratio": b / a,
    }
