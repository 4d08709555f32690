"""The migration limits over rows, on each engine: a migration over a limit
waits its turn with a message saying why, through the runner's real path
(it calls no host), and the queue admits the waiting ones in order as
slots free; a restart keeps them; cancelling one ends it. Starting an
admitted one on real hosts: tests/e2e/test_migration_limits.py."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent

from controller import convert, operations
from controller.host_client import HostClient
from controller.hosts import HostClients
from controller.lifecycle import verbs
from controller.lifecycle.migrate import MigrateSteps, Migrations, MigrationWaiting
from controller.lifecycle.migration_limits import InFlight, MigrationLimits, held_back
from controller.lifecycle.migration_policy import MigrationPolicy
from controller.lifecycle.migration_queue import MigrationQueue, admit
from controller.lifecycle.runner import VerbRunner
from controller.lifecycle.states import set_state
from controller.requests import Call
from controller.scheduler import Policy
from controller.vm_store import VmStore
from controller.watch import WatchHub
from db import repositories as repo
from db.enums import OperationState, VmState
from db.models import Host, Operation, Vm
from db.session import Database
from tests.support import db_rig
from tests.support.db_rig import add_rows, host_row, vm_row
from tests.support.recording_agent import RecordingAgent, source

database = db_rig.database  # the fixtures
_ = source

ONE_OUT = MigrationLimits(outgoing_per_host=1, incoming_per_host=2, cluster=10)
TWO_OUT = MigrationLimits()


@pytest.fixture
def hosts(database: Database) -> Database:
    """h1 runs a, b, c and d (UP, 256 MiB each); h2 and h3 have room."""
    add_rows(
        database,
        host_row("h1", 4096),
        host_row("h2", 4096),
        host_row("h3", 4096),
        *(vm_row(n, state=VmState.UP, host="id-h1") for n in "abcd"),
    )
    return database


def _runner(database: Database) -> tuple[VerbRunner, VmStore]:
    store = VmStore(database, WatchHub(queue_size=100))
    # No host is called here: every migration asked waits its turn.
    return VerbRunner(store, HostClients(timeout=1.0)), store


def _under_way(database: Database, vm: str, destination: str) -> str:
    """vm's migration to destination, booked and accepted by its source."""

    def work(s: Session) -> str:
        row = repo.find_vm(s, vm)
        assert row is not None
        op = operations.begin(
            s, verbs.MIGRATE.kind, row, Call("MigrateVm"), host_id=f"id-{destination}"
        )
        set_state(row, VmState.MIGRATING_FROM)
        s.flush()
        operations.accepted(s, op.id, op.created_at, row)
        return op.id

    return database.transaction(work)


def _landed(database: Database, vm: str, destination: str) -> None:
    """vm runs on destination now: its migration ends SUCCEEDED."""

    def work(s: Session) -> None:
        row = repo.find_vm(s, vm)
        assert row is not None
        row.host_id = f"id-{destination}"
        set_state(row, VmState.UP)
        operations.progress(s, [row])

    database.transaction(work)


def _lands(database: Database, vm: str, op_id: str) -> None:
    """The source accepts the admitted migration op_id of vm, which then
    runs on the destination op_id booked."""
    destination = _op(database, op_id).host_id
    assert destination is not None

    def accepted(s: Session) -> None:
        row = repo.find_vm(s, vm)
        assert row is not None
        operations.accepted(s, op_id, row.state_changed_at, row)

    database.transaction(accepted)
    _landed(database, vm, destination.removeprefix("id-"))


def _op(database: Database, op_id: str) -> Operation:
    return database.transaction(lambda s: operations.find(s, op_id))


def _vm(database: Database, name: str) -> Vm:
    def work(s: Session) -> Vm:
        row = repo.find_vm(s, name)
        assert row is not None
        return row

    return database.transaction(work)


async def _ask(
    runner: VerbRunner,
    vm: str,
    limits: MigrationLimits,
    destination: str = "",
    convergence: MigrationPolicy | None = None,
) -> Operation:
    steps = MigrateSteps(
        destination, Policy.EVEN_SPREAD, limits=limits, convergence=convergence or MigrationPolicy()
    )
    return (await runner.run(vm, Call("MigrateVm"), steps)).operation


