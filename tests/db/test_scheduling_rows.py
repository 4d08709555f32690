"""What the scheduler reads from the database: pending bookings, vCPU usage,
affinity groups and due HA restarts, on each engine."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from controller.lifecycle.placement import book_fresh
from controller.scheduler import Policy
from db import repositories as repo
from db.enums import ExitReason, HostState, VmState
from db.models import AffinityGroup, AffinityMember, Host, Vm, utcnow
from db.session import Database


def _rows(database: Database) -> None:
    def work(s: Session) -> None:
        for name in ("h1", "h2"):
            s.add(Host(id=name, name=name, address=f"{name}:1", state=HostState.UP, cpus=4,
                       memory_total_mib=4096))  # fmt: skip
        s.flush()
        for name, state, host in (
            ("booked", VmState.WAIT_FOR_LAUNCH, "h1"),
            ("running", VmState.POWERING_UP, "h1"),
            ("peer", VmState.UP, "h2"),
            ("down", VmState.DOWN, None),
        ):
            s.add(Vm(id=name, name=name, vcpus=2, memory_mib=512, kernel_path="/k", state=state,
                     host_id=host, revision=0))  # fmt: skip
        s.flush()
        members = [AffinityMember(vm_id="peer"), AffinityMember(vm_id="down")]
        s.add(AffinityGroup(id="g", name="apart", positive=False, enforcing=True, members=members))

    database.transaction(work)


def test_a_booked_vm_is_pending_until_it_runs(database: Database) -> None:
    _rows(database)
    assert database.transaction(repo.host_pending) == {"h1": (512, 2)}
    # Used counts pending and running alike: that is what placement reads.
    assert database.transaction(repo.host_usage) == {"h1": (1024, 4, 2), "h2": (512, 2, 1)}


def test_affinity_groups_name_the_hosts_of_the_other_members(database: Database) -> None:
    _rows(database)
    assert database.transaction(lambda s: repo.affinity_of(s, "down")) == [
        ("apart", False, True, {"h2"})
    ]
    assert database.transaction(lambda s: repo.affinity_of(s, "running")) == []


def test_a_booking_honours_the_groups_and_counts_vcpus(database: Database) -> None:
    _rows(database)

    def book(s: Session) -> str:
        vm = repo.find_vm(s, "down")
        assert vm is not None
        return book_fresh(s, vm, Policy.EVEN_SPREAD, automatic=False).host_name

    # h2 has more memory free, but the negative group keeps "down" off it.
    assert database.transaction(book) == "h1"
    assert database.transaction(repo.host_pending)["h1"] == (1024, 4)


def test_only_due_restarts_of_down_ha_vms_are_found(database: Database) -> None:
    _rows(database)
    now = utcnow()

    def plan(s: Session) -> None:
        for name, ha, due in (("down", True, -1), ("peer", True, -1)):
            vm = s.get_one(Vm, name)
            vm.highly_available = ha
            vm.ha_restart_at = now + dt.timedelta(seconds=due)
        s.get_one(Vm, "down").exit_reason = ExitReason.CRASHED

    database.transaction(plan)
    due = database.transaction(lambda s: [v.name for v in repo.due_ha_restarts(s, now)])
    assert due == ["down"]  # peer is UP: nothing to restart
    later = database.transaction(
        lambda s: [v.name for v in repo.due_ha_restarts(s, now - dt.timedelta(seconds=5))]
    )
    assert later == []
