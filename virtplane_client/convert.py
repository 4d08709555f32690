"""The one place where protobuf messages become the client's models and back.

`vm()`, `host()`, `operation()`… read an API message into a frozen
dataclass; `spec_message()` and `update_message()` write what a request
carries. Nothing else in the client touches a message's fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, cast

from google.protobuf.message import Message
from virtplane.v1 import affinity_group_service_pb2 as aff_api
from virtplane.v1 import host_pb2, operation_pb2, operation_service_pb2, vm_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import vm_service_pb2 as vm_api

from virtplane_client import models as m


def time(message: Message, name: str) -> dt.datetime | None:
    """The timestamp field name of message as an aware UTC datetime; None when unset."""
    if not message.HasField(name):
        return None
    stamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=dt.UTC)  # type: ignore[no-any-return]


def spec(pb: vm_pb2.VmSpec) -> m.VmSpec:
    return m.VmSpec(
        vcpus=pb.vcpus,
        memory_mib=pb.memory_mib,
        boot=m.BootSource(pb.boot.kernel_path, pb.boot.initrd_path, pb.boot.cmdline),
        nics=tuple(m.Nic(n.name, m.NicKind(n.kind), n.network, n.mac_address) for n in pb.nics),
        disks=tuple(m.Disk(d.path, d.name, m.DiskFormat(d.format), d.read_only) for d in pb.disks),
        highly_available=pb.highly_available,
        pinned_host=pb.pinned_host,
        start_paused=pb.start_paused,
        custom_properties=dict(pb.custom_properties),
    )


def guest(pb: vm_pb2.GuestInfo) -> m.GuestInfo | None:
    """The guest agent's report; None when it has reported nothing."""
    if not pb.ListFields():
        return None
    return m.GuestInfo(
        hostname=pb.hostname,
        os_name=pb.os_name,
        os_version=pb.os_version,
        kernel_release=pb.kernel_release,
        interfaces=tuple(
            m.GuestInterface(
                i.name, i.mac_address, tuple(i.ipv4_addresses), tuple(i.ipv6_addresses)
            )
            for i in pb.interfaces
        ),
        application_count=pb.application_count,
        applications=tuple(pb.applications),
        uptime_seconds=pb.uptime_seconds,
        agent_version=pb.agent_version,
        last_report_time=time(pb, "last_report_time"),
        observed_time=time(pb, "observed_time"),
        agent_state=m.AgentState(pb.agent_state),
        last_heard_time=time(pb, "last_heard_time"),
        fqdn=pb.fqdn,
        architecture=pb.architecture,
        timezone=pb.timezone,
        cpus=pb.cpus,
        memory_total_kib=pb.memory_total_kib,
        memory_free_kib=pb.memory_free_kib,
        users=tuple(
            m.GuestUser(u.name, u.terminal, u.host, time(u, "login_time")) for u in pb.users
        ),
        filesystems=tuple(
            m.GuestFilesystem(f.mount_point, f.type, f.device, f.total_bytes, f.used_bytes)
            for f in pb.filesystems
        ),
        channel_state=m.ChannelState(pb.channel_state),
        channel_message=pb.channel_message,
    )


def vm_status(pb: vm_pb2.VmStatus) -> m.VmStatus:
    return m.VmStatus(
        state=m.VmState(pb.state),
        host_id=pb.host_id,
        exit_reason=m.ExitReason(pb.exit_reason),
        message=pb.message,
        guest=guest(pb.guest),
        revision=pb.revision,
        state_changed_time=time(pb, "state_changed_time"),
        pending_restart=tuple(pb.pending_restart),
        origin=m.Origin(pb.origin),
        start_tries=tuple(m.StartTry(t.host_id, t.host_name, t.error) for t in pb.start_tries),
        ha_restart_time=time(pb, "ha_restart_time"),
        ha_restart_count=pb.ha_restart_count,
    )


def vm(pb: vm_pb2.Vm) -> m.Vm:
    return m.Vm(
        id=pb.id,
        name=pb.name,
        spec=spec(pb.spec),
        status=vm_status(pb.status),
        cluster_id=pb.cluster_id,
        spec_version=pb.spec_version,
        next_run_spec=spec(pb.next_run_spec) if pb.HasField("next_run_spec") else None,
    )


