"""The guest channel: what an idle agent costs, how soon it reports, and what
reports cost hostd.

(a) boot → first full report: hostd's CreateVm of a real guest until the
    first guest report event carrying the agent's observations (median of
    the rounds, one guest at a time);
(b) bytes per minute an idle real guest sends after its first report,
    counted by hostd on the channel (GetVmGuestReport's statistics) over a
    window, with the default 5 s heartbeat;
(c) hostd CPU per 100 reports/s: a real hostd process (libvirt's test
    driver, so no guest is booted) whose channels are unix sockets served
    by fake agents speaking the real protocol — 10 VMs, 10 partial reports a
    second each (network and filesystems changed), plus 1 s heartbeats; the
    CPU time hostd's process used over the window, per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
import uuid
from pathlib import Path

from virtplane.v1 import guest_channel_pb2 as gc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.layout import StateLayout
from tests.support.real import GuestImage
from tests.support.stack import Daemon, start_hostd
from virtplane_common.framing import FrameDecoder, encode

URI = "qemu:///system"
TIMEOUT = 300.0
FAKE_VMS = 10
REPORTS_PER_VM = 10.0
"""FAKE_VMS times REPORTS_PER_VM: 100 reports a second."""


def _config(image: GuestImage, name: str) -> pb.VmConfig:
    return pb.VmConfig(
        vm_id=str(uuid.uuid4()),
        name=name,
        spec=vm_pb2.VmSpec(
            vcpus=1,
            memory_mib=256,
            boot=vm_pb2.BootSource(
                kernel_path=image.kernel, initrd_path=image.initrd, cmdline=image.cmdline
            ),
            nics=[vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)],
        ),
    )


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def first_report(
    stub: pb_grpc.HostAgentServiceAsyncStub, after: int, vm_id: str
) -> pb.HostEvent:
    """The VM's first guest report event after sequence after (within TIMEOUT)."""
    call = stub.WatchEvents(pb.WatchEventsRequest(after_sequence=after))
    try:
        async with asyncio.timeout(TIMEOUT):
            async for reply in call:
                event = reply.event
                if (
                    event.WhichOneof("payload") == "guest_report"
                    and event.guest_report.vm_id == vm_id
                    and event.guest_report.guest.HasField("observed_time")
                ):
                    return event
    finally:
        call.cancel()
    raise RuntimeError(f"no report from {vm_id}")


async def _real_guests(
    image: GuestImage, workdir: Path, rounds: int, idle: float
) -> dict[str, float]:
    (workdir / "real").mkdir()
    hostd = start_hostd(workdir / "real", URI)
    results: dict[str, float] = {}
    try:
        async with hostd.channel() as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            boots: list[float] = []
            for n in range(rounds):
                config = _config(image, f"bench-report-{n}")
                listed = await stub.ListVms(pb.HostAgentServiceListVmsRequest())
                watching = asyncio.create_task(first_report(stub, listed.sequence, config.vm_id))
                await asyncio.sleep(0.2)  # the watch is open
                start = time.monotonic()
                await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
                await watching
                boots.append(time.monotonic() - start)
                if n == 0:
                    results.update(await _idle_bytes(stub, config.vm_id, idle))
                await stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
            results["boot_to_first_full_report_median_s"] = statistics.median(boots)
            results["boot_to_first_full_report_max_s"] = max(boots)
            results["boots"] = float(len(boots))
    finally:
        hostd.stop()
    return results


async def _idle_bytes(
    stub: pb_grpc.HostAgentServiceAsyncStub, vm_id: str, window: float
) -> dict[str, float]:
    request = pb.HostAgentServiceGetVmGuestReportRequest(vm_id=vm_id)
    await asyncio.sleep(15)  # late first facts (the resolver's FQDN, DHCP) settle
    before = (await stub.GetVmGuestReport(request)).channel
    await asyncio.sleep(window)
    after = (await stub.GetVmGuestReport(request)).channel
    per_minute = 60.0 / window
    return {
        "idle_bytes_per_minute": (after.bytes_received - before.bytes_received) * per_minute,
        "idle_messages_per_minute": (after.messages_received - before.messages_received)
        * per_minute,
        "idle_window_s": window,
    }


