"""kill -9 of a hostd process in the middle of a create and of a hibernate, then a restart.

The scenario runs once for the module (real guests on qemu:///system): a
first hostd boots VM "saved"; then, at the same moment, it is asked to
hibernate it and to create VM "created", and is killed with SIGKILL as soon
as libvirt has the new domain and the save has begun. Meanwhile a domain
without hostd's metadata runs beside them, and a save cut off half-way (as a
crash of libvirtd would leave it) lies in the state directory. A second
hostd then starts on the same state directory; the tests check what it
found and what it did. A persistent definition a create killed between
defineXML and create would leave (the window is a few milliseconds: made
here with defineXML of the domain hostd builds) is there too.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd import convert, domxml
from hostd.builder import build_domain
from hostd.defaults import with_defaults
from hostd.identity import tls_files
from hostd.layout import StateLayout
from hostd.virt_type import detect_virt_type
from tests.hostd.guest_configs import guest_config
from tests.support.connect import TEST_HOST_ID, give_identity, hostd_channel
from tests.support.pki import TestPki
from tests.support.real import IMAGE_ROOTS, REPO, GuestImage
from tests.support.virt import domain_exists, remove_domains
from tests.support.waiting import until

S = pb.HostVm
TIMEOUT = 240.0
"""Generous: guests boot under TCG, several at once."""
_LISTENING = re.compile(r"hostd listening on [\d.]+:(\d+)")

pytestmark = pytest.mark.guest


def _saving(uri: str, vm_id: str) -> bool:
    """Whether libvirt runs a job on the VM's domain (its save), or has
    finished it (the domain is gone)."""
    conn = libvirt.open(uri)
    try:
        try:
            dom = conn.lookupByUUIDString(vm_id)
        except libvirt.libvirtError:
            return True
        try:
            return bool(dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE)
        except libvirt.libvirtError:
            return not dom.isActive()
    finally:
        conn.close()


class HostdProcess:
    """virtplane-hostd as its own process, as in production."""

    def __init__(self, uri: str, state_dir: Path, pki: TestPki) -> None:
        self.uri, self.state_dir, self.pki = uri, state_dir, pki
        if not tls_files(state_dir).complete():
            give_identity(pki, state_dir)
        self.log: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._port = 0
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> pb_grpc.HostAgentServiceAsyncStub:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hostd.main",
            "--listen=127.0.0.1:0",
            f"--libvirt-uri={self.uri}",
            f"--state-dir={self.state_dir}",
            *(f"--image-root={root}" for root in IMAGE_ROOTS),
            cwd=REPO,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_log())
        await until(lambda: self._port, what="hostd to listen", within=TIMEOUT, every=0.05)
        self.channel = hostd_channel(f"127.0.0.1:{self._port}", self.pki, TEST_HOST_ID)
        return pb_grpc.HostAgentServiceStub(self.channel)

    async def _read_log(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.log.append(text)
            if found := _LISTENING.search(text):
                self._port = int(found.group(1))

    async def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.channel is not None:
            await self.channel.close(None)
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signum)
            await self._process.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)


@dataclass
class Recovered:
    stub: pb_grpc.HostAgentServiceAsyncStub
    report: pb.RecoveryReport
    created: pb.VmConfig
    saved: pb.VmConfig
    uptime_when_saved: float
    broken_id: str
    defined: pb.VmConfig
    external_name: str
    state_dir: Path
    uri: str


def _start_external(uri: str, image: GuestImage, name: str) -> str:
    """A domain hostd did not make (no metadata), started paused: it never boots."""
    domain_id = str(uuid.uuid4())
    xml = f"""<domain type='qemu'><name>{name}</name><uuid>{domain_id}</uuid>
      <memory unit='MiB'>64</memory><vcpu>1</vcpu>
      <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{image.kernel}</kernel></os>
      <devices><controller type='usb' model='none'/><memballoon model='none'/></devices>
    </domain>"""
    conn = libvirt.open(uri)
    try:
        conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    finally:
        conn.close()
    return domain_id


def _define(uri: str, config: pb.VmConfig, state_dir: Path) -> None:
    """Defines, without starting, the domain hostd builds for config."""
    layout = StateLayout(state_dir)
    filled = with_defaults(convert.config_from_proto(config))
    domain = build_domain(filled, detect_virt_type("auto"), layout, request_id="d-1")
    xml = domxml.to_xml(domain)
    conn = libvirt.open(uri)
    try:
        conn.defineXML(xml)
    finally:
        conn.close()


async def _listed_state(stub: pb_grpc.HostAgentServiceAsyncStub, vm_id: str) -> S.State.ValueType:
    listed = await stub.ListVms(pb.HostAgentServiceListVmsRequest())
    return next((vm.state for vm in listed.vms if vm.vm_id == vm_id), S.STATE_DOWN)


async def _creating_and_saving(uri: str, created: str, saved: str) -> None:
    """Until libvirt has the created VM's domain and saves the saved one."""
    await until(
        lambda: domain_exists(uri, created),
        what="libvirt to have the new domain",
        within=TIMEOUT,
        every=0.02,
    )
    await until(
        lambda: _saving(uri, saved), what="libvirt to be saving the VM", within=TIMEOUT, every=0.02
    )


