"""The client's models against the protos: every enum has the API's names and
numbers, and a message read and written back is the same message."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import affinity_group_service_pb2 as aff_api
from virtplane.v1 import host_pb2, operation_pb2, vm_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import vm_service_pb2 as vm_api

from virtplane_client import convert, models
from virtplane_client.models.enums import ProtoEnum


@pytest.mark.parametrize(
    ("ours", "theirs", "prefix"),
    [
        (models.VmState, vm_pb2.Vm.State, "STATE_"),
        (models.ExitReason, vm_pb2.Vm.ExitReason, "EXIT_REASON_"),
        (models.Origin, vm_pb2.Vm.Origin, "ORIGIN_"),
        (models.DiskFormat, vm_pb2.Disk.Format, "FORMAT_"),
        (models.NicKind, vm_pb2.Nic.Kind, "KIND_"),
        (models.AgentState, vm_pb2.GuestInfo.AgentState, "AGENT_STATE_"),
        (models.ChannelState, vm_pb2.GuestInfo.ChannelState, "CHANNEL_STATE_"),
        (models.HostState, host_pb2.Host.State, "STATE_"),
        (models.OperationKind, operation_pb2.Operation.Kind, "KIND_"),
        (models.OperationState, operation_pb2.Operation.State, "STATE_"),
        (models.MigrationPhase, operation_pb2.MigrationTransfer.Phase, "PHASE_"),
        (models.Polarity, aff_api.AffinityGroup.Polarity, "POLARITY_"),
        (models.BalancingPolicy, host_api.BalancingPolicy, "BALANCING_POLICY_"),
        (models.ChangeKind, vm_api.WatchVmsResponse.Kind, "KIND_"),
    ],
)
def test_each_enum_is_the_apis(ours: type[ProtoEnum], theirs: EnumTypeWrapper, prefix: str) -> None:
    assert [(m.name, m.value) for m in ours] == [
        (name.removeprefix(prefix), number) for name, number in theirs.items()
    ]
    assert ours(999) is ours(0)  # a number from a newer server: UNSPECIFIED


def test_a_spec_reads_and_writes_back_unchanged() -> None:
    spec = vm_pb2.VmSpec(
        vcpus=2,
        memory_mib=256,
        boot=vm_pb2.BootSource(kernel_path="/k", initrd_path="/i", cmdline="quiet"),
        nics=[
            vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER),
            vm_pb2.Nic(name="nic1", kind=vm_pb2.Nic.KIND_NETWORK, network="default"),
        ],
        disks=[vm_pb2.Disk(name="d0", path="/d", format=vm_pb2.Disk.FORMAT_QCOW2, read_only=True)],
        highly_available=True,
        pinned_host="h1",
        start_paused=True,
        custom_properties={"tier": "gold"},
    )
    assert convert.spec_message(convert.spec(spec)) == spec


def test_times_are_aware_utc_and_unset_ones_none() -> None:
    at = Timestamp()
    at.FromDatetime(dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC))
    op = convert.operation(
        operation_pb2.Operation(id="o", phases=operation_pb2.OperationPhases(create_time=at))
    )
    assert op.phases.create_time == dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    assert op.phases.done_time is None and op.error is None


def test_an_update_names_only_what_it_changes() -> None:
    values, paths = convert.update_message(
        models.VmUpdate(name="web", memory_mib=512, cmdline="", start_paused=False)
    )
    assert paths == ["name", "spec.memory_mib", "spec.boot.cmdline", "spec.start_paused"]
    assert (values.name, values.spec.memory_mib) == ("web", 512)
