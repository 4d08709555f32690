"""hostd's domain types to and from the API's messages: the one place they meet.

Used at hostd's edges only: the gRPC servicer, the peers (a migration's
calls to another hostd), the journal WatchEvents streams, and the stored
configuration (a domain's <metadata>, a hibernated VM's saved .config),
which keeps the serialised VmConfig byte for byte as before, so that what an
older hostd stored is still read.

A number an enum of the API does not define (a client built on a newer API)
is refused here, naming its field, as validation names the others.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import model
from hostd.convergence import MigrationPolicy
from hostd.guest_info import timestamp
from virtplane_common.errors import InvalidArgument
from virtplane_common.validation import clean_agent_version

E = TypeVar("E", bound=model.ApiEnum)


def _enum(kind: type[E], value: int, field: str) -> E:
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(member.api_name for member in kind if member)
        raise InvalidArgument(field, f"unknown value {value}; known: {names}") from None


# -- the VM's configuration


def config_from_proto(config: pb.VmConfig) -> model.VmConfig:
    """The domain form of a VmConfig; InvalidArgument for an enum value the API lacks."""
    return model.VmConfig(
        vm_id=config.vm_id,
        name=config.name,
        spec=_spec(config.spec),
        persistence=_enum(model.Persistence, config.persistence, "config.persistence"),
        console=_enum(model.ConsoleKind, config.console.kind, "config.console.kind"),
        custom_properties=dict(config.custom_properties),
        # The guest's own word, echoed back: cleaned, never refused.
        guest_agent_version=clean_agent_version(config.guest_agent_version),
    )


def _spec(spec: vm_pb2.VmSpec) -> model.VmSpec:
    boot = spec.boot
    return model.VmSpec(
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        boot=model.BootSource(boot.kernel_path, boot.initrd_path, boot.cmdline),
        nics=tuple(_nic(index, nic) for index, nic in enumerate(spec.nics)),
        disks=tuple(_disk(index, disk) for index, disk in enumerate(spec.disks)),
        highly_available=spec.highly_available,
        pinned_host=spec.pinned_host,
        start_paused=spec.start_paused,
        custom_properties=dict(spec.custom_properties),
    )


def _nic(index: int, nic: vm_pb2.Nic) -> model.Nic:
    try:
        kind = model.NicKind(nic.kind)
    except ValueError:
        field = f"config.spec.nics[{index}].kind"
        raise InvalidArgument(field, "must be KIND_USER or KIND_NETWORK") from None
    return model.Nic(nic.name, kind, nic.network, nic.mac_address)


def _disk(index: int, disk: vm_pb2.Disk) -> model.Disk:
    fmt = _enum(model.DiskFormat, disk.format, f"config.spec.disks[{index}].format")
    return model.Disk(disk.name, disk.path, fmt, disk.read_only)


def config_to_proto(config: model.VmConfig) -> pb.VmConfig:
    spec = config.spec
    return pb.VmConfig(
        vm_id=config.vm_id,
        name=config.name,
        spec=vm_pb2.VmSpec(
            vcpus=spec.vcpus,
            memory_mib=spec.memory_mib,
            boot=vm_pb2.BootSource(
                kernel_path=spec.boot.kernel_path,
                initrd_path=spec.boot.initrd_path,
                cmdline=spec.boot.cmdline,
            ),
            nics=[_nic_to_proto(nic) for nic in spec.nics],
            disks=[_disk_to_proto(disk) for disk in spec.disks],
            highly_available=spec.highly_available,
            pinned_host=spec.pinned_host,
            start_paused=spec.start_paused,
            custom_properties=dict(spec.custom_properties),
        ),
        persistence=pb.VmConfig.Persistence.ValueType(config.persistence),
        console=pb.Console(kind=pb.Console.Kind.ValueType(config.console))
        if config.console
        else None,
        custom_properties=dict(config.custom_properties),
        guest_agent_version=config.guest_agent_version,
    )


def _nic_to_proto(nic: model.Nic) -> vm_pb2.Nic:
    kind = vm_pb2.Nic.Kind.ValueType(nic.kind)
    return vm_pb2.Nic(name=nic.name, kind=kind, network=nic.network, mac_address=nic.mac_address)


def _disk_to_proto(disk: model.Disk) -> vm_pb2.Disk:
    fmt = vm_pb2.Disk.Format.ValueType(disk.format)
    return vm_pb2.Disk(name=disk.name, path=disk.path, format=fmt, read_only=disk.read_only)


def config_to_bytes(config: model.VmConfig) -> bytes:
    """The stored form of a configuration (metadata, saved state): a serialised VmConfig."""
    return config_to_proto(config).SerializeToString(deterministic=True)


def config_from_bytes(data: bytes) -> model.VmConfig:
    """Reads the stored form; DecodeError or InvalidArgument when it is not one."""
    return config_from_proto(pb.VmConfig.FromString(data))


# -- states, migrations, recovery


def status_to_proto(status: model.VmStatus) -> pb.HostVm:
    proto = pb.HostVm(
        vm_id=status.vm_id,
        state=pb.HostVm.State.ValueType(status.state),
        exit_reason=pb.HostVm.ExitReason.ValueType(status.exit_reason),
        message=status.message,
    )
    if status.guest is not None:
        proto.guest.CopyFrom(status.guest)
    return proto


_DESTINATION_FIELDS = tuple(f.name for f in dataclasses.fields(model.MigrationDestination))
"""The same names, all strings, in the message and the dataclass."""


def destination_from_proto(destination: pb.MigrationDestination) -> model.MigrationDestination:
    return model.MigrationDestination(
        **{name: getattr(destination, name) for name in _DESTINATION_FIELDS}
    )


def destination_to_proto(destination: model.MigrationDestination) -> pb.MigrationDestination:
    return pb.MigrationDestination(**dataclasses.asdict(destination))


def policy_from_proto(policy: pb.HostMigrationPolicy) -> MigrationPolicy:
    """A migration's policy; InvalidArgument naming a field out of range."""
    return MigrationPolicy(
        max_downtime_ms=policy.max_downtime_ms,
        auto_converge=policy.auto_converge,
        allow_post_copy=policy.allow_post_copy,
        stall_seconds=policy.stall_seconds,
        completion_timeout_seconds=policy.completion_timeout_seconds,
    ).check()


