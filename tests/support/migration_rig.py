"""Two hosts to migrate between, with real libvirt: each a hostd on its own
libvirtd (the machine's, and a second one: tests.support.virt), with a host id
and that host's pair from one test CA where its QEMU reads it for TLS
migration (hostd.qemu_tls into the libvirtd's migrate_tls_x509_cert_dir).

Used by the real migration tests (tests/hostd/test_real_migration*.py) and the
migration benchmark (tests.bench.migration).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import libvirt
import libvirt_qemu
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from controller.pki.ca import Names
from hostd import qemu_tls
from tests.support.events import HostEvents
from tests.support.pki import TestPki
from tests.support.stack import Daemon, start_hostd
from tests.support.virt import peer_uri_template, qemu_tls_dir, remove_domains
from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.names import Role


@dataclass(frozen=True)
class Identity:
    """A host's id and where its QEMU reads its pair."""

    host_id: str
    uri: str
    tls_dir: Path
    pki: TestPki
    peer_uri_template: str
    """--peer-hypervisor-uri: every host of pki reaches another's libvirt by its id."""


def identity(pki: TestPki, uri: str, host_id: str = "") -> Identity:
    """A host id for the hostd on uri, its pair written for its QEMU. The
    certificate names the host by id only (no address): QEMU checks the
    destination's <id>.hosts.virtplane."""
    host_id = host_id or str(uuid.uuid4())
    template = peer_uri_template(pki.folder / "peers", {host_id: uri})
    found = Identity(host_id, uri, qemu_tls_dir(uri), pki, template)
    install(found, pki.pair(Role.HOST, found.host_id, names=Names()))
    return found


def install(host: Identity, pair: KeyPair) -> None:
    """Puts pair where host's QEMU reads it (a test may put another CA's there)."""
    qemu_tls.install(pair, host.tls_dir)


def start_hostd_for(host: Identity, folder: Path) -> Daemon:
    """A hostd on host's libvirtd, in folder, serving mutual TLS as host.host_id,
    with migration over TLS."""
    extra = ("--qemu-tls-dir", str(host.tls_dir), "--peer-hypervisor-uri", host.peer_uri_template)
    return start_hostd(folder, host.uri, extra=extra, pki=host.pki, host_id=host.host_id)


@dataclass
class Host:
    name: str
    identity: Identity
    daemon: Daemon
    channel: grpc.aio.Channel
    stub: pb_grpc.HostAgentServiceAsyncStub
    watch: HostEvents
    state_dir: Path

    @property
    def address(self) -> str:
        return self.daemon.address

    @property
    def uri(self) -> str:
        return self.identity.uri

    @property
    def host_id(self) -> str:
        return self.identity.host_id

    def migrate_request(
        self, vm_id: str, max_bandwidth_mib: int = 0, host_id: str = ""
    ) -> pb.HostAgentServiceMigrateVmRequest:
        """MigrateVm of vm_id to this host (as host_id, by default its own)."""
        return pb.HostAgentServiceMigrateVmRequest(
            vm_id=vm_id,
            destination_address=self.address,
            destination_host_id=host_id or self.host_id,
            max_bandwidth_mib_per_second=max_bandwidth_mib,
        )

    async def stop(self) -> None:
        self.watch.stop()
        await self.channel.close(None)
        await asyncio.to_thread(self.daemon.stop)


async def start_host(name: str, host: Identity, workdir: Path, within: float) -> Host:
    """A hostd in workdir/name (again on the same state directory when it exists),
    followed through WatchEvents."""
    folder = workdir / name
    folder.mkdir(exist_ok=True)
    folder.chmod(0o755)
    daemon = await asyncio.to_thread(start_hostd_for, host, folder)
    channel = daemon.channel()
    stub = pb_grpc.HostAgentServiceStub(channel)
    return Host(
        name, host, daemon, channel, stub, HostEvents.of_stub(stub, within), folder / "hostd"
    )


@dataclass
class Pair:
    """Hosts a and b of one test CA, and the guests booted on a. A test that
    restarts a host puts the new one here, so that the end stops it."""

    a: Host
    b: Host
    pki: TestPki
    guests: dict[str, pb.VmConfig]


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A folder in /tmp that QEMU's user can search, removed at the end."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def booted_pair(
    uris: tuple[str, str],
    workdir: Path,
    guests: dict[str, pb.VmConfig],
    within: float,
    *,
    until_reported: bool = True,
) -> AsyncIterator[Pair]:
    """Hosts a (on uris[0]) and b (on uris[1]), each guest created on a and
    waited for: its guest agent's first report, or (until_reported False)
    its domain running. At the end every VM either host has is destroyed,
    both hosts stop, and no domain of the guests is left on either libvirt."""
    pki = TestPki(workdir / "pki")
    ids = identity(pki, uris[0]), identity(pki, uris[1])
    a, b = await asyncio.gather(
        start_host("a", ids[0], workdir, within), start_host("b", ids[1], workdir, within)
    )
    pair = Pair(a, b, pki, guests)
    try:
        await asyncio.gather(
            *(
                a.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=c, request_id="boot"))
                for c in guests.values()
            )
        )
        try:
            if until_reported:
                await asyncio.gather(*(a.watch.report(c.vm_id, 0) for c in guests.values()))
            else:
                running = pb.HostVm.STATE_RUNNING
                await asyncio.gather(*(a.watch.state(c.vm_id, running, 0) for c in guests.values()))
        except BaseException:
            print(f"--- hostd a log\n{a.daemon.log_tail(60)}")
            raise
        yield pair
    finally:
        for host in (pair.a, pair.b):
            with contextlib.suppress(grpc.aio.AioRpcError):
                listed = await host.stub.ListVms(pb.HostAgentServiceListVmsRequest())
                for vm in listed.vms:
                    await host.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm.vm_id))
            await host.stop()
        vm_ids = [c.vm_id for c in guests.values()]
        for uri in uris:
            await asyncio.to_thread(remove_domains, uri, vm_ids)


def state_names(states: list[pb.HostVm]) -> list[str]:
    """The states' names without their STATE_ prefix."""
    return [pb.HostVm.State.Name(s.state).removeprefix("STATE_") for s in states]


def on_domain(uri: str, vm_id: str, act: Any) -> Any:
    """act(domain) on uri's domain of vm_id, asked of libvirt directly."""
    conn = libvirt.open(uri)
    try:
        return act(conn.lookupByUUIDString(vm_id))
    finally:
        conn.close()


def qemu_query(uri: str, vm_id: str, execute: str) -> Any:
    """The return of a QMP query command on the VM's running QEMU."""
    command = json.dumps({"execute": execute})
    reply = on_domain(uri, vm_id, lambda dom: libvirt_qemu.qemuMonitorCommand(dom, command, 0))
    return json.loads(reply)["return"]
