"""Live migration of a 256 MiB guest between two hostd, each with its own libvirtd.

Host A is a hostd on qemu:///system, host B one on a second libvirtd on this
machine (tools/second-libvirtd.sh). One guest boots on A, then moves A→B,
B→A, … one round per move. Per round:

- landed: MigrateVm called on the source → the VM RUNNING on the
  destination, seen through WatchEvents (it runs there from then on);
- wall: MigrateVm called → the VM also DOWN (MIGRATED) on the source. On
  these machines the source's domain is reported stopped ~1.5 s after it
  landed: libvirt waits for the old QEMU to be reaped (../shared/GUEST.md,
  "destroy"), in the raw baseline too;
- job: the hypervisor's own migration time (libvirt's time_elapsed);
- downtime: how long the guest was stopped at the switch-over, as libvirt
  measured it (read on the destination, GetMigrationProgress.downtime_ms);
- landed → report: the VM RUNNING on the destination → the guest agent's
  first report there (its channel reconnected).

The memory goes over QEMU's native TLS (`tls: 1`): each host has a host id
and its pair from one test CA where its QEMU reads it
(tests.support.migration_rig), and MigrateVm names the destination's id.

The raw baseline migrates the same domain (hostd's XML) between the same two
libvirtd with libvirt-python alone, with the same TLS flags
(VIR_MIGRATE_TLS, VIR_MIGRATE_PARAM_TLS_DESTINATION the destination's DNS
name): migrate3 called → returned (the domain has left the source when it
returns): comparable to wall. The same without TLS is kept for reference
(raw_migrate3_plaintext_s): what TLS itself costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
import uuid
from pathlib import Path

import grpc
import libvirt
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd import builder, convert, domxml
from hostd.defaults import with_defaults
from hostd.hypervisor import MigrationTarget
from hostd.layout import StateLayout
from hostd.migration_xml import retarget
from hostd.virt_type import detect_virt_type
from tests.support.migration_rig import Identity, identity, start_hostd_for
from tests.support.pki import TestPki
from tests.support.real import GuestImage
from tests.support.stack import Daemon, free_port
from tests.support.virt import second_libvirtd
from virtplane_common.tls.names import host_dns_name

SYSTEM_URI = "qemu:///system"
TIMEOUT = 240.0
S = pb.HostVm


class _Events:
    """One hostd's WatchEvents, buffered, with a wait for the next matching event."""

    def __init__(self, stub: pb_grpc.HostAgentServiceAsyncStub) -> None:
        self._queue: asyncio.Queue[pb.HostEvent] = asyncio.Queue()
        self._task = asyncio.create_task(self._follow(stub))

    async def _follow(self, stub: pb_grpc.HostAgentServiceAsyncStub) -> None:
        async for response in stub.WatchEvents(pb.WatchEventsRequest()):
            self._queue.put_nowait(response.event)

    def drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def state(self, vm_id: str, state: S.State.ValueType) -> float:
        """Waits for the VM to reach state; returns when it was seen (perf_counter)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                event = await self._queue.get()
                if event.WhichOneof("payload") != "vm_state" or event.vm_state.vm_id != vm_id:
                    continue
                if event.vm_state.state == state:
                    return time.perf_counter()
                if event.vm_state.state == S.STATE_DOWN:
                    raise RuntimeError(f"VM {vm_id} went DOWN: {event.vm_state.message}")

    async def report(self, vm_id: str) -> float:
        async with asyncio.timeout(TIMEOUT):
            while True:
                event = await self._queue.get()
                if event.WhichOneof("payload") == "guest_report" and (
                    event.guest_report.vm_id == vm_id
                ):
                    return time.perf_counter()

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _config(image: GuestImage) -> pb.VmConfig:
    vm_id = str(uuid.uuid4())
    return pb.VmConfig(
        vm_id=vm_id,
        name=f"bench-migrate-{vm_id[:8]}",
        spec=vm_pb2.VmSpec(
            vcpus=1,
            memory_mib=256,
            boot=vm_pb2.BootSource(
                kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline
            ),
            nics=[vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER)],
        ),
    )


async def _rounds(
    daemons: tuple[Daemon, Daemon], ids: tuple[str, str], image: GuestImage, rounds: int
) -> list[tuple[float, float, float, float, float]]:
    channels = [d.channel() for d in daemons]
    stubs = [pb_grpc.HostAgentServiceStub(c) for c in channels]
    events = [_Events(stub) for stub in stubs]
    config = _config(image)
    vm_id = config.vm_id
    here = 0
    try:
        await stubs[0].CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await events[0].report(vm_id)
        results = []
        for _ in range(rounds):
            there = 1 - here
            for e in events:
                e.drain()
            t0 = time.perf_counter()
            await stubs[here].MigrateVm(
                pb.HostAgentServiceMigrateVmRequest(
                    vm_id=vm_id,
                    destination_address=daemons[there].address,
                    destination_host_id=ids[there],
                )
            )
            landed, left = await asyncio.gather(
                events[there].state(vm_id, S.STATE_RUNNING),
                events[here].state(vm_id, S.STATE_DOWN),
            )
            reported = await events[there].report(vm_id)
            # libvirt's statistics of a migration are read on the destination.
            progress = (
                await stubs[there].GetMigrationProgress(
                    pb.HostAgentServiceGetMigrationProgressRequest(vm_id=vm_id)
                )
            ).progress
            results.append(
                (
                    landed - t0,
                    max(landed, left) - t0,
                    progress.elapsed_ms / 1000,
                    progress.downtime_ms / 1000,
                    reported - landed,
                )
            )
            here = there
        return results
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await stubs[here].DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm_id))
        for e in events:
            await e.stop()
        for channel in channels:
            await channel.close(None)


def _raw_rounds(
    hosts: tuple[Identity, Identity], image: GuestImage, workdir: Path, rounds: int, tls: bool
) -> list[float]:
    """Seconds per raw migrate3 of hostd's domain, moving back and forth; with
    tls, over QEMU's TLS as hostd migrates."""
    uris = (hosts[0].uri, hosts[1].uri)
    label = "tls" if tls else "plain"
    layouts = [StateLayout(workdir / f"raw-{label}-{name}") for name in ("a", "b")]
    for layout in layouts:
        layout.prepare()
    config = with_defaults(convert.config_from_proto(_config(image)))
    vm_id = config.vm_id
    virt_type = detect_virt_type("auto")
    conns = [libvirt.open(uri) for uri in uris]
    here = 0
    try:
        xml = domxml.to_xml(builder.build_domain(config, virt_type, layouts[0]))
        conns[0].createXML(xml, 0)
        with socket.socket(socket.AF_UNIX) as sock:  # the guest has booted once it speaks
            sock.connect(str(layouts[0].channel_socket(vm_id)))
            sock.settimeout(TIMEOUT)
            sock.recv(1)
        results = []
        for _ in range(rounds):
            there = 1 - here
            layout = layouts[there]
            target = MigrationTarget(
                hypervisor_uri=uris[there],
                migration_uri=f"tcp://127.0.0.1:{free_port()}",
                channel_socket=str(layout.channel_socket(vm_id)),
                console_log=str(layout.console_log(vm_id)),
                state_dir=str(layout.root),
            )
            dom = conns[here].lookupByUUIDString(vm_id)
            t0 = time.perf_counter()
            dest_xml = retarget(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE), target)
            params = {
                libvirt.VIR_MIGRATE_PARAM_URI: target.migration_uri,
                libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
            }
            flags = libvirt.VIR_MIGRATE_LIVE
            if tls:
                params[libvirt.VIR_MIGRATE_PARAM_TLS_DESTINATION] = host_dns_name(
                    hosts[there].host_id
                )
                flags |= libvirt.VIR_MIGRATE_TLS
            dom.migrate3(conns[there], params, flags)
            results.append(time.perf_counter() - t0)
            here = there
        return results
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conns[here].lookupByUUIDString(vm_id).destroy()
        for conn in conns:
            conn.close()


