from __future__ import annotations

from virtplane.v1 import host_agent_service_pb2 as agent_pb2

from controller.lifecycle import transitions
from db.enums import ExitReason, VmState
from db.models import GuestFact, Vm

HostVm = agent_pb2.HostVm


def _vm(state: VmState, host: str | None = "h1") -> Vm:
    return Vm(
        id="v",
        name="v",
        vcpus=1,
        memory_mib=1,
        kernel_path="/k",
        state=state,
        host_id=host,
        exit_reason=ExitReason.NONE,
        status_message="",
        revision=1,
    )


def _report(state: int, reason: int = 0, message: str = "") -> agent_pb2.HostVm:
    return HostVm(vm_id="v", state=state, exit_reason=reason, message=message)  # type: ignore[arg-type]


def test_running_domain_means_powering_up_then_report_means_up() -> None:
    vm = _vm(VmState.WAIT_FOR_LAUNCH)
    seen = []
    assert transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_RUNNING))
    seen.append(vm.state)
    assert not transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_RUNNING))
    assert transitions.apply_guest_report(vm, "h1")
    seen.append(vm.state)
    assert not transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_RUNNING))
    seen.append(vm.state)
    assert seen == [VmState.POWERING_UP, VmState.UP, VmState.UP]


def test_reports_from_another_host_are_ignored() -> None:
    vm = _vm(VmState.UP)
    assert not transitions.apply_host_vm(vm, "h2", _report(HostVm.STATE_DOWN))
    assert not transitions.apply_guest_report(_vm(VmState.POWERING_UP), "h2")
    assert vm.state is VmState.UP


def test_down_carries_the_exit_reason_and_leaves_the_host() -> None:
    vm = _vm(VmState.POWERING_DOWN)
    transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_DOWN, HostVm.EXIT_REASON_DESTROYED))
    assert (vm.state, vm.exit_reason, vm.host_id) == (VmState.DOWN, ExitReason.USER_STOP, None)

    vm = _vm(VmState.UP)
    transitions.apply_host_vm(
        vm, "h1", _report(HostVm.STATE_DOWN, HostVm.EXIT_REASON_START_FAILED, "no kernel")
    )
    assert (vm.state, vm.exit_reason, vm.status_message) == (
        VmState.DOWN,
        ExitReason.START_FAILED,
        "no kernel",
    )


def test_destroyed_behind_our_back_says_so() -> None:
    vm = _vm(VmState.UP)
    transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_DOWN, HostVm.EXIT_REASON_DESTROYED))
    assert vm.exit_reason is ExitReason.USER_STOP
    assert "destroyed on its host" in vm.status_message


def test_unreachable_host_makes_vms_unknown_never_down() -> None:
    vm = _vm(VmState.UP)
    assert transitions.host_lost(vm)
    assert (vm.state, vm.host_id) == (VmState.UNKNOWN, "h1")
    assert not transitions.host_lost(vm)
    down = _vm(VmState.DOWN, None)
    assert not transitions.host_lost(down)


def test_a_vm_migrating_off_an_unreachable_host_waits_for_the_destinations_report() -> None:
    vm = _vm(VmState.MIGRATING_FROM)
    assert transitions.host_lost(vm)
    assert (vm.state, vm.host_id) == (VmState.MIGRATING_FROM, "h1")
    assert vm.status_message == transitions.SOURCE_LOST
    assert not transitions.host_lost(vm)  # no change the second time
    # The transfer landed: the destination's report places it there.
    assert transitions.apply_host_vm(vm, "h2", _report(HostVm.STATE_RUNNING))
    assert (vm.state, vm.host_id) == (VmState.UP, "h2")


def test_a_vm_migrating_off_an_unreachable_host_that_comes_back_running_it_is_up_there() -> None:
    vm = _vm(VmState.MIGRATING_FROM)
    transitions.host_lost(vm)
    assert transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_RUNNING, message="aborted"))
    assert (vm.state, vm.host_id, vm.status_message) == (VmState.UP, "h1", "aborted")


def test_unknown_vm_found_running_again_is_up_when_its_guest_had_reported() -> None:
    vm = _vm(VmState.UNKNOWN)
    vm.guest_facts.append(GuestFact(name="hostname", value="g"))
    transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_RUNNING))
    assert vm.state is VmState.UP


def test_missing_on_host_is_lost_except_while_launching() -> None:
    launching = _vm(VmState.WAIT_FOR_LAUNCH)
    assert not transitions.missing_on_host(launching)
    vm = _vm(VmState.UP)
    assert transitions.missing_on_host(vm)
    assert (vm.state, vm.exit_reason) == (VmState.DOWN, ExitReason.LOST)


def test_hostds_reboot_and_hibernation_states_are_taken_as_reported() -> None:
    seen = []
    vm = _vm(VmState.UP)
    for state in (HostVm.STATE_REBOOT_IN_PROGRESS, HostVm.STATE_RUNNING):
        assert transitions.apply_host_vm(vm, "h1", _report(state))
        seen.append(vm.state)
    # POWERING_UP: UP again once the rebooted guest reports.
    assert seen == [VmState.REBOOT_IN_PROGRESS, VmState.POWERING_UP]

    seen = []
    vm = _vm(VmState.UP)
    for state in (HostVm.STATE_SAVING_STATE, HostVm.STATE_SUSPENDED):
        assert transitions.apply_host_vm(vm, "h1", _report(state))
        seen.append(vm.state)
    assert seen == [VmState.SAVING_STATE, VmState.SUSPENDED]
    assert vm.host_id == "h1"
    # Nothing runs on the host: its loss does not make the VM UNKNOWN.
    assert not transitions.host_lost(vm)


def test_a_vm_migrated_by_its_hosts_moves_to_the_destination_never_down() -> None:
    vm = _vm(VmState.UP)
    assert transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_MIGRATING_FROM))
    assert (vm.state, vm.host_id) == (VmState.MIGRATING_FROM, "h1")
    # The source lets go of it: not DOWN, and not lost when its list lacks it.
    transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_DOWN, HostVm.EXIT_REASON_MIGRATED))
    assert not transitions.missing_on_host(vm)
    assert (vm.state, vm.host_id) == (VmState.MIGRATING_FROM, "h1")
    # The destination's word places it there.
    assert not transitions.apply_host_vm(vm, "h2", _report(HostVm.STATE_MIGRATING_TO))
    assert transitions.apply_host_vm(vm, "h2", _report(HostVm.STATE_RUNNING))
    assert (vm.state, vm.host_id, vm.exit_reason) == (VmState.UP, "h2", ExitReason.NONE)
    # The old host's late reports are stale now.
    assert not transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_DOWN))
    assert (vm.state, vm.host_id) == (VmState.UP, "h2")


def test_a_vm_whose_migration_failed_is_up_on_its_source_with_the_reason() -> None:
    vm = _vm(VmState.UP)
    assert transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_MIGRATING_FROM))
    why = "migration to h2:7070 failed: Migration without shared storage is unsafe"
    assert transitions.apply_host_vm(vm, "h1", _report(HostVm.STATE_RUNNING, message=why))
    assert (vm.state, vm.host_id, vm.status_message) == (VmState.UP, "h1", why)


def test_a_running_report_from_another_host_moves_only_a_migrating_vm() -> None:
    vm = _vm(VmState.UP)
    assert not transitions.apply_host_vm(vm, "h2", _report(HostVm.STATE_RUNNING))
    assert vm.host_id == "h1"
