"""MigrateVm's first transaction, on each engine, over rows: the destination
a migration chooses or is refused, how its booking counts on the
destination, and how the operation ends as the VM moves. The whole path on
real guests and two libvirt daemons: tests/e2e/test_controller_migration.py."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from controller import operations
from controller.errors import HostNotFound, NoHostAvailable
from controller.lifecycle import verbs
from controller.lifecycle.migrate import DestinationRefused, MigrateSteps, choose_destination
from controller.lifecycle.states import set_state
from controller.lifecycle.target import HostTarget
from controller.requests import Call
from controller.scheduler import Policy
from db import repositories as repo
from db.enums import HostState, OperationState, VmState
from db.models import Host, Operation, Vm
from db.session import Database
from tests.support import db_rig
from tests.support.db_rig import add_rows, host_row, vm_row

database = db_rig.database  # the fixture


def _vm(s: Session, name: str = "v") -> Vm:
    vm = repo.find_vm(s, name)
    assert vm is not None
    return vm


def _choose(database: Database, destination: str, full: frozenset[str] = frozenset()) -> str:
    def work(s: Session) -> str:
        vm = _vm(s)
        source = s.get(Host, vm.host_id)
        assert source is not None
        policy = Policy.EVEN_SPREAD
        return choose_destination(s, vm, source, destination, policy, full=full).name

    return database.transaction(work)


@pytest.fixture
def three_hosts(database: Database) -> Database:
    """h1 runs v (512 MiB, UP); h2 has room, h3 has more; small has none."""
    add_rows(
        database,
        host_row("h1", 4096),
        host_row("h2", 2048),
        host_row("h3", 8192),
        host_row("small", 256),
        vm_row("v", 512, state=VmState.UP, host="id-h1"),
    )
    return database


def test_without_a_destination_the_scheduler_picks_one_other_than_the_source(
    three_hosts: Database,
) -> None:
    assert _choose(three_hosts, "") == "h3"  # even spread: the emptiest


def test_a_named_destination_is_taken_when_every_filter_accepts_it(three_hosts: Database) -> None:
    assert _choose(three_hosts, "h2") == "h2"
    assert _choose(three_hosts, "id-h2") == "h2"


def test_refusals_name_the_host_and_the_filter(three_hosts: Database) -> None:
    with pytest.raises(HostNotFound, match="nowhere"):
        _choose(three_hosts, "nowhere")
    with pytest.raises(DestinationRefused, match="'h1': it is the VM's own host"):
        _choose(three_hosts, "h1")
    with pytest.raises(DestinationRefused, match=r"'small': memory: needs 512 MiB, 256 MiB free"):
        _choose(three_hosts, "small")

    def to_maintenance(s: Session) -> None:
        for name in ("h2", "h3"):
            host = repo.find_host(s, name)
            assert host is not None
            host.state = HostState.MAINTENANCE

    three_hosts.transaction(to_maintenance)
    with pytest.raises(DestinationRefused, match="'h2': maintenance: host is in maintenance"):
        _choose(three_hosts, "h2")
    with pytest.raises(NoHostAvailable) as refused:
        _choose(three_hosts, "")
    assert "h1: source: the VM runs there (the migration's source)" in str(refused.value)
    assert "small: memory" in str(refused.value)


def _begin(database: Database, destination: str) -> tuple[HostTarget, str]:
    """What the runner does first: MigrateSteps.begin, then the operation."""

    def work(s: Session) -> tuple[HostTarget, str]:
        vm = _vm(s)
        source = s.get(Host, vm.host_id)
        target = MigrateSteps(destination, Policy.EVEN_SPREAD).begin(s, vm, source).value
        op = operations.begin(
            s, verbs.MIGRATE.kind, vm, Call("MigrateVm"), host_id=target.destination_id
        )
        return target, op.id

    return database.transaction(work)


def test_the_vm_is_booked_on_the_destination_until_its_migration_ends(
    three_hosts: Database,
) -> None:
    target, op_id = _begin(three_hosts, "h2")
    assert (target.host_id, target.destination_id) == ("id-h1", "id-h2")
    assert target.destination_address == "h2:7070"

    def usage(s: Session) -> dict[str, tuple[int, int, int]]:
        return repo.host_usage(s)

    held = three_hosts.transaction(usage)
    assert held["id-h1"] == (512, 1, 1) and held["id-h2"] == (512, 1, 1)
    assert three_hosts.transaction(lambda s: _vm(s).state) is VmState.MIGRATING_FROM

    def accepted_then(state: VmState, host: str | None) -> OperationState:
        def work(s: Session) -> OperationState:
            vm = _vm(s)
            operations.accepted(s, op_id, vm.state_changed_at, vm)
            vm.host_id = host
            set_state(vm, state)
            operations.progress(s, [vm])
            op = s.get(Operation, op_id)
            assert op is not None
            return op.state

        return three_hosts.transaction(work)

    # Still migrating: the operation runs on; UP on the destination: done.
    assert accepted_then(VmState.MIGRATING_FROM, "id-h1") is OperationState.RUNNING
    assert accepted_then(VmState.UP, "id-h2") is OperationState.SUCCEEDED
    held = three_hosts.transaction(usage)
    assert "id-h1" not in held and held["id-h2"] == (512, 1, 1)


def test_a_migration_whose_vm_runs_on_at_its_source_fails_and_frees_the_destination(
    three_hosts: Database,
) -> None:
    _target, op_id = _begin(three_hosts, "")

    def failed_back(s: Session) -> Operation:
        vm = _vm(s)
        operations.accepted(s, op_id, vm.state_changed_at, vm)
        set_state(vm, VmState.UP, message="")
        operations.progress(s, [vm])
        op = s.get(Operation, op_id)
        assert op is not None
        return op

    op = three_hosts.transaction(failed_back)
    assert op.state is OperationState.FAILED and op.error_code == "ABORTED"
    assert "the migration did not complete; the VM is UP on its host" in op.error_message
    held = three_hosts.transaction(repo.host_usage)
    assert "id-h3" not in held


def test_a_cancelled_migration_ends_cancelled_whenever_the_source_reports(
    three_hosts: Database,
) -> None:
    _target, op_id = _begin(three_hosts, "h2")

    def cancelled_then_back(s: Session) -> Operation:
        vm = _vm(s)
        operations.accepted(s, op_id, vm.state_changed_at, vm)
        operations.mark_cancelled(s, op_id, "the migration was cancelled")
        set_state(vm, VmState.UP, message="migration cancelled")  # before the cancel's answer
        operations.progress(s, [vm])
        op = s.get(Operation, op_id)
        assert op is not None
        return op

    op = three_hosts.transaction(cancelled_then_back)
    assert (op.state, op.error_code) == (OperationState.FAILED, "CANCELLED")
    assert op.error_message == "the migration was cancelled"


def test_the_scheduler_passes_over_a_host_whose_incoming_migrations_are_full(
    three_hosts: Database,
) -> None:
    # h3 is the best pick; with its incoming slots taken, h2 (room, and
    # slots) is chosen rather than waiting for h3.
    assert _choose(three_hosts, "") == "h3"
    assert _choose(three_hosts, "", full=frozenset({"id-h3"})) == "h2"
    # Every host that fits is full: the best one, which the migration then
    # waits for.
    assert _choose(three_hosts, "", full=frozenset({"id-h2", "id-h3"})) == "h3"
    # A destination asked for is kept, full or not.
    assert _choose(three_hosts, "h3", full=frozenset({"id-h3"})) == "h3"