def _admit(database: Database, limits: MigrationLimits) -> list[str]:
    def work(s: Session) -> list[str]:
        admitted, _moved = admit(s, Policy.EVEN_SPREAD, limits)
        return [one.target.vm_name for one in admitted]

    return database.transaction(work)


async def test_a_third_outgoing_migration_waits_with_a_message_and_books_nothing(
    hosts: Database,
) -> None:
    runner, _store = _runner(hosts)
    _under_way(hosts, "a", "h2")
    _under_way(hosts, "b", "h3")
    op = await _ask(runner, "c", TWO_OUT)
    assert op.state is OperationState.RUNNING and op.waiting
    assert op.message == "waiting: host h1 has 2 outgoing"
    assert op.host_id is None and op.scheduled_at is None
    assert _vm(hosts, "c").state is VmState.UP
    usage = hosts.transaction(repo.host_usage)
    assert usage["id-h2"] == (256, 1, 1) and usage["id-h3"] == (256, 1, 1)  # a and b only

    # Asked again while it waits: refused, the first one goes on waiting.
    with pytest.raises(MigrationWaiting, match="waits its turn already"):
        await _ask(runner, "c", TWO_OUT)
    # Still full: nothing is admitted, and it still says why.
    assert _admit(hosts, TWO_OUT) == []
    assert _op(hosts, op.id).message == "waiting: host h1 has 2 outgoing"

    # a's migration ends: the slot is c's.
    _landed(hosts, "a", "h2")
    assert _admit(hosts, TWO_OUT) == ["c"]
    started = _op(hosts, op.id)
    assert not started.waiting and started.message == ""
    assert started.host_id in ("id-h2", "id-h3") and started.scheduled_at is not None
    assert _vm(hosts, "c").state is VmState.MIGRATING_FROM


async def test_waiting_migrations_start_in_the_order_they_were_asked(hosts: Database) -> None:
    runner, _store = _runner(hosts)
    _under_way(hosts, "a", "h2")
    b = await _ask(runner, "b", ONE_OUT)
    c = await _ask(runner, "c", ONE_OUT)
    d = await _ask(runner, "d", ONE_OUT, destination="h3")
    assert [_op(hosts, o.id).waiting for o in (b, c, d)] == [True, True, True]

    _landed(hosts, "a", "h2")
    assert _admit(hosts, ONE_OUT) == ["b"]
    assert _op(hosts, c.id).message == "waiting: host h1 has 1 outgoing"
    _lands(hosts, "b", b.id)
    assert _admit(hosts, ONE_OUT) == ["c"]
    _lands(hosts, "c", c.id)
    assert _admit(hosts, ONE_OUT) == ["d"]
    assert _op(hosts, d.id).host_id == "id-h3"  # the host asked for


async def test_a_free_slot_goes_to_the_earlier_waiting_migration_not_a_new_one(
    hosts: Database,
) -> None:
    runner, _store = _runner(hosts)
    _under_way(hosts, "a", "h2")
    b = await _ask(runner, "b", ONE_OUT)
    _landed(hosts, "a", "h2")
    # A slot is free, but b asked first.
    c = await _ask(runner, "c", ONE_OUT)
    assert c.waiting and c.message == "waiting: earlier migrations wait their turn"
    assert _admit(hosts, ONE_OUT) == ["b"]
    assert _op(hosts, b.id).host_id is not None and _op(hosts, c.id).waiting


async def test_a_waiting_migration_survives_a_restart_and_ends_when_cancelled(
    hosts: Database,
) -> None:
    runner, store = _runner(hosts)
    _under_way(hosts, "a", "h2")
    b = await _ask(runner, "b", ONE_OUT)
    assert hosts.transaction(operations.recover) == 0  # the controller restarted
    assert _op(hosts, b.id).state is OperationState.RUNNING

    cancelled = await Migrations(store, HostClients(timeout=1.0)).cancel("b", Call("Cancel"))
    assert cancelled.operation.id == b.id
    op = _op(hosts, b.id)
    assert (op.state, op.error_code, op.waiting) == (OperationState.FAILED, "CANCELLED", False)
    assert _vm(hosts, "b").state is VmState.UP
    _landed(hosts, "a", "h2")
    assert _admit(hosts, ONE_OUT) == []


