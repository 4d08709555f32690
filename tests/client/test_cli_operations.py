"""The CLI's rendering of operations, pending changes and the audit log."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import operation_pb2, vm_pb2

from virtplane_client import DiskFormat, convert
from virtplane_client.cli import format as fmt
from virtplane_client.cli.main import parser

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def _at(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(T0 + dt.timedelta(seconds=seconds))
    return ts


def test_an_operation_shows_each_phase_reached_with_its_offset() -> None:
    op = operation_pb2.Operation(
        id="op-1",
        kind=operation_pb2.Operation.KIND_START_VM,
        vm_id="v1",
        state=operation_pb2.Operation.STATE_RUNNING,
        phases=operation_pb2.OperationPhases(
            create_time=_at(0), scheduled_time=_at(0.004), accepted_time=_at(0.25)
        ),
    )
    lines = fmt.operation(convert.operation(op)).splitlines()
    assert lines[:4] == [
        "operation: op-1",
        "kind:      start_vm",
        "vm:        v1",
        "state:     RUNNING",
    ]
    assert lines[4].split()[0] == "created" and lines[4].endswith("+0.000s")
    assert lines[5].split()[0] == "scheduled" and lines[5].endswith("+0.004s")
    assert lines[6].split()[0] == "accepted" and lines[6].endswith("+0.250s")
    assert len(lines) == 7  # no phase it did not reach


def test_a_failed_operation_says_why() -> None:
    op = operation_pb2.Operation(
        id="op-2",
        state=operation_pb2.Operation.STATE_FAILED,
        error=operation_pb2.OperationError(code="ABORTED", message="the VM went DOWN"),
        phases=operation_pb2.OperationPhases(create_time=_at(0)),
    )
    assert (
        "error:     ABORTED: the VM went DOWN" in fmt.operation(convert.operation(op)).splitlines()
    )


def test_pending_changes_are_shown_with_the_vm() -> None:
    vm = vm_pb2.Vm(
        name="web",
        spec=vm_pb2.VmSpec(vcpus=1, memory_mib=128),
        next_run_spec=vm_pb2.VmSpec(vcpus=2, memory_mib=256),
        spec_version=3,
        status=vm_pb2.VmStatus(state=vm_pb2.Vm.STATE_UP, pending_restart=["spec.vcpus"]),
    )
    lines = fmt.vm_detail(convert.vm(vm)).splitlines()
    assert "version: 3" in lines
    assert "pending: spec.vcpus at the next start (2 vCPU, 256 MiB)" in lines


def test_the_verbs_take_a_request_id_and_start_can_wait() -> None:
    args = parser().parse_args(["vm", "start", "web", "--request-id", "k", "--wait"])
    assert (args.vm, args.request_id, args.wait) == ("web", "k", True)
    args = parser().parse_args(["vm", "hibernate", "web"])
    assert args.request_id == ""
    args = parser().parse_args(["op", "list", "--vm", "web", "--state", "failed"])
    assert args.state == ["FAILED"]


def test_migrate_takes_a_destination_and_can_wait() -> None:
    args = parser().parse_args(["vm", "migrate", "web", "--to", "h2", "--wait"])
    assert (args.vm, args.to, args.wait, args.request_id) == ("web", "h2", True, "")
    args = parser().parse_args(["vm", "migrate", "web"])
    assert (args.to, args.wait) == ("", False)
    args = parser().parse_args(["vm", "cancel-migration", "web", "--request-id", "k"])
    assert (args.vm, args.request_id) == ("web", "k")


def test_migrate_takes_a_policy_of_its_own_or_leaves_the_clusters() -> None:
    args = parser().parse_args(
        [
            "vm",
            "migrate",
            "web",
            "--max-downtime-ms",
            "150",
            "--auto-converge",
            "--no-post-copy",
            "--stall-seconds",
            "30",
        ]
    )
    policy = (args.max_downtime_ms, args.auto_converge, args.post_copy, args.stall_seconds)
    assert policy == (150, True, False, 30)
    args = parser().parse_args(["vm", "migrate", "web"])
    assert (args.max_downtime_ms, args.auto_converge, args.post_copy, args.stall_seconds) == (
        None,
        None,
        None,
        None,
    )


def test_disks_are_given_as_path_format_and_read_only() -> None:
    args = parser().parse_args(
        [
            "vm",
            "create",
            "v",
            "--kernel",
            "/k",
            "--disk",
            "/img/a.raw",
            "--disk",
            "b.qcow2:qcow2:ro",
        ]
    )
    first, second = args.disk
    assert (first.path, first.format, first.read_only) == (
        "/img/a.raw",
        DiskFormat.UNSPECIFIED,
        False,
    )
    assert second.path.endswith("/b.qcow2") and second.path.startswith("/")
    assert (second.format, second.read_only) == (DiskFormat.QCOW2, True)


def test_custom_properties_are_given_as_key_value() -> None:
    args = parser().parse_args(
        ["vm", "create", "v", "--kernel", "/k", "--property", "tier=gold", "--property", "a=b=c"]
    )
    assert dict(args.property) == {"tier": "gold", "a": "b=c"}