def change(pb: vm_api.WatchVmsResponse) -> m.VmChange:
    kind = m.ChangeKind(pb.kind)
    return m.VmChange(
        kind=kind,
        vm=None if kind is m.ChangeKind.SNAPSHOT_COMPLETE else vm(pb.vm),
        revision=pb.revision,
        resumed=pb.resumed,
        reason=pb.reason,
    )


def operation(pb: operation_pb2.Operation) -> m.Operation:
    p = pb.phases
    return m.Operation(
        id=pb.id,
        kind=m.OperationKind(pb.kind),
        vm_id=pb.vm_id,
        state=m.OperationState(pb.state),
        done=pb.done,
        host_id=pb.host_id,
        error=m.OperationError(pb.error.code, pb.error.message) if pb.HasField("error") else None,
        request_id=pb.request_id,
        phases=m.OperationPhases(
            *(time(p, name) for name in m.OperationPhases.__dataclass_fields__)
        ),
        migration=migration_transfer(pb.migration) if pb.HasField("migration") else None,
        message=pb.message,
    )


def migration_transfer(pb: operation_pb2.MigrationTransfer) -> m.MigrationTransfer:
    return m.MigrationTransfer(
        phase=m.MigrationPhase(pb.phase),
        percent=pb.percent,
        data_total_bytes=pb.data_total_bytes,
        data_processed_bytes=pb.data_processed_bytes,
        data_remaining_bytes=pb.data_remaining_bytes,
        bytes_per_second=pb.bytes_per_second,
        iterations=pb.iterations,
        elapsed_ms=pb.elapsed_ms,
        downtime_ms=pb.downtime_ms,
        message=pb.message,
        update_time=time(pb, "update_time"),
    )


class VerbResponse(Protocol):
    """What every verb's response carries (StartVmResponse, StopVmResponse…)."""

    @property
    def vm(self) -> vm_pb2.Vm: ...
    @property
    def operation(self) -> operation_pb2.Operation: ...


def verb(pb: VerbResponse) -> m.VerbResult:
    """Any verb's response: each carries the VM and its operation."""
    return m.VerbResult(vm(pb.vm), operation(pb.operation))


def event(pb: operation_service_pb2.Event) -> m.Event:
    return m.Event(
        pb.id,
        time(pb, "time"),
        pb.kind,
        pb.vm_id,
        pb.host_id,
        pb.operation_id,
        pb.request_id,
        pb.message,
    )


def host(pb: host_pb2.Host) -> m.Host:
    s = pb.status
    return m.Host(
        id=pb.id,
        name=pb.name,
        address=pb.address,
        status=m.HostStatus(
            state=m.HostState(s.state),
            message=s.message,
            memory_total_mib=s.memory_total_mib,
            memory_free_mib=s.memory_free_mib,
            cpus=s.cpus,
            vms_running=s.vms_running,
            hypervisor_type=s.hypervisor_type,
            hostname=s.hostname,
            last_seen_time=time(s, "last_seen_time"),
            memory_pending_mib=s.memory_pending_mib,
            vcpus_used=s.vcpus_used,
        ),
        cluster_id=pb.cluster_id,
    )


def affinity_group(pb: aff_api.AffinityGroup) -> m.AffinityGroup:
    return m.AffinityGroup(pb.id, pb.name, m.Polarity(pb.polarity), pb.enforcing, tuple(pb.vm_ids))


def placement(pb: vm_api.ExplainPlacementResponse) -> m.Placement:
    return m.Placement(
        hosts=tuple(
            m.HostPlacement(
                h.host_id,
                h.host_name,
                tuple(m.FilterVerdict(f.filter, f.passed, f.reason) for f in h.filters),
                h.eligible,
                tuple(m.WeightScore(w.weight, w.score) for w in h.weights),
                h.score,
            )
            for h in pb.hosts
        ),
        chosen_host_id=pb.chosen_host_id,
        chosen_host_name=pb.chosen_host_name,
    )