async def _listed(
    stub: pb_grpc.HostAgentServiceAsyncStub, vm_id: str, state: S.State.ValueType
) -> None:
    await until(
        lambda: _listed_state(stub, vm_id),
        lambda listed: listed == state,
        what=f"VM {vm_id} to be {S.State.Name(state)}",
        within=TIMEOUT,
        every=0.1,
    )


async def _next_state(events: AsyncIterator[pb.WatchEventsResponse], vm_id: str) -> int:
    while True:
        event = (await asyncio.wait_for(anext(events), TIMEOUT)).event
        if event.WhichOneof("payload") == "vm_state" and event.vm_state.vm_id == vm_id:
            return event.vm_state.state


async def _uptime(events: AsyncIterator[pb.WatchEventsResponse], vm_id: str) -> float:
    """The uptime in the VM's next guest report that has one."""
    while True:
        event = (await asyncio.wait_for(anext(events), TIMEOUT)).event
        if (
            event.WhichOneof("payload") == "guest_report"
            and event.guest_report.vm_id == vm_id
            and event.guest_report.guest.uptime_seconds
        ):
            return event.guest_report.guest.uptime_seconds


def _leave_a_broken_save(guest_image: GuestImage, state_dir: Path) -> pb.VmConfig:
    """What a crash in the middle of another save leaves behind."""
    saved_dir = state_dir / "saved"
    broken = guest_config(guest_image, "kill-broken")
    (saved_dir / f"{broken.vm_id}.config").write_bytes(broken.SerializeToString())
    (saved_dir / f"{broken.vm_id}.img.partial").write_bytes(b"LibvirtQemudPart" + b"\0" * 65536)
    return broken


@pytest.fixture(scope="module")
async def recovered(
    system_libvirt: str, guest_image: GuestImage, state_root: Path
) -> AsyncIterator[Recovered]:
    uri, state_dir = system_libvirt, state_root / "s"
    saved, created = (
        guest_config(guest_image, "kill-saved"),
        guest_config(guest_image, "kill-created"),
    )
    defined = guest_config(guest_image, "kill-defined")
    defined.persistence = pb.VmConfig.PERSISTENCE_PERSISTENT
    external_name = f"vp-external-{os.getpid()}"
    external_id = await asyncio.to_thread(_start_external, uri, guest_image, external_name)
    pki = TestPki(state_root / "pki")
    first = HostdProcess(uri, state_dir, pki)
    second = HostdProcess(uri, state_dir, pki)
    try:
        stub = await first.start()
        watch = stub.WatchEvents(pb.WatchEventsRequest())
        events = watch.__aiter__()
        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=saved))
        uptime = await _uptime(events, saved.vm_id)  # booted, its agent talking
        started = time.monotonic()

        await asyncio.gather(
            stub.HibernateVm(pb.HostAgentServiceHibernateVmRequest(vm_id=saved.vm_id)),
            stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=created, request_id="c-1")),
        )
        # Killed once libvirt is saving (before that, a kill leaves the VM
        # simply running: no hibernate to recover).
        await _creating_and_saving(uri, created.vm_id, saved.vm_id)
        await first.stop(signal.SIGKILL)
        uptime += time.monotonic() - started  # at least this long up when its save began
        watch.cancel()

        broken = _leave_a_broken_save(guest_image, state_dir)
        await asyncio.to_thread(_define, uri, defined, state_dir)

        stub = await second.start()
        report = await stub.GetRecoveryReport(pb.HostAgentServiceGetRecoveryReportRequest())
        yield Recovered(
            stub,
            report.report,
            created,
            saved,
            uptime,
            broken.vm_id,
            defined,
            external_name,
            state_dir,
            uri,
        )
    finally:
        await first.stop(signal.SIGKILL)
        await second.stop()
        for process in (first, second):
            print(f"\n--- hostd log ({len(process.log)} lines)", *process.log[-40:], sep="\n")
        vm_ids = [created.vm_id, saved.vm_id, external_id, defined.vm_id]
        await asyncio.to_thread(remove_domains, uri, vm_ids)