class FakeAgent:
    """The guest end of one channel: speaks the real protocol over its unix socket."""

    def __init__(self, path: Path, n: int) -> None:
        self.path = path
        self.n = n
        self.sent = 0
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, str(self.path))

    def _frame(self, sequence: int, **body: object) -> bytes:
        message = gc.GuestMessage(
            sequence=sequence, agent_instance=f"bench-{self.n}", sent_unix_nanos=time.time_ns(),
            **body,  # type: ignore[arg-type]
        )  # fmt: skip
        return encode(message.SerializeToString())

    def _report(self, k: int) -> gc.GuestReport:
        return gc.GuestReport(
            network=gc.NetworkSection(
                interfaces=[
                    gc.NetworkInterface(
                        name="eth0",
                        mac_address="52:54:00:12:34:56",
                        ipv4_addresses=[f"10.0.{k % 250}.{self.n + 2}/24"],
                        ipv6_addresses=["fe80::5054:ff:fe12:3456/64"],
                    )
                ],
                content_hash=f"{k:016x}",
            ),
            filesystems=gc.FilesystemsSection(
                filesystems=[
                    gc.Filesystem(
                        mount_point="/",
                        type="ext4",
                        device="/dev/vda1",
                        total_bytes=20 << 30,
                        used_bytes=(5 << 30) + (k << 20),
                    )
                ],
                content_hash=f"{k:016x}",
            ),
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):  # hostd hangs up when the VM goes
            await self._talk(reader, writer)

    async def _talk(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        hello = gc.GuestHello(min_version=1, max_version=1, heartbeat_interval_ms=1000)
        writer.write(self._frame(1, hello=hello))
        while True:  # wait for the host's VersionChoice
            data = await reader.read(65536)
            if not data:
                return
            if any(
                gc.HostMessage.FromString(p).WhichOneof("body") == "version_choice"
                for p in decoder.feed(data)
            ):
                break
        full = gc.GuestReport(full=True, system=gc.SystemSection(hostname=f"bench-{self.n}"))
        writer.write(self._frame(2, report=full))
        self.ready.set()
        sequence, k = 2, 0
        period = 1.0 / REPORTS_PER_VM
        next_at = time.monotonic()
        while True:
            k += 1
            sequence += 1
            writer.write(self._frame(sequence, report=self._report(k)))
            self.sent += 1
            if k % int(REPORTS_PER_VM) == 0:
                sequence += 1
                beat = gc.Heartbeat(uptime_seconds=float(k), free_memory_kib=100_000)
                writer.write(self._frame(sequence, heartbeat=beat))
            await writer.drain()
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def hostd_cpu(workdir: Path, window: float) -> dict[str, float]:
    state = workdir / "fake"
    state.mkdir()
    kernel = state / "vmlinux"
    kernel.write_bytes(b"never booted by the test driver")
    hostd: Daemon = start_hostd(state, "test:///default")
    layout = StateLayout(state / "hostd")
    agents: list[FakeAgent] = []
    try:
        async with hostd.channel() as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            configs = []
            for n in range(FAKE_VMS):
                config = pb.VmConfig(
                    vm_id=str(uuid.uuid4()),
                    name=f"bench-fake-{n}",
                    spec=vm_pb2.VmSpec(
                        vcpus=1, memory_mib=64, boot=vm_pb2.BootSource(kernel_path=str(kernel))
                    ),
                )
                agent = FakeAgent(layout.channel_socket(config.vm_id), n)
                await agent.start()
                agents.append(agent)
                configs.append(config)
            await asyncio.gather(
                *(
                    stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
                    for config in configs
                )
            )
            async with asyncio.timeout(60):
                await asyncio.gather(*(a.ready.wait() for a in agents))
            await asyncio.sleep(2)  # past the start
            pid = hostd.process.pid
            cpu, sent, start = _cpu_seconds(pid), sum(a.sent for a in agents), time.monotonic()
            await asyncio.sleep(window)
            elapsed = time.monotonic() - start
            cpu = _cpu_seconds(pid) - cpu
            rate = (sum(a.sent for a in agents) - sent) / elapsed
            reported = await stub.ListVms(pb.HostAgentServiceListVmsRequest())
            throttled = sum(
                v.guest.channel_state == vm_pb2.GuestInfo.CHANNEL_STATE_THROTTLED
                for v in reported.vms
            )
            for config in configs:
                await stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
    finally:
        for agent in agents:
            await agent.close()
        hostd.stop()
    return {
        "reports_per_second": rate,
        "hostd_cpu_percent_of_a_core": 100.0 * cpu / elapsed,
        "hostd_cpu_ms_per_100_reports": 1000.0 * cpu / elapsed * 100.0 / rate,
        "channels_throttled": float(throttled),
    }


def run(
    image: GuestImage, workdir: Path, rounds: int, idle_window: float = 60.0
) -> dict[str, float]:
    async def main() -> dict[str, float]:
        results = await hostd_cpu(workdir, window=20.0)
        results.update(await _real_guests(image, workdir, rounds, idle_window))
        return results

    return asyncio.run(main())
