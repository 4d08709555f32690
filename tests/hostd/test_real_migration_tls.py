"""QEMU's native TLS migration between two real libvirtd, seen from QEMU itself.

Hosts A (a hostd on qemu:///system) and B (a hostd on the second libvirtd), as
in test_real_migration.py (tests.support.migration_rig): each has a host id and
its pair from one test CA in the folder its libvirtd's qemu.conf names
(migrate_tls_x509_cert_dir). Two guests boot on A:

- "checked" is migrated at 1 MiB/s; while it moves, the source QEMU's own
  migration parameters (query-migrate-parameters, through libvirt-qemu's
  monitor passthrough) name TLS credentials and B's DNS name, not our flag.
  Then its bandwidth is lifted and it lands on B.
- "refused" is sent to B as another host id (the source's mutual TLS to B
  refuses it before anything moves), then with B's folder holding another
  CA's pair (QEMU's chain check fails): each time the VM runs on on A, its
  agent still reporting there.
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
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from controller.pki.ca import Names
from tests.hostd.guest_configs import guest_config
from tests.support.migration_rig import Host, identity, install, start_host
from tests.support.pki import TestPki
from tests.support.real import GuestImage
from tests.support.virt import domain_exists, remove_domains
from virtplane_common.tls.names import Role, host_dns_name

S = pb.HostVm
TIMEOUT = 240.0
pytestmark = pytest.mark.guest


@dataclass
class Hosts:
    a: Host
    b: Host
    pki: TestPki
    guests: dict[str, pb.VmConfig]


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vp-mt-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def hosts(
    system_libvirt: str, second_libvirt: str, guest_image: GuestImage, workdir: Path
) -> AsyncIterator[Hosts]:
    pki = TestPki(workdir / "pki")
    ids = identity(pki, system_libvirt), identity(pki, second_libvirt)
    a, b = await asyncio.gather(
        start_host("a", ids[0], workdir, TIMEOUT), start_host("b", ids[1], workdir, TIMEOUT)
    )
    guests = {role: guest_config(guest_image, f"tls-{role}") for role in ("checked", "refused")}
    try:
        for config in guests.values():
            await a.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        await asyncio.gather(*(a.watch.report(c.vm_id, 0) for c in guests.values()))
        yield Hosts(a, b, pki, guests)
    finally:
        for host in (a, b):
            with contextlib.suppress(grpc.aio.AioRpcError):
                listed = await host.stub.ListVms(pb.HostAgentServiceListVmsRequest())
                for vm in listed.vms:
                    await host.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm.vm_id))
            await host.stop()
        for uri in (system_libvirt, second_libvirt):
            await asyncio.to_thread(remove_domains, uri, [c.vm_id for c in guests.values()])


def _names(states: list[S]) -> list[str]:
    return [S.State.Name(s.state).removeprefix("STATE_") for s in states]


def _on_domain(uri: str, vm_id: str, act: Any) -> Any:
    conn = libvirt.open(uri)
    try:
        return act(conn.lookupByUUIDString(vm_id))
    finally:
        conn.close()


def _migrate_parameters(uri: str, vm_id: str) -> dict[str, Any]:
    """QEMU's own migration parameters of the running domain vm_id."""
    command = json.dumps({"execute": "query-migrate-parameters"})
    reply = _on_domain(uri, vm_id, lambda dom: libvirt_qemu.qemuMonitorCommand(dom, command, 0))
    parameters: dict[str, Any] = json.loads(reply)["return"]
    return parameters