async def test_the_vm_being_created_is_adopted_not_duplicated(recovered: Recovered) -> None:
    vm_id = recovered.created.vm_id
    adopted = {a.vm_id: a for a in recovered.report.adopted}
    # Killed while libvirt was still in createXML, or just after.
    assert (adopted[vm_id].state, adopted[vm_id].reason) in {
        (S.STATE_WAIT_FOR_LAUNCH, "its start, begun by a previous hostd, is under way"),
        (S.STATE_RUNNING, "its domain is running"),
    }
    await _listed(recovered.stub, vm_id, S.STATE_RUNNING)
    listed = await recovered.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.vm_id for vm in listed.vms].count(vm_id) == 1
    # The create, repeated, finds it (its request id is in the domain's metadata).
    again = await recovered.stub.CreateVm(
        pb.HostAgentServiceCreateVmRequest(config=recovered.created, request_id="c-1")
    )
    assert again.vm.state == S.STATE_RUNNING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await recovered.stub.CreateVm(
            pb.HostAgentServiceCreateVmRequest(config=recovered.created, request_id="c-2")
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_the_vm_being_hibernated_ends_suspended_and_restores(recovered: Recovered) -> None:
    stub, vm_id = recovered.stub, recovered.saved.vm_id
    adopted = {a.vm_id: a for a in recovered.report.adopted}
    assert (adopted[vm_id].state, adopted[vm_id].reason) in {
        (S.STATE_SAVING_STATE, "its save to a file, begun by a previous hostd, is under way"),
        (S.STATE_SUSPENDED, "hibernated: its save finished while hostd was away"),
    }
    watch = stub.WatchEvents(pb.WatchEventsRequest())
    events = watch.__aiter__()
    try:
        await _listed(stub, vm_id, S.STATE_SUSPENDED)
        image = recovered.state_dir / "saved" / f"{vm_id}.img"
        assert image.stat().st_mode & 0o777 == 0o600
        assert not await asyncio.to_thread(domain_exists, recovered.uri, vm_id)

        await stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=pb.VmConfig(vm_id=vm_id)))
        while await _next_state(events, vm_id) != S.STATE_RUNNING:
            pass
        uptime = await _uptime(events, vm_id)
        assert uptime >= recovered.uptime_when_saved - 1, "the guest went on where it stopped"
    finally:
        watch.cancel()


async def test_a_half_written_save_is_removed_and_reported(recovered: Recovered) -> None:
    cleaned = {(c.vm_id, Path(c.what).name): c.reason for c in recovered.report.cleaned_up}
    broken = recovered.broken_id
    assert cleaned[(broken, f"{broken}.img.partial")] == "half-written: the save did not finish"
    assert not (recovered.state_dir / "saved" / f"{broken}.img.partial").exists()
    assert not (recovered.state_dir / "saved" / f"{broken}.config").exists()


async def test_a_domain_without_hostds_metadata_is_external_and_left_alone(
    recovered: Recovered,
) -> None:
    external = {e.name: e.reason for e in recovered.report.external}
    assert external[recovered.external_name] == "no virtplane metadata: not created by hostd"
    listed = await recovered.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert recovered.external_name not in {vm.vm_id for vm in listed.vms}


async def test_a_definition_a_killed_create_left_is_journaled_down_and_removed(
    recovered: Recovered,
) -> None:
    vm_id = recovered.defined.vm_id
    watch = recovered.stub.WatchEvents(pb.WatchEventsRequest())
    events = watch.__aiter__()
    try:
        down = None
        while down is None:
            event = (await asyncio.wait_for(anext(events), TIMEOUT)).event
            if event.WhichOneof("payload") == "vm_state" and event.vm_state.vm_id == vm_id:
                down = event.vm_state
    finally:
        watch.cancel()
    assert (down.state, down.exit_reason, down.message) == (
        S.STATE_DOWN,
        S.EXIT_REASON_START_FAILED,
        "its start, begun by a previous hostd, never happened",
    )
    assert not await asyncio.to_thread(domain_exists, recovered.uri, vm_id)
    cleaned = {c.vm_id: c.what for c in recovered.report.cleaned_up}
    assert cleaned[vm_id] == f"domain vp-{recovered.defined.name}"
    # The repeated create finds how its VM ended, and starts nothing.
    again = await recovered.stub.CreateVm(
        pb.HostAgentServiceCreateVmRequest(config=recovered.defined, request_id="d-1")
    )
    assert (again.vm.state, again.vm.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_START_FAILED)
