"""The migration limits and host maintenance with real guests on two real
hosts (the fixtures of tests/e2e/conftest.py), two guests booted once:

- one outgoing migration per host at a time (the controller's limit) and
  transfers slowed to 8 MiB/s: of two migrations asked together, the second
  waits its turn ("waiting: host h1 has 1 outgoing"), its VM UP where it
  was, and starts once the first ended; both end SUCCEEDED;
- SetHostMaintenance of the host running both, one of them pinned there:
  the other is migrated away, the pinned one is named in the host's
  message, the host stays PREPARING_FOR_MAINTENANCE; ActivateHost makes it
  UP again, the pinned VM still running there.

The rules over rows: tests/controller/test_migration_limits.py and
tests/controller/test_maintenance.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import pytest

import virtplane_client as vp
from controller.lifecycle.migration_limits import MigrationLimits
from tests.support.events import vm_until
from tests.support.guests import guest_reported, guest_spec
from tests.support.real import GuestImage
from tests.support.rig_hosts import add_daemon
from tests.support.stack import Daemon
from tests.support.two_hosts import destroy_domain, in_process_controller, running_on
from tests.support.waiting import until

S = vp.VmState
H = vp.HostState
pytestmark = pytest.mark.guest
WAIT = 180.0  # guests may take 40 s to boot on a loaded machine
_RUN = os.getpid()
FIRST, SECOND = (f"maint-{n}-{_RUN}" for n in ("first", "second"))


async def _host(client: vp.AsyncClient, name: str, check: Callable[[vp.Host], object]) -> vp.Host:
    return await until(lambda: client.hosts.get(name), check, within=WAIT)


async def _both_on_h1(client: vp.AsyncClient, image: GuestImage) -> list[str]:
    """FIRST and SECOND booted on h1 (h2 in maintenance meanwhile, then UP
    again); their ids."""
    assert (await client.hosts.set_maintenance("h2")).status.state is H.MAINTENANCE
    ids = [(await client.vms.create(vm, guest_spec(image))).id for vm in (FIRST, SECOND)]
    for vm in (FIRST, SECOND):
        await client.vms.start(vm)
    for vm in (FIRST, SECOND):
        await vm_until(client, vm, guest_reported, WAIT)
    await client.hosts.activate("h2")
    await _host(client, "h2", lambda h: h.status.state is H.UP)
    return ids


async def _the_second_waits_its_turn(client: vp.AsyncClient, h2: str) -> None:
    first = await client.vms.migrate(FIRST, to="h2")
    second = await client.vms.migrate(SECOND, to="h2")
    assert first.vm.status.state is S.MIGRATING_FROM
    op = second.operation
    assert (op.state, op.message, op.host_id) == (
        vp.OperationState.RUNNING,
        "waiting: host h1 has 1 outgoing",
        "",
    )
    assert second.vm.status.state is S.UP
    done_first = await client.operations.wait(first.operation, WAIT)
    done_second = await client.operations.wait(second.operation, WAIT)
    assert done_first.state is vp.OperationState.SUCCEEDED, done_first.error
    assert done_second.state is vp.OperationState.SUCCEEDED, done_second.error
    # It was booked only once the first had ended.
    scheduled, ended = done_second.phases.scheduled_time, done_first.phases.done_time
    assert scheduled is not None and ended is not None and scheduled >= ended
    for vm in (FIRST, SECOND):
        assert (await client.vms.get(vm)).status.host_id == h2


async def _evacuation_leaves_the_pinned_one(
    client: vp.AsyncClient, daemons: dict[str, Daemon], h1: str, h2: str
) -> None:
    pinned = await client.vms.update(SECOND, vp.VmUpdate(pinned_host=h2))
    assert pinned.spec.pinned_host == h2
    preparing = await client.hosts.set_maintenance("h2")
    assert preparing.status.state is H.PREPARING_FOR_MAINTENANCE
    moved = await vm_until(
        client, FIRST, lambda v: v.status.state is S.UP and v.status.host_id == h1, WAIT
    )
    assert await running_on(daemons[h1], moved.id) == 1
    stuck = await _host(client, "h2", lambda h: "0 VMs moving" in h.status.message)
    assert stuck.status.state is H.PREPARING_FOR_MAINTENANCE
    assert stuck.status.message == (
        f"evacuating: 0 VMs moving; cannot move: {SECOND} (pinned to this host)"
    )
    activated = await client.hosts.activate("h2")
    assert activated.status.state is H.UP
    still = await client.vms.get(SECOND)
    assert (still.status.state, still.status.host_id) == (S.UP, h2)


async def test_limits_hold_a_migration_back_and_maintenance_evacuates(
    hosts: list[Daemon],
    guest_image: GuestImage,
    *,
    system_libvirt: str,
    second_libvirt: str,
    database_url: str,
) -> None:
    made: list[str] = []
    settings = {
        "migration_limits": MigrationLimits(outgoing_per_host=1),
        "migration_max_bandwidth_mib": 8,
        "evacuation_poll_seconds": 0.5,
    }
    async with in_process_controller(database_url, **settings) as client:
        try:
            daemons: dict[str, Daemon] = {}
            for name, daemon in zip(("h1", "h2"), hosts, strict=True):
                daemons[(await add_daemon(client, name, daemon)).id] = daemon
            names = await client.hosts.names()
            h1, h2 = (next(i for i, n in names.items() if n == want) for want in ("h1", "h2"))
            made += await _both_on_h1(client, guest_image)
            await _the_second_waits_its_turn(client, h2)
            await _evacuation_leaves_the_pinned_one(client, daemons, h1, h2)
        finally:
            for vm in (FIRST, SECOND):
                with contextlib.suppress(vp.ClientError):
                    await client.vms.stop(vm)
            for vm_id in made:
                destroy_domain(system_libvirt, vm_id)
                destroy_domain(second_libvirt, vm_id)