async def test_qemu_migrates_over_tls_to_the_named_host(hosts: Hosts) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["checked"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    moving = await a.stub.MigrateVm(b.migrate_request(vm_id, max_bandwidth_mib=1))
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    await a.watch.until(
        "the transfer to begin",
        lambda: any(m.data_processed_bytes for m in a.watch.migrations(vm_id, since_a)),
    )

    parameters = await asyncio.to_thread(_migrate_parameters, a.uri, vm_id)
    print(f"\nthe source QEMU's migration parameters: {json.dumps(parameters, sort_keys=True)}")
    assert parameters["tls-creds"], "QEMU migrates with TLS credentials"
    assert parameters["tls-hostname"] == host_dns_name(b.host_id) == f"{b.host_id}.hosts.virtplane"

    # Lifted, it lands: the same migration, over TLS to the end.
    await asyncio.to_thread(_on_domain, a.uri, vm_id, lambda dom: dom.migrateSetMaxSpeed(8192))
    arriving = await b.watch.state(vm_id, S.STATE_RUNNING, since_b)
    assert _names(arriving) == ["MIGRATING_TO", "RUNNING"]
    leaving = await a.watch.state(vm_id, S.STATE_DOWN, since_a)
    assert leaving[-1].exit_reason == S.EXIT_REASON_MIGRATED
    landed = b.watch.after(b.watch.when(vm_id, S.STATE_RUNNING, since_b))
    await b.watch.report(vm_id, landed)
    assert domain_exists(b.uri, vm_id) and not domain_exists(a.uri, vm_id)


async def _refused(hosts: Hosts, vm_id: str, host_id: str) -> str:
    """Sends vm_id to B as host_id; returns why it failed, once it runs on A again."""
    a, b = hosts.a, hosts.b
    since_a, since_b = a.watch.mark(), b.watch.mark()
    moving = await a.stub.MigrateVm(b.migrate_request(vm_id, host_id=host_id))
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    states = await a.watch.state(vm_id, S.STATE_RUNNING, since_a)
    assert _names(states) == ["MIGRATING_FROM", "RUNNING"]
    message = states[-1].message
    assert message.startswith(f"migration to {b.address} failed: "), message
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert dropped[-1].exit_reason == S.EXIT_REASON_MIGRATION_FAILED
    await b.watch.until("the destination to let go", lambda: not domain_exists(b.uri, vm_id))
    # The VM runs on on its source: its domain runs and its agent reports.
    code, _reason = await asyncio.to_thread(_on_domain, a.uri, vm_id, lambda dom: dom.state())
    assert code == libvirt.VIR_DOMAIN_RUNNING
    asked = a.watch.mark()
    await a.stub.RefreshVmGuestInfo(pb.HostAgentServiceRefreshVmGuestInfoRequest(vm_id=vm_id))
    await a.watch.report(vm_id, asked, responding=True)
    listed = await a.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.state for vm in listed.vms if vm.vm_id == vm_id] == [S.STATE_RUNNING]
    return message


def _refused_by_tls(message: str, source_says: str) -> bool:
    """Whether the failure is QEMU's TLS handshake: libvirt reports the source
    QEMU's reason, or, when the destination's QEMU ended first, its giving up
    on a stream that never began (the handshake the source broke off)."""
    return message.endswith(source_says) or (
        "Not a migration stream" in message and "load of migration failed" in message
    )


async def test_the_memory_goes_to_no_other_host(hosts: Hosts) -> None:
    vm_id = hosts.guests["refused"].vm_id
    b = hosts.b

    # B's certificate does not name the host the migration is meant for: the
    # source's mutual TLS to B refuses it before anything is sent.
    other = str(uuid.uuid4())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hosts.a.stub.MigrateVm(b.migrate_request(vm_id, host_id=other))
    print(f"\nanother host id: {refused.value.details()}")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"(as host {other}; " in str(refused.value.details())
    assert "Hostname Verification Check failed" in str(refused.value.details())
    listed = await hosts.a.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.state for vm in listed.vms if vm.vm_id == vm_id] == [S.STATE_RUNNING]
    assert not domain_exists(b.uri, vm_id)

    # B's folder holds a pair of another CA, for B's own id.
    another_ca = TestPki(hosts.pki.folder / "other", "another CA")
    install(b.identity, another_ca.pair(Role.HOST, b.host_id, names=Names()))
    try:
        message = await _refused(hosts, vm_id, b.host_id)
    finally:
        install(b.identity, hosts.pki.pair(Role.HOST, b.host_id, names=Names()))
    print(f"another CA: {message}")
    assert _refused_by_tls(message, "The certificate hasn't got a known issuer"), message
