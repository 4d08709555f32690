"""The start path, raw libvirt against the whole stack, on the same guest.

(a) raw createXML → STARTED event; (b) StartVm → POWERING_UP seen by a
WatchVms client; (c) raw createXML → first guest message read straight from
the channel socket; (d) StartVm → UP (first guest report) seen by WatchVms.

Raw and stack boots are taken in turn on one controller and hostd, so each
pair sees the same machine. (a) and (b) take half a second and vary by a
few hundred milliseconds from one boot to the next under TCG (QEMU's own
start time falls in two bands, about 350 and 480 ms here, whichever path
asks for it), so they get their own, shorter rounds (the domain is destroyed
once started), five times as many as the full boots that (c) and (d) need:
with fewer, the medians flip between the bands.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path

import libvirt
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from hostd import builder, convert, domxml
from hostd.defaults import with_defaults
from hostd.layout import StateLayout
from hostd.virt_type import detect_virt_type
from tests.support.real import GuestImage
from tests.support.stack import start_controller, start_host
from virtplane_client import AsyncClient, BootSource, ChangeKind, Nic, NicKind, VmChange, VmSpec
from virtplane_client import VmState as S
from virtplane_client.convert import spec_message

URI = "qemu:///system"
# The calls the benchmark makes carry no request_id, as a client that does
# not retry sends them.
NO_KEY = ""


def _spec(image: GuestImage) -> VmSpec:
    return VmSpec(
        vcpus=1,
        memory_mib=256,
        boot=BootSource(kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline),
        nics=(Nic(name="nic0", kind=NicKind.USER),),
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
    spec = spec_message(_spec(image))
    config = agent_pb2.VmConfig(vm_id=vm_id, name=f"bench-raw-{vm_id[:8]}", spec=spec)
    filled = with_defaults(convert.config_from_proto(config))  # as hostd's create path does
    return domxml.to_xml(builder.build_domain(filled, detect_virt_type("auto"), layout))


def raw_round(image: GuestImage, workdir: Path, *, to_guest: bool = True) -> tuple[float, float]:
    """One raw boot: seconds to STARTED, and to the first guest bytes (0.0
    without to_guest: the domain is destroyed once started)."""
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
            if not to_guest:
                started.wait(30)
                return stamp[0] - t0, 0.0
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


async def interleaved_rounds(
    image: GuestImage, workdir: Path, rounds: int, *, to_guest: bool
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """rounds raw and StartVm boots taken in turn, on one controller and
    hostd; to_guest: each waits for the guest's first message or report."""
    controller = start_controller(workdir, plaintext_hosts=False)
    try:
        hostd = await asyncio.to_thread(start_host, controller, workdir, "bench")
        try:
            async with controller.client() as vp:
                vm = await vp.vms.create("bench", _spec(image), request_id=NO_KEY)
                raw: list[tuple[float, float]] = []
                stack: list[tuple[float, float]] = []
                for _ in range(rounds):
                    raw.append(
                        await asyncio.to_thread(raw_round, image, workdir, to_guest=to_guest)
                    )
                    stack.append(await _stack_round(vp, vm.id, to_guest=to_guest))
                    await vp.vms.stop(vm.id, request_id=NO_KEY)
                return raw, stack
        finally:
            hostd.stop()
    finally:
        controller.stop()


async def _stack_round(vp: AsyncClient, vm_id: str, *, to_guest: bool) -> tuple[float, float]:
    changes = vp.vms.watch()
    async with contextlib.aclosing(changes):
        async for change in changes:
            if change.kind is ChangeKind.SNAPSHOT_COMPLETE:
                break
        t0 = time.perf_counter()
        await vp.vms.start(vm_id, request_id=NO_KEY)
        powering_up = up = 0.0
        async with asyncio.timeout(120):
            async for change in changes:
                state = _state(change, vm_id)
                now = time.perf_counter() - t0
                if state in (S.POWERING_UP, S.UP) and not powering_up:
                    powering_up = now
                if state is S.UP or (powering_up and not to_guest):
                    up = now
                    break
    return powering_up, up


def _state(change: VmChange, vm_id: str) -> S | None:
    """The state change shows vm_id in; None when it is about another VM."""
    if change.vm is None or change.vm.id != vm_id:
        return None
    return change.vm.status.state


def run(image: GuestImage, workdir: Path, rounds: int) -> dict[str, float]:
    raw, stack = asyncio.run(interleaved_rounds(image, workdir, rounds, to_guest=True))
    starts = 5 * rounds
    (workdir / "starts").mkdir()
    raw_starts, stack_starts = asyncio.run(
        interleaved_rounds(image, workdir / "starts", starts, to_guest=False)
    )
    a = statistics.median(r[0] for r in raw_starts)
    b = statistics.median(s[0] for s in stack_starts)
    c = statistics.median(r[1] for r in raw)
    d = statistics.median(s[1] for s in stack)
    return {
        "rounds": rounds,
        "start_rounds": starts,
        # Clients -> controller: TLS with a bearer token, authentication on.
        "tls": 1,
        "auth": 1,
        # Controller -> hostd: mutual TLS, the hostd's identity from the controller's CA.
        "host_mtls": 1,
        "a_raw_create_to_started_s": a,
        "b_startvm_to_powering_up_s": b,
        "b_over_a_ratio": b / a,
        "c_raw_create_to_first_guest_message_s": c,
        "d_startvm_to_first_guest_report_up_s": d,
        "d_over_c_ratio": d / c,
    }