async def test_a_waiting_migration_whose_vm_stopped_or_cannot_go_anywhere_fails(
    hosts: Database,
) -> None:
    runner, _store = _runner(hosts)
    _under_way(hosts, "a", "h2")
    b = await _ask(runner, "b", ONE_OUT)
    c = await _ask(runner, "c", ONE_OUT, destination="h3")

    def meanwhile(s: Session) -> None:
        vm = repo.find_vm(s, "b")
        assert vm is not None
        set_state(vm, VmState.DOWN)
        vm.host_id = None
        h3 = s.get(Host, "id-h3")
        assert h3 is not None
        h3.memory_total_mib = 128

    hosts.transaction(meanwhile)
    _landed(hosts, "a", "h2")
    assert _admit(hosts, ONE_OUT) == []
    op_b, op_c = _op(hosts, b.id), _op(hosts, c.id)
    assert op_b.state is OperationState.FAILED
    assert op_b.error_message == "the VM is DOWN; only an UP VM migrates"
    assert op_c.state is OperationState.FAILED and op_c.error_code == "FAILED_PRECONDITION"
    assert "'h3': memory: needs 256 MiB" in op_c.error_message


async def test_a_waiting_migration_starts_with_the_policy_it_was_asked_with(
    hosts: Database, source: tuple[RecordingAgent, HostClient]
) -> None:
    """The call's policy is kept while it waits, not replaced by the
    cluster's when its turn comes; one queued without a policy of its own
    starts with the cluster's."""
    recording, client = source

    def h1_is_the_recording_agent(s: Session) -> None:
        h1 = s.get(Host, "id-h1")
        assert h1 is not None
        h1.address = client.address

    hosts.transaction(h1_is_the_recording_agent)
    runner, store = _runner(hosts)
    _under_way(hosts, "a", "h2")
    asked = MigrationPolicy(max_downtime_ms=40, allow_post_copy=True, stall_seconds=9)
    cluster = MigrationPolicy(max_downtime_ms=300, auto_converge=True)
    b = await _ask(runner, "b", ONE_OUT, convergence=asked)
    c = await _ask(runner, "c", ONE_OUT, convergence=cluster)
    assert _op(hosts, b.id).waiting and _op(hosts, c.id).waiting
    assert hosts.transaction(operations.recover) == 0  # kept across a restart

    queue = MigrationQueue(store, HostClients(timeout=5.0), Policy.EVEN_SPREAD, ONE_OUT,
                           convergence=cluster)  # fmt: skip
    _landed(hosts, "a", "h2")
    assert await queue.run_once() == [b.id]
    _lands(hosts, "b", b.id)
    assert await queue.run_once() == [c.id]
    assert [(r.vm_id, r.policy) for r in recording.requests] == [
        (
            "id-b",
            agent.HostMigrationPolicy(max_downtime_ms=40, allow_post_copy=True, stall_seconds=9),
        ),
        ("id-c", agent.HostMigrationPolicy(max_downtime_ms=300, auto_converge=True)),
    ]


def test_held_back_names_the_limit_reached() -> None:
    h1 = host_row("h1", 1024)
    h2 = host_row("h2", 1024)
    counts = InFlight()
    limits = MigrationLimits(outgoing_per_host=2, incoming_per_host=1, cluster=3)
    assert held_back(limits, counts, h1, h2) == ""
    counts.add("id-h3", "id-h2")
    assert held_back(limits, counts, h1, h2) == "waiting: host h2 has 1 incoming"
    counts.add("id-h1", "id-h4")
    counts.add("id-h1", "id-h5")
    assert held_back(limits, counts, h1, h2) == "waiting: the cluster has 3 migrations under way"
    assert held_back(MigrationLimits(cluster=10), counts, h1, h2) == (
        "waiting: host h1 has 2 outgoing"
    )


def test_the_operation_shows_what_it_waits_for_only_while_it_runs(hosts: Database) -> None:
    def work(s: Session) -> tuple[str, str]:
        vm = repo.find_vm(s, "a")
        assert vm is not None
        op = operations.begin(s, verbs.MIGRATE.kind, vm, Call("MigrateVm"))
        op.waiting, op.message = True, "waiting: host h1 has 2 outgoing"
        shown = convert.operation(op).message
        operations.failed(s, op.id, "CANCELLED", "cancelled")
        return shown, convert.operation(op).message

    assert hosts.transaction(work) == ("waiting: host h1 has 2 outgoing", "")
