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
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from controller.pki.ca import Names
from tests.hostd.guest_configs import guest_config
from tests.support.migration_rig import (
    Pair,
    booted_pair,
    install,
    on_domain,
    qemu_query,
    scratch,
    state_names,
)
from tests.support.pki import TestPki
from tests.support.real import GuestImage
from tests.support.virt import domain_exists
from virtplane_common.tls.names import Role, host_dns_name

S = pb.HostVm
TIMEOUT = 240.0
pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch("vp-mt-") as path:
        yield path


@pytest.fixture(scope="module")
async def hosts(
    system_libvirt: str, second_libvirt: str, guest_image: GuestImage, workdir: Path
) -> AsyncIterator[Pair]:
    guests = {role: guest_config(guest_image, f"tls-{role}") for role in ("checked", "refused")}
    uris = (system_libvirt, second_libvirt)
    async with booted_pair(uris, workdir, guests, TIMEOUT) as pair:
        yield pair


async def test_qemu_migrates_over_tls_to_the_named_host(hosts: Pair) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["checked"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    request = b.migrate_request(vm_id, max_bandwidth_mib=1)
    request.policy.auto_converge = True  # read back from QEMU below
    moving = await a.stub.MigrateVm(request)
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    try:
        await a.watch.until(
            "the transfer to begin",
            lambda: any(m.data_processed_bytes for m in a.watch.migrations(vm_id, since_a)),
        )
    except BaseException:
        print(f"--- hostd a log\n{a.daemon.log_tail(60)}\n--- hostd b log\n{b.daemon.log_tail(60)}")
        print(f"--- the last progress samples\n{a.watch.migrations(vm_id, since_a)[-3:]}")
        raise
    capabilities = await asyncio.to_thread(qemu_query, a.uri, vm_id, "query-migrate-capabilities")
    assert {"capability": "auto-converge", "state": True} in capabilities, capabilities
    await a.watch.until(
        "five progress samples", lambda: len(a.watch.migrations(vm_id, since_a)) >= 5
    )
    # About one a second (hostd.migration's progress interval): migrate3 has
    # a libvirt connection of its own, so the samples are not held behind it.
    print(f"samples at ms: {[m.elapsed_ms for m in a.watch.migrations(vm_id, since_a)]}")

    parameters = await asyncio.to_thread(qemu_query, a.uri, vm_id, "query-migrate-parameters")
    print(f"\nthe source QEMU's migration parameters: {json.dumps(parameters, sort_keys=True)}")
    assert parameters["tls-creds"], "QEMU migrates with TLS credentials"
    assert parameters["tls-hostname"] == host_dns_name(b.host_id) == f"{b.host_id}.hosts.virtplane"

    # Lifted, it lands: the same migration, over TLS to the end.
    await asyncio.to_thread(on_domain, a.uri, vm_id, lambda dom: dom.migrateSetMaxSpeed(8192))
    arriving = await b.watch.state(vm_id, S.STATE_RUNNING, since_b)
    assert state_names(arriving) == ["MIGRATING_TO", "RUNNING"]
    leaving = await a.watch.state(vm_id, S.STATE_DOWN, since_a)
    assert leaving[-1].exit_reason == S.EXIT_REASON_MIGRATED
    landed = b.watch.after(b.watch.when(vm_id, S.STATE_RUNNING, since_b))
    await b.watch.report(vm_id, landed)
    assert domain_exists(b.uri, vm_id) and not domain_exists(a.uri, vm_id)


async def _refused(hosts: Pair, vm_id: str, host_id: str) -> str:
    """Sends vm_id to B as host_id; returns why it failed, once it runs on A again."""
    a, b = hosts.a, hosts.b
    since_a, since_b = a.watch.mark(), b.watch.mark()
    moving = await a.stub.MigrateVm(b.migrate_request(vm_id, host_id=host_id))
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    states = await a.watch.state(vm_id, S.STATE_RUNNING, since_a)
    assert state_names(states) == ["MIGRATING_FROM", "RUNNING"]
    message = states[-1].message
    assert message.startswith(f"migration to {b.address} failed: "), message
    dropped = await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    assert dropped[-1].exit_reason == S.EXIT_REASON_MIGRATION_FAILED
    await b.watch.until("the destination to let go", lambda: not domain_exists(b.uri, vm_id))
    # The VM runs on on its source: its domain runs and its agent reports.
    code, _reason = await asyncio.to_thread(on_domain, a.uri, vm_id, lambda dom: dom.state())
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


async def test_the_memory_goes_to_no_other_host(hosts: Pair) -> None:
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