def progress_to_proto(progress: model.MigrationProgress) -> pb.MigrationProgress:
    job = progress.job
    proto = pb.MigrationProgress(
        vm_id=progress.vm_id,
        direction=pb.MigrationProgress.Direction.ValueType(progress.direction),
        phase=pb.MigrationProgress.Phase.ValueType(progress.phase),
        peer_address=progress.peer_address,
        start_time=timestamp(progress.started_ns),
        data_total_bytes=job.data_total,
        data_processed_bytes=job.data_processed,
        data_remaining_bytes=job.data_remaining,
        bytes_per_second=job.bytes_per_second,
        dirty_pages_per_second=job.dirty_pages_per_second,
        iterations=job.iterations,
        elapsed_ms=job.elapsed_ms,
        downtime_ms=job.downtime_ms,
        message=progress.message,
    )
    if progress.ended_ns:
        proto.end_time.CopyFrom(timestamp(progress.ended_ns))
    return proto


def report_to_proto(report: model.RecoveryReport) -> pb.RecoveryReport:
    proto = pb.RecoveryReport()
    if report.time_ns:
        proto.time.CopyFrom(timestamp(report.time_ns))
    for adopted in report.adopted:
        state = pb.HostVm.State.ValueType(adopted.state)
        proto.adopted.add(vm_id=adopted.vm_id, state=state, reason=adopted.reason)
    for external in report.external:
        proto.external.add(uuid=external.uuid, name=external.name, reason=external.reason)
    for cleaned in report.cleaned_up:
        proto.cleaned_up.add(vm_id=cleaned.vm_id, what=cleaned.what, reason=cleaned.reason)
    return proto