def run(image: GuestImage, workdir: Path, rounds: int) -> dict[str, float]:
    with second_libvirtd() as second_uri:
        pki = TestPki(workdir / "pki")
        hosts = identity(pki, SYSTEM_URI), identity(pki, second_uri)
        raw = _raw_rounds(hosts, image, workdir, rounds, tls=True)
        plain = _raw_rounds(hosts, image, workdir, rounds, tls=False)
        daemons: list[Daemon] = []
        try:
            for name, host in zip("ab", hosts, strict=True):
                folder = workdir / f"migration-{name}"
                folder.mkdir()
                folder.chmod(0o755)
                daemons.append(start_hostd_for(host, folder))
            ids = (hosts[0].host_id, hosts[1].host_id)
            results = asyncio.run(_rounds((daemons[0], daemons[1]), ids, image, rounds))
        finally:
            for daemon in daemons:
                daemon.stop()
    landed, wall, job, downtime, report = (
        statistics.median(r[i] for r in results) for i in range(5)
    )
    raw_wall = statistics.median(raw)
    return {
        "rounds": rounds,
        "guest_memory_mib": 256,
        "tls": 1,
        "raw_migrate3_s": raw_wall,
        "raw_migrate3_plaintext_s": statistics.median(plain),
        "migratevm_to_running_on_destination_s": landed,
        "migratevm_to_down_on_source_s": wall,
        "hypervisor_job_s": job,
        "downtime_ms": downtime * 1000,
        "downtime_max_ms": max(r[3] for r in results) * 1000,
        "landed_to_first_guest_report_s": report,
        "wall_over_raw_ratio": wall / raw_wall,
    }
