"""A migration policy on real QEMU: what reaches QEMU, and a transfer that
cannot converge, judged by the stall detector (hostd.convergence).

Hosts A and B as in test_real_migration.py (tests.support.migration_rig). Two
guests boot on A. Each is sent to B at 2 MiB/s with a maximum downtime of
1 ms: the guest's kernel dirties a few pages between passes, more than the
2 KiB that 1 ms allows at that speed, so after its first pass the transfer
cannot converge, and the data remaining stops shrinking.

- "stalled": with auto-converge and stall_seconds; while it moves, libvirt
  reads back the downtime limit and QEMU its auto-converge capability. It is
  aborted as stalled, and runs on on A.
- "postcopy": the same, post-copy allowed: it switches to post-copy and lands
  on B. Post-copy needs userfaultfd for the destination's QEMU; a host that
  denies it (vm.unprivileged_userfaultfd=0 with an unprivileged QEMU, and a
  QEMU without /dev/userfaultfd) fails the switch, and the test says so.

Waits are on conditions with generous deadlines; durations are printed (-s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from tests.hostd.guest_configs import guest_config
from tests.support.migration_rig import Host, Pair, booted_pair, on_domain, qemu_query, scratch
from tests.support.real import GuestImage
from tests.support.virt import domain_exists

S = pb.HostVm
P = pb.MigrationProgress
TIMEOUT = 240.0
STALL_SECONDS = 4
DIRTYING = "virtplane.chaos=2:0"
"""The guest agent killed 2 s after each start and started again at once: each
start of its python dirties megabytes of the guest's memory."""
BANDWIDTH_MIB = 4
pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with scratch("vp-mc-") as path:
        yield path


@pytest.fixture(scope="module")
async def hosts(
    system_libvirt: str, second_libvirt: str, guest_image: GuestImage, workdir: Path
) -> AsyncIterator[Pair]:
    guests = {
        role: guest_config(guest_image, f"mc-{role}", DIRTYING) for role in ("stalled", "postcopy")
    }
    uris = (system_libvirt, second_libvirt)
    async with booted_pair(uris, workdir, guests, TIMEOUT, until_reported=False) as pair:
        yield pair


def _capabilities(uri: str, vm_id: str) -> dict[str, bool]:
    """QEMU's own migration capabilities of the running domain."""
    reply = qemu_query(uri, vm_id, "query-migrate-capabilities")
    return {c["capability"]: c["state"] for c in reply}


def _request(b: Host, vm_id: str, **policy: Any) -> pb.HostAgentServiceMigrateVmRequest:
    request = b.migrate_request(vm_id, max_bandwidth_mib=BANDWIDTH_MIB)
    request.policy.CopyFrom(pb.HostMigrationPolicy(max_downtime_ms=1, **policy))
    return request


def _ended(progress: list[P]) -> P | None:
    return next((p for p in progress if p.phase != P.PHASE_TRANSFERRING), None)


async def test_a_migration_that_cannot_converge_is_aborted_as_stalled(hosts: Pair) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["stalled"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    began = time.monotonic()
    request = _request(b, vm_id, stall_seconds=STALL_SECONDS)
    moving = await a.stub.MigrateVm(request)
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    await a.watch.until(
        "the transfer to begin",
        lambda: any(m.data_processed_bytes for m in a.watch.migrations(vm_id, since_a)),
    )

    downtime = await asyncio.to_thread(
        on_domain, a.uri, vm_id, lambda d: d.migrateGetMaxDowntime(0)
    )
    capabilities = await asyncio.to_thread(_capabilities, a.uri, vm_id)
    print(f"\nsource: max downtime {downtime} ms, auto-converge {capabilities['auto-converge']}")
    assert downtime == 1
    assert capabilities["auto-converge"] is False

    states = await a.watch.state(vm_id, S.STATE_RUNNING, since_a)
    print(f"aborted after {time.monotonic() - began:.1f} s: {states[-1].message}")
    assert [s.state for s in states] == [S.STATE_MIGRATING_FROM, S.STATE_RUNNING]
    assert states[-1].message.startswith(
        f"migration to {b.address} failed: stalled: data remaining has not shrunk below "
    ), states[-1].message
    assert states[-1].message.endswith(f" MiB for {STALL_SECONDS} s")
    ended = _ended(a.watch.migrations(vm_id, since_a))
    assert ended is not None and ended.phase == P.PHASE_FAILED
    assert ended.message == states[-1].message
    remaining = [m.data_remaining_bytes for m in a.watch.migrations(vm_id, since_a)]
    print(f"data remaining, MiB: {[round(r / 2**20, 2) for r in remaining]}")

    await b.watch.state(vm_id, S.STATE_DOWN, since_b)
    await b.watch.until("the destination to let go", lambda: not domain_exists(b.uri, vm_id))
    code, _reason = await asyncio.to_thread(on_domain, a.uri, vm_id, lambda d: d.state())
    assert code == libvirt.VIR_DOMAIN_RUNNING
    listed = await a.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert [vm.state for vm in listed.vms if vm.vm_id == vm_id] == [S.STATE_RUNNING]


async def test_a_stalled_migration_switches_to_post_copy_and_lands(hosts: Pair) -> None:
    a, b = hosts.a, hosts.b
    vm_id = hosts.guests["postcopy"].vm_id
    since_a, since_b = a.watch.mark(), b.watch.mark()
    began = time.monotonic()
    request = _request(b, vm_id, allow_post_copy=True, stall_seconds=STALL_SECONDS)
    await a.stub.MigrateVm(request)
    await a.watch.until(
        "the migration to switch to post-copy or end",
        lambda: any(
            m.message or m.phase != P.PHASE_TRANSFERRING for m in a.watch.migrations(vm_id, since_a)
        ),
    )
    first = next(
        m
        for m in a.watch.migrations(vm_id, since_a)
        if m.message or m.phase != P.PHASE_TRANSFERRING
    )
    print(f"\nafter {time.monotonic() - began:.1f} s: {P.Phase.Name(first.phase)} {first.message}")
    assert first.phase == P.PHASE_TRANSFERRING
    assert first.message.startswith("switched to post-copy: stalled: "), first.message

    arriving = await b.watch.state(vm_id, S.STATE_RUNNING, since_b)
    assert [s.state for s in arriving] == [S.STATE_MIGRATING_TO, S.STATE_RUNNING]
    leaving = await a.watch.state(vm_id, S.STATE_DOWN, since_a)
    assert leaving[-1].exit_reason == S.EXIT_REASON_MIGRATED
    # The source's record ends once migrate3 returns, after libvirt's confirm
    # step, which can come after the events above.
    await a.watch.until(
        "the source's record of the migration to end",
        lambda: _ended(a.watch.migrations(vm_id, since_a)) is not None,
    )
    ended = _ended(a.watch.migrations(vm_id, since_a))
    assert ended is not None and ended.phase == P.PHASE_COMPLETED
    assert ended.message == first.message
    print(f"landed after {time.monotonic() - began:.1f} s")
    assert domain_exists(b.uri, vm_id) and not domain_exists(a.uri, vm_id)
