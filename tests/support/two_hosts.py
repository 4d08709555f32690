"""Helpers of the end-to-end tests on two real hosts (the hosts fixture of
tests/e2e/conftest.py: a hostd on qemu:///system and one on the second
libvirtd): an in-process controller on them, and what each libvirt and
each hostd runs."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc

import virtplane_client as vp
from controller.app import Controller
from tests.support.controller_rig import config, credentials_of
from tests.support.rig_hosts import start_test_hostd
from tests.support.stack import Daemon, Registered, register_host, start_registered
from tests.support.virt import peer_uri_template, qemu_tls_dir, remove_domains
from tests.support.waiting import until

S = vp.VmState
WAIT = 180.0  # guests may take 40 s to boot on a loaded machine


def start_hosts(
    workdir: Path, uris: tuple[str, str], extra: tuple[tuple[str, ...], ...] = ((), ())
) -> Iterator[list[Daemon]]:
    """hostd h1 on the machine's libvirtd, h2 on the second one, each serving
    mutual TLS as a host id of its own from the rig's CA (added with
    tests.support.rig_hosts.add_daemon), handing QEMU its pair for TLS
    migration and reaching the other's libvirt by its id; extra: more
    arguments of each. Stops the daemons in the list it yields (a test may
    put a restarted one in its place), then removes every domain of the
    second libvirtd."""
    daemons: list[Daemon] = []
    ids = [str(uuid.uuid4()) for _ in uris]
    template = peer_uri_template(workdir / "peers", dict(zip(ids, uris, strict=True)))
    try:
        for name, uri, host_id, more in zip(("h1", "h2"), uris, ids, extra, strict=True):
            folder, args = _host_folder(workdir, name), (*_migration_flags(uri, template), *more)
            daemons.append(start_test_hostd(folder, uri, extra=args, host_id=host_id))
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()
        destroy_all(uris[1])  # whatever a test left on the second host


@dataclass(frozen=True)
class Enrolling:
    """A host registered with a controller process, its hostd not started."""

    host: Registered
    uri: str
    folder: Path
    extra: tuple[str, ...]

    def start(self, controller: Daemon) -> Daemon:
        """Its hostd, enrolled with its token; returns once the controller has it UP."""
        return start_registered(controller, self.folder, self.host, self.uri, self.extra)


def register_hosts(controller: Daemon, workdir: Path, uris: tuple[str, str]) -> list[Enrolling]:
    """h1 on uris[0] and h2 on uris[1], registered with the controller
    process (AddHost: their ids and tokens; tests.support.stack.start_host),
    each to hand QEMU its pair for TLS migration and to reach the other's
    libvirt by its id, as start_hosts' do. Start each when the test wants it UP."""
    registered = [register_host(controller, name) for name in ("h1", "h2")]
    ids = [host.host_id for host in registered]
    template = peer_uri_template(workdir / "peers", dict(zip(ids, uris, strict=True)))
    pending = []
    for host, uri in zip(registered, uris, strict=True):
        folder = _host_folder(workdir, host.name)
        pending.append(Enrolling(host, uri, folder, _migration_flags(uri, template)))
    return pending


def _host_folder(workdir: Path, name: str) -> Path:
    """A new folder for host name's hostd, searchable by QEMU's user."""
    folder = workdir / name
    folder.mkdir()
    folder.chmod(0o755)
    return folder


def _migration_flags(uri: str, template: str) -> tuple[str, ...]:
    """hostd's flags to hand QEMU its pair for TLS migration (where the
    libvirtd at uri has QEMU read it) and to reach the other hosts' libvirt
    by id (template: peer_uri_template's)."""
    return ("--qemu-tls-dir", str(qemu_tls_dir(uri)), "--peer-hypervisor-uri", template)


def destroy_all(uri: str) -> None:
    """Removes every domain libvirt at uri has (the second libvirtd's, after a test)."""
    conn = libvirt.open(uri)
    try:
        vm_ids = [dom.UUIDString() for dom in conn.listAllDomains()]
    finally:
        conn.close()
    remove_domains(uri, vm_ids)


def domains_of(uri: str, vm_id: str) -> int:
    """How many domains libvirt at uri has for the VM (running or not)."""
    conn = libvirt.open(uri)
    try:
        return sum(1 for d in conn.listAllDomains() if d.UUIDString() == vm_id)
    finally:
        conn.close()


async def running_on(daemon: Daemon, vm_id: str) -> int:
    """How many running VMs of this id a hostd reports."""
    async with daemon.channel() as channel:
        agent = agent_grpc.HostAgentServiceStub(channel)
        listed = await agent.ListVms(agent_pb2.HostAgentServiceListVmsRequest())
    down = (agent_pb2.HostVm.STATE_DOWN, agent_pb2.HostVm.STATE_SUSPENDED)
    return sum(1 for v in listed.vms if v.vm_id == vm_id and v.state not in down)


def destroy_domain(uri: str, vm_id: str) -> None:
    """Destroys this test's domain, as fencing its host would."""
    remove_domains(uri, [vm_id], undefine=False)


@contextlib.asynccontextmanager
async def in_process_controller(
    database_url: str, **settings: object
) -> AsyncIterator[vp.AsyncClient]:
    """A controller in this process (fast host retries, and settings), and a
    client on it; both closed at the end."""
    ctl = Controller(config(database_url, **{"host_retry_seconds": 0.2, **settings}))
    await ctl.start()
    client = vp.AsyncClient(f"127.0.0.1:{ctl.port}", credentials=credentials_of(ctl))
    try:
        yield client
    finally:
        await client.close()
        await ctl.stop(grace=0)


async def gone_from(daemon: Daemon, vm_id: str) -> None:
    """Waits until the hostd runs the VM no more."""
    await until(
        lambda: running_on(daemon, vm_id),
        lambda count: not count,
        what=f"VM {vm_id} to leave {daemon.name}",
        within=WAIT,
        every=0.1,
    )


async def record_states(client: vp.AsyncClient, vm_id: str, seen: list[tuple[S, str]]) -> None:
    """Appends the VM's (state, host id) for every change the watch shows."""
    async for change in client.vms.watch(vm_ids=[vm_id]):
        if change.vm is not None and change.vm.id == vm_id:
            seen.append((change.vm.status.state, change.vm.status.host_id))


def restart(daemon: Daemon) -> Daemon:
    """The daemon started again as it was (its arguments: its port and state
    folder), after a kill; the same Daemon with the new process, ready."""
    log = daemon.log_path.open("ab")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(daemon.process.args, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    again = dataclasses.replace(daemon, process=process)
    again.wait_ready()
    return again