def balancing(pb: host_api.ExplainBalancingResponse) -> m.Balancing:
    move = pb.move if pb.HasField("move") else None
    return m.Balancing(
        policy=m.BalancingPolicy(pb.policy),
        high_percent=pb.high_percent,
        low_percent=pb.low_percent,
        sustained_seconds=pb.sustained_seconds,
        move=None
        if move is None
        else m.BalancingMove(
            move.vm_id,
            move.vm_name,
            move.source_host_id,
            move.source_host_name,
            move.destination_host_id,
            move.destination_host_name,
        ),
        reason=pb.reason,
        hosts=tuple(
            m.HostLoad(
                h.host_id,
                h.host_name,
                h.memory_percent,
                h.cpu_percent,
                h.over_seconds if h.over else None,
            )
            for h in pb.hosts
        ),
    )


def guest_report(pb: vm_api.GetVmGuestInfoResponse) -> m.GuestReport:
    raw = pb.raw_report
    return m.GuestReport(
        guest=guest(pb.guest),
        facts=tuple(
            m.GuestFact(
                f.name,
                f.source,
                f.value_json,
                time(f, "observed_time"),
                time(f, "received_time"),
                f.stale,
            )
            for f in pb.facts
        ),
        raw_report=m.GuestRawReport(
            raw.report_json,
            raw.truncated,
            time(raw, "received_time"),
            raw.host_id,
            raw.unavailable_reason,
        )
        if pb.HasField("raw_report")
        else None,
    )


def spec_message(s: m.VmSpec) -> vm_pb2.VmSpec:
    """The VmSpec message of a spec."""
    return vm_pb2.VmSpec(
        vcpus=s.vcpus,
        memory_mib=s.memory_mib,
        boot=vm_pb2.BootSource(
            kernel_path=s.boot.kernel_path,
            initrd_path=s.boot.initrd_path,
            cmdline=s.boot.cmdline,
        ),
        nics=[nic_message(n) for n in s.nics],
        disks=[disk_message(d) for d in s.disks],
        highly_available=s.highly_available,
        pinned_host=s.pinned_host,
        start_paused=s.start_paused,
        custom_properties=dict(s.custom_properties),
    )


def nic_message(n: m.Nic) -> vm_pb2.Nic:
    kind = cast("vm_pb2.Nic.Kind.ValueType", n.kind.value)
    return vm_pb2.Nic(name=n.name, kind=kind, network=n.network, mac_address=n.mac_address)


def disk_message(d: m.Disk) -> vm_pb2.Disk:
    fmt = cast("vm_pb2.Disk.Format.ValueType", d.format.value)
    return vm_pb2.Disk(name=d.name, path=d.path, format=fmt, read_only=d.read_only)


def vm_state_message(state: m.VmState) -> vm_pb2.Vm.State.ValueType:
    return cast("vm_pb2.Vm.State.ValueType", state.value)


def operation_state_message(state: m.OperationState) -> operation_pb2.Operation.State.ValueType:
    return cast("operation_pb2.Operation.State.ValueType", state.value)


def polarity_message(polarity: m.Polarity) -> aff_api.AffinityGroup.Polarity.ValueType:
    return cast("aff_api.AffinityGroup.Polarity.ValueType", polarity.value)


# VmUpdate's fields: where each goes in the Vm message, in update_mask order.
_UPDATE_PATHS = {
    "name": "name",
    "vcpus": "spec.vcpus",
    "memory_mib": "spec.memory_mib",
    "kernel_path": "spec.boot.kernel_path",
    "initrd_path": "spec.boot.initrd_path",
    "cmdline": "spec.boot.cmdline",
    "highly_available": "spec.highly_available",
    "pinned_host": "spec.pinned_host",
    "start_paused": "spec.start_paused",
    "nics": "spec.nics",
    "disks": "spec.disks",
    "custom_properties": "spec.custom_properties",
}


def update_message(update: m.VmUpdate) -> tuple[vm_pb2.Vm, list[str]]:
    """The Vm message carrying an update's values, and its update_mask paths."""
    values = vm_pb2.Vm()
    paths = []
    for name, path in _UPDATE_PATHS.items():
        value = getattr(update, name)
        if value is None:
            continue
        paths.append(path)
        *parents, leaf = path.split(".")
        target: Message = values
        for parent in parents:
            target = getattr(target, parent)
        if name == "nics":
            values.spec.nics.extend(nic_message(n) for n in value)
        elif name == "disks":
            values.spec.disks.extend(disk_message(d) for d in value)
        elif name == "custom_properties":
            values.spec.custom_properties.update(value)
        else:
            setattr(target, leaf, value)
    return values, paths
