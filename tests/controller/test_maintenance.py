"""Host maintenance that evacuates, over rows on each engine: which hosts
go PREPARING_FOR_MAINTENANCE, what a look at one decides (the VMs to move,
the ones that cannot, named with why), the evacuation's migrations through
MigrateVm's path within the limits (here they all wait their turn, so no
host is called), MAINTENANCE once the host runs nothing, ActivateHost
cancelling it, and HA leaving a VM being migrated alone. With hostd:
tests/controller/test_host_lifecycle.py; real guests:
tests/e2e/test_maintenance.py."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller import maintenance, operations
from controller.hosts import HostClients
from controller.lifecycle import verbs
from controller.lifecycle.migration_limits import MigrationLimits
from controller.lifecycle.placement import Starter
from controller.lifecycle.power import VmVerbs
from controller.lifecycle.states import set_state
from controller.lifecycle.transitions import apply_host_vm, missing_on_host
from controller.maintenance import Evacuator, Look, Stuck
from controller.requests import Call
from controller.scheduler import Demand, HostCapacity, Policy, not_in_maintenance
from controller.vm_store import VmStore
from controller.watch import WatchHub
from db import repositories as repo
from db.enums import HostState, OperationState, VmState
from db.models import Host, Operation, Vm
from db.session import Database
from tests.support import db_rig
from tests.support.db_rig import add_rows, host_row, vm_row

database = db_rig.database  # the fixture

HostVm = agent_pb2.HostVm


@pytest.fixture
def hosts(database: Database) -> Database:
    """h1 runs a and b (movable), p (pinned to h1), big (no other host has
    room) and s (POWERING_UP); h2 has room for the small ones."""
    pinned = vm_row("p", state=VmState.UP, host="id-h1")
    pinned.pinned_host_id = "id-h1"
    add_rows(
        database,
        host_row("h1", 16384),
        host_row("h2", 4096),
        vm_row("a", state=VmState.UP, host="id-h1"),
        vm_row("b", state=VmState.UP, host="id-h1"),
        pinned,
        vm_row("big", 8192, state=VmState.UP, host="id-h1"),
        vm_row("s", state=VmState.POWERING_UP, host="id-h1"),
    )
    return database


def _host(database: Database, name: str) -> Host:
    def work(s: Session) -> Host:
        host = repo.find_host(s, name)
        assert host is not None
        return host

    return database.transaction(work)


def _prepare(database: Database, name: str) -> bool:
    def work(s: Session) -> bool:
        host = repo.lock_host(s, name)
        assert host is not None
        return maintenance.prepare(s, host)

    return database.transaction(work)


def _look(database: Database) -> Look | None:
    return database.transaction(lambda s: maintenance.look(s, "id-h1", Policy.EVEN_SPREAD))


def test_only_an_up_host_running_vms_prepares_for_maintenance(hosts: Database) -> None:
    assert not _prepare(hosts, "h2")  # runs nothing: the caller makes it MAINTENANCE
    assert _host(hosts, "h2").state is HostState.UP
    assert _prepare(hosts, "h1")
    assert _host(hosts, "h1").state is HostState.PREPARING_FOR_MAINTENANCE
    assert _prepare(hosts, "h1")  # again: it stays so

    def unreachable(s: Session) -> None:
        host = repo.find_host(s, "h2")
        assert host is not None
        host.state = HostState.NON_RESPONSIVE
        s.add(vm_row("c", state=VmState.UP, host="id-h2"))

    hosts.transaction(unreachable)
    assert not _prepare(hosts, "h2")  # its VMs cannot be moved: the caller refuses


def test_a_look_names_each_vm_that_cannot_move_and_why(hosts: Database) -> None:
    assert _look(hosts) is None  # not preparing
    _prepare(hosts, "h1")
    found = _look(hosts)
    assert found is not None and not found.emptied
    assert sorted(found.to_move) == ["id-a", "id-b"]
    assert {s.vm: s.why for s in found.stuck} == {
        "big": "no host fits: h2: memory: needs 8192 MiB, 4096 MiB free",
        "p": "pinned to this host",
        "s": "it is POWERING_UP; only an UP VM migrates",
    }
    assert _host(hosts, "h1").state_message == (
        "evacuating: 2 VMs moving; cannot move: big (no host fits: h2: memory: needs 8192 MiB,"
        " 4096 MiB free), p (pinned to this host), s (it is POWERING_UP; only an UP VM migrates)"
    )


def _verbs(database: Database, limits: MigrationLimits) -> VmVerbs:
    store = VmStore(database, WatchHub(queue_size=100))
    clients = HostClients(timeout=1.0)  # never called: every migration waits
    return VmVerbs(store, clients, Starter(store, clients, Policy.EVEN_SPREAD), limits=limits)


def _migrations(database: Database) -> dict[str, Operation]:
    def work(s: Session) -> dict[str, Operation]:
        ops = s.scalars(select(Operation)).all()
        return {op.vm_id.removeprefix("id-"): op for op in ops}

    return database.transaction(work)


def _under_way(database: Database, vm: str) -> None:
    def work(s: Session) -> None:
        row = repo.find_vm(s, vm)
        assert row is not None
        op = operations.begin(s, verbs.MIGRATE.kind, row, Call("MigrateVm"), host_id="id-h2")
        set_state(row, VmState.MIGRATING_FROM)
        s.flush()
        operations.accepted(s, op.id, op.created_at, row)

    database.transaction(work)


async def test_the_evacuation_migrates_through_the_limits_and_activate_cancels_it(
    hosts: Database,
) -> None:
    """a's migration is under way (h1's one outgoing slot): the evacuation's
    migration of b waits its turn; ActivateHost ends it, a's goes on."""
    _under_way(hosts, "a")
    _prepare(hosts, "h1")
    emptied: list[str] = []

    async def went_maintenance(host_id: str) -> None:
        emptied.append(host_id)

    limits = MigrationLimits(outgoing_per_host=1)
    evacuator = Evacuator(hosts, _verbs(hosts, limits), Policy.EVEN_SPREAD, went_maintenance)
    [found] = await evacuator.run_once()
    assert found.moving == ["a"] and found.to_move == ["id-b"]
    ops = _migrations(hosts)
    assert ops["b"].waiting and ops["b"].cause == maintenance.CAUSE
    assert ops["b"].message == "waiting: host h1 has 1 outgoing"
    # The next look asks nothing new: b's migration waits already.
    [again] = await evacuator.run_once()
    assert sorted(again.moving) == ["a", "b"] and again.to_move == []
    assert _host(hosts, "h1").state_message.startswith("evacuating: 2 VMs moving; cannot move: ")

    def activate(s: Session) -> None:
        host = repo.lock_host(s, "h1")
        assert host is not None
        maintenance.cancel(s, host)

    hosts.transaction(activate)
    h1 = _host(hosts, "h1")
    assert h1.state is HostState.UP
    assert h1.state_message == "activated; the evacuation was cancelled"
    ops = _migrations(hosts)
    assert (ops["b"].state, ops["b"].error_code) == (OperationState.FAILED, "CANCELLED")
    assert ops["a"].state is OperationState.RUNNING  # under way: it may finish
    assert await evacuator.run_once() == [] and emptied == []


