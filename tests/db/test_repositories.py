from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from db import repositories as repo
from db.enums import NicKind, VmState
from db.models import Host, Nic, Vm
from db.session import Database, DuplicateRow
from tests.support.db_rig import host_row, vm_row

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _host(name: str, memory: int = 4096) -> Host:
    return host_row(name, memory, cpus=4)


def _vm(name: str, host: str | None, state: VmState, memory: int = 256) -> Vm:
    return vm_row(name, memory, state=state, host=host, revision=1)


def test_host_usage_counts_vms_placed_on_a_host_but_not_down_ones(database: Database) -> None:
    def work(s: Session) -> dict[str, tuple[int, int, int]]:
        s.add_all([_host("a"), _host("b")])
        s.flush()
        s.add_all(
            [
                _vm("v1", "id-a", VmState.UP, 512),
                _vm("v2", "id-a", VmState.WAIT_FOR_LAUNCH, 256),  # pending counts
                _vm("v3", None, VmState.DOWN, 1024),
                _vm("v4", "id-b", VmState.UNKNOWN, 128),
            ]
        )
        s.flush()
        return repo.host_usage(s)

    assert database.transaction(work) == {"id-a": (768, 2, 2), "id-b": (128, 1, 1)}


def test_find_by_id_or_name(database: Database) -> None:
    def work(s: Session) -> None:
        s.add(_host("a"))
        s.add(_vm("v1", None, VmState.DOWN))
        s.flush()
        assert repo.find_host(s, "a") is repo.find_host(s, "id-a") is not None
        assert repo.find_vm(s, "v1") is repo.find_vm(s, "id-v1") is not None
        assert repo.find_vm(s, "nope") is None

    database.transaction(work)


def test_guest_facts_update_named_ones_and_keep_the_rest(database: Database) -> None:
    def work(s: Session) -> dict[str, object]:
        vm = _vm("v1", None, VmState.DOWN)
        s.add(vm)
        s.flush()
        repo.set_guest_facts(
            s,
            vm,
            {"hostname": "a", "uptime_seconds": 1.0},
            source="t",
            observed_at=T0,
            received_at=T0,
        )
        later = T0 + dt.timedelta(seconds=5)
        repo.set_guest_facts(
            s, vm, {"uptime_seconds": 6.0}, source="t", observed_at=later, received_at=later
        )
        return {f.name: (f.value, f.observed_at.replace(tzinfo=dt.UTC)) for f in vm.guest_facts}

    facts = database.transaction(work)
    assert facts == {
        "hostname": ("a", T0),
        "uptime_seconds": (6.0, T0 + dt.timedelta(seconds=5)),
    }


def test_mac_addresses_are_unique(database: Database) -> None:
    def work(s: Session) -> None:
        for name in ("v1", "v2"):
            vm = _vm(name, None, VmState.DOWN)
            vm.nics.append(
                Nic(position=0, name="nic0", kind=NicKind.USER, mac_address="52:54:00:00:00:01")
            )
            s.add(vm)
        s.flush()

    with pytest.raises(DuplicateRow, match="mac_address"):
        database.transaction(work)
    assert not database.transaction(lambda s: repo.mac_in_use(s, "52:54:00:00:00:01"))