async def test_a_host_that_runs_nothing_any_more_goes_maintenance(hosts: Database) -> None:
    _prepare(hosts, "h1")

    def all_gone(s: Session) -> None:
        for vm in s.scalars(select(Vm)).all():
            set_state(vm, VmState.DOWN)

    hosts.transaction(all_gone)
    emptied: list[str] = []

    async def went_maintenance(host_id: str) -> None:
        emptied.append(host_id)

    evacuator = Evacuator(
        hosts, _verbs(hosts, MigrationLimits()), Policy.EVEN_SPREAD, went_maintenance
    )
    [found] = await evacuator.run_once()
    assert found.emptied and emptied == ["id-h1"]
    h1 = _host(hosts, "h1")
    assert (h1.state, h1.state_message) == (HostState.MAINTENANCE, "in maintenance")


def test_no_new_vm_goes_to_a_host_preparing_for_maintenance() -> None:
    host = HostCapacity("id-h", "h", HostState.PREPARING_FOR_MAINTENANCE, 4096, 0, 8)
    assert not_in_maintenance(host, Demand(vcpus=1, memory_mib=256)) == "host is in maintenance"


def test_ha_leaves_a_vm_being_migrated_alone() -> None:
    """The source reports it left, then no longer has it: it stays
    MIGRATING_FROM, with no restart planned, until its destination reports."""
    vm = vm_row("v", state=VmState.MIGRATING_FROM, host="id-h1")
    vm.highly_available = True
    left = HostVm(state=HostVm.STATE_DOWN, exit_reason=HostVm.EXIT_REASON_MIGRATED)
    apply_host_vm(vm, "id-h1", left)
    assert not missing_on_host(vm)
    assert (vm.state, vm.host_id, vm.ha_restart_at) == (VmState.MIGRATING_FROM, "id-h1", None)


def test_a_vm_whose_evacuation_failed_is_named_until_a_new_evacuation(hosts: Database) -> None:
    _prepare(hosts, "h1")

    def failed(s: Session) -> None:
        vm = repo.find_vm(s, "a")
        assert vm is not None
        op = operations.begin(s, verbs.MIGRATE.kind, vm, Call("SetHostMaintenance"))
        op.cause = maintenance.CAUSE
        operations.failed(s, op.id, "ABORTED", "unsafe disk")

    hosts.transaction(failed)
    found = _look(hosts)
    assert found is not None and found.to_move == ["id-b"]
    assert Stuck("a", "its migration failed: unsafe disk") in found.stuck

    def activated(s: Session) -> None:
        host = repo.lock_host(s, "h1")
        assert host is not None
        maintenance.cancel(s, host)

    hosts.transaction(activated)
    _prepare(hosts, "h1")
    again = _look(hosts)
    assert again is not None and sorted(again.to_move) == ["id-a", "id-b"]
