"""Conversions between database rows (and domain values) and API messages:
the servicers call these on what the services return."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from virtplane.v1 import affinity_group_service_pb2 as affinity_pb2
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_pb2, operation_pb2, operation_service_pb2, vm_pb2, vm_service_pb2
from virtplane.v1 import host_service_pb2 as host_api

from controller.balancing import BalancePolicy, BalanceSettings, Decision
from controller.migration_progress import percent
from controller.requests import StoredAnswer
from controller.scheduler import Placement
from db import models
from db.enums import DiskFormat, ExitReason, HostState, NicKind, OperationState, VmState
from virtplane_common.validation import clean_agent_version

if TYPE_CHECKING:
    from controller.host_service import FencedHost, HostView

GUESTD_SOURCE = "guestd"
HOSTD_SOURCE = "hostd"
AGENT_FACT = "agent"
_AGENT_STATES = {
    vm_pb2.GuestInfo.AGENT_STATE_RESPONDING: "RESPONDING",
    vm_pb2.GuestInfo.AGENT_STATE_NOT_RESPONDING: "NOT_RESPONDING",
}

_NIC_KINDS = {NicKind.USER: vm_pb2.Nic.KIND_USER, NicKind.NETWORK: vm_pb2.Nic.KIND_NETWORK}
_DISK_FORMATS = {DiskFormat.RAW: vm_pb2.Disk.FORMAT_RAW, DiskFormat.QCOW2: vm_pb2.Disk.FORMAT_QCOW2}


def timestamp(when: dt.datetime | None) -> Timestamp | None:
    if when is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
    return ts


def vm_state(state: VmState) -> vm_pb2.Vm.State.ValueType:
    return vm_pb2.Vm.State.Value(f"STATE_{state.value}")


def exit_reason(reason: ExitReason) -> vm_pb2.Vm.ExitReason.ValueType:
    if reason is ExitReason.NONE:
        return vm_pb2.Vm.EXIT_REASON_UNSPECIFIED
    return vm_pb2.Vm.ExitReason.Value(f"EXIT_REASON_{reason.value}")


def host_state(state: HostState) -> host_pb2.Host.State.ValueType:
    return host_pb2.Host.State.Value(f"STATE_{state.value}")


def vm_spec(vm: models.Vm) -> vm_pb2.VmSpec:
    return vm_pb2.VmSpec(
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        boot=vm_pb2.BootSource(
            kernel_path=vm.kernel_path, initrd_path=vm.initrd_path, cmdline=vm.cmdline
        ),
        nics=[
            vm_pb2.Nic(
                name=n.name, kind=_NIC_KINDS[n.kind], network=n.network, mac_address=n.mac_address
            )
            for n in vm.nics
        ],
        disks=[
            vm_pb2.Disk(
                name=d.name, path=d.path, format=_DISK_FORMATS[d.format], read_only=d.read_only
            )
            for d in vm.disks
        ],
        highly_available=bool(vm.highly_available),
        start_paused=bool(vm.start_paused),
        custom_properties=vm.custom_properties or {},
        pinned_host=vm.pinned_host_id or "",
    )


def vm_config(vm: models.Vm) -> agent_pb2.VmConfig:
    """What the host needs to run vm: its spec, devices, disks and NICs, and
    the guest agent version last seen in it (the host then awaits an agent)."""
    return agent_pb2.VmConfig(
        vm_id=vm.id,
        name=vm.name,
        spec=vm_spec(vm),
        guest_agent_version=clean_agent_version(vm.guest_agent_version or ""),
        custom_properties=vm.custom_properties or {},
    )


def next_run(stored: dict[str, Any] | None) -> tuple[vm_pb2.VmSpec | None, list[str]]:
    """The spec waiting for the next start, and the paths changed in it."""
    if not stored:
        return None, []
    spec = json_format.ParseDict(stored.get("spec", {}), vm_pb2.VmSpec())
    return spec, list(stored.get("paths", []))


def stored_next_run(spec: vm_pb2.VmSpec, paths: list[str]) -> dict[str, Any]:
    return {"spec": json_format.MessageToDict(spec), "paths": sorted(set(paths))}


def guest_info(facts: list[models.GuestFact]) -> vm_pb2.GuestInfo | None:
    if not facts:
        return None
    by_name: dict[str, Any] = {f.name: f.value for f in facts}
    agent: dict[str, Any] = by_name.get(AGENT_FACT) or {}
    reported = [f for f in facts if f.source == GUESTD_SOURCE]
    os_info: dict[str, str] = by_name.get("os") or {}
    apps: list[str] = by_name.get("applications") or []
    memory: dict[str, int] = by_name.get("memory") or {}
    info = vm_pb2.GuestInfo(
        hostname=by_name.get("hostname") or "",
        fqdn=by_name.get("fqdn") or "",
        os_name=os_info.get("name", ""),
        os_version=os_info.get("version", ""),
        kernel_release=os_info.get("kernel_release", ""),
        architecture=os_info.get("architecture", ""),
        timezone=by_name.get("timezone") or "",
        cpus=int(by_name.get("cpus") or 0),
        memory_total_kib=int(memory.get("total_kib", 0)),
        memory_free_kib=int(memory.get("free_kib", 0)),
        interfaces=[vm_pb2.GuestInterface(**i) for i in by_name.get("interfaces") or []],
        application_count=len(apps),
        applications=apps,
        users=[_guest_user(u) for u in by_name.get("users") or []],
        filesystems=[vm_pb2.GuestFilesystem(**f) for f in by_name.get("filesystems") or []],
        uptime_seconds=float(by_name.get("uptime_seconds") or 0.0),
        agent_version=by_name.get("agent_version") or "",
        last_report_time=timestamp(max((f.received_at for f in reported), default=None)),
        observed_time=timestamp(max((f.observed_at for f in reported), default=None)),
        agent_state=vm_pb2.GuestInfo.AgentState.Value(
            f"AGENT_STATE_{agent.get('state', 'UNSPECIFIED')}"
        ),
    )
    if agent.get("last_heard"):
        info.last_heard_time.FromJsonString(agent["last_heard"])
    channel: dict[str, str] = agent.get("channel") or {}
    if channel.get("state") in ("OK", "THROTTLED"):
        info.channel_state = vm_pb2.GuestInfo.ChannelState.Value(
            f"CHANNEL_STATE_{channel['state']}"
        )
        info.channel_message = channel.get("message", "")
    return info


def agent_fact(info: vm_pb2.GuestInfo) -> dict[str, Any]:
    """What hostd says of the agent itself (not a guest fact)."""
    fact: dict[str, Any] = {"state": _AGENT_STATES.get(info.agent_state, "UNSPECIFIED")}
    if info.HasField("last_heard_time"):
        fact["last_heard"] = info.last_heard_time.ToJsonString()
    if info.channel_state != vm_pb2.GuestInfo.CHANNEL_STATE_UNSPECIFIED:
        state = vm_pb2.GuestInfo.ChannelState.Name(info.channel_state)
        fact["channel"] = {
            "state": state.removeprefix("CHANNEL_STATE_"),
            "message": info.channel_message,
        }
    return fact


def _guest_user(user: dict[str, Any]) -> vm_pb2.GuestUser:
    out = vm_pb2.GuestUser(name=user["name"], terminal=user["terminal"], host=user["host"])
    if user.get("login_time"):
        out.login_time.FromJsonString(user["login_time"])
    return out


def guest_facts(info: vm_pb2.GuestInfo) -> dict[str, Any]:
    """The facts a guest report carries, as stored."""
    return {
        "hostname": info.hostname,
        "fqdn": info.fqdn,
        "os": {
            "name": info.os_name,
            "version": info.os_version,
            "kernel_release": info.kernel_release,
            "architecture": info.architecture,
        },
        "timezone": info.timezone,
        "cpus": info.cpus,
        "memory": {"total_kib": info.memory_total_kib, "free_kib": info.memory_free_kib},
        "interfaces": [
            {
                "name": i.name,
                "mac_address": i.mac_address,
                "ipv4_addresses": list(i.ipv4_addresses),
                "ipv6_addresses": list(i.ipv6_addresses),
            }
            for i in info.interfaces
        ],
        "applications": list(info.applications),
        "users": [
            {
                "name": u.name,
                "terminal": u.terminal,
                "host": u.host,
                "login_time": u.login_time.ToJsonString() if u.HasField("login_time") else "",
            }
            for u in info.users
        ],
        "filesystems": [
            {
                "mount_point": f.mount_point,
                "type": f.type,
                "device": f.device,
                "total_bytes": f.total_bytes,
                "used_bytes": f.used_bytes,
            }
            for f in info.filesystems
        ],
        "uptime_seconds": info.uptime_seconds,
        "agent_version": info.agent_version,
    }


def guest_facts_stale(facts: list[models.GuestFact]) -> bool:
    """Whether the agent was not responding when it last said anything."""
    agent = next((f.value for f in facts if f.name == AGENT_FACT), None) or {}
    return bool(agent.get("state") == "NOT_RESPONDING")


def guest_fact(fact: models.GuestFact, stale: bool = False) -> vm_service_pb2.GuestFact:
    return vm_service_pb2.GuestFact(
        stale=stale and fact.source == GUESTD_SOURCE,
        name=fact.name,
        source=fact.source,
        observed_time=timestamp(fact.observed_at),
        received_time=timestamp(fact.received_at),
        value_json=json.dumps(fact.value, sort_keys=True),
    )


def vm(row: models.Vm) -> vm_pb2.Vm:
    pending, paths = next_run(row.next_run_spec)
    return vm_pb2.Vm(
        id=row.id,
        name=row.name,
        cluster_id=row.cluster_id or models.DEFAULT_CLUSTER_ID,
        spec_version=row.spec_version or 1,
        next_run_spec=pending,
        spec=vm_spec(row),
        status=vm_pb2.VmStatus(
            state=vm_state(row.state),
            host_id=row.host_id or "",
            exit_reason=exit_reason(row.exit_reason),
            message=row.status_message,
            guest=guest_info(row.guest_facts),
            revision=row.revision,
            state_changed_time=timestamp(row.state_changed_at),
            pending_restart=paths,
            origin=vm_pb2.Vm.Origin.Value(f"ORIGIN_{row.origin.value}"),
            start_tries=[
                vm_pb2.StartTry(host_id=t["host_id"], host_name=t["host"], error=t["error"])
                for t in row.start_tries or []
            ],
            ha_restart_time=timestamp(row.ha_restart_at),
            ha_restart_count=row.ha_restart_count or 0,
        ),
    )


def host(
    row: models.Host, usage: tuple[int, int, int], pending: tuple[int, int] = (0, 0)
) -> host_pb2.Host:
    memory_used, vcpus_used, vms = usage
    return host_pb2.Host(
        id=row.id,
        name=row.name,
        address=row.address,
        cluster_id=row.cluster_id or models.DEFAULT_CLUSTER_ID,
        status=host_pb2.HostStatus(
            state=host_state(row.state),
            message=row.state_message,
            memory_total_mib=row.memory_total_mib,
            memory_free_mib=max(0, row.memory_total_mib - memory_used),
            cpus=row.cpus,
            vms_running=vms,
            hypervisor_type=row.hypervisor_type,
            hostname=row.hostname,
            last_seen_time=timestamp(row.last_seen_at),
            memory_pending_mib=pending[0],
            vcpus_used=vcpus_used,
        ),
    )


def host_view(view: HostView) -> host_pb2.Host:
    return host(view.row, view.usage, view.pending)


# The replies that carry one host (AddHost, SetHostMaintenance, ActivateHost).
HostReply = TypeVar(
    "HostReply",
    host_api.AddHostResponse,
    host_api.SetHostMaintenanceResponse,
    host_api.ActivateHostResponse,
)


def host_reply(cls: type[HostReply], answer: HostView | StoredAnswer) -> HostReply:
    """A host verb's reply: the host as the service left it, or, to a
    repeat, the reply the first call stored."""
    if isinstance(answer, StoredAnswer):
        return answer.decode(cls)
    return cls(host=host_view(answer))


def fenced_host(answer: FencedHost | StoredAnswer) -> host_api.ConfirmHostDownResponse:
    """ConfirmHostDown's reply: the host and the VMs it made DOWN, or, to a
    repeat, the reply the first call stored."""
    if isinstance(answer, StoredAnswer):
        return answer.decode(host_api.ConfirmHostDownResponse)
    return host_api.ConfirmHostDownResponse(host=host_view(answer.host), vm_ids=list(answer.vm_ids))


def placement(result: Placement) -> vm_service_pb2.ExplainPlacementResponse:
    reply = vm_service_pb2.ExplainPlacementResponse(
        hosts=[
            vm_service_pb2.HostPlacement(
                host_id=j.host.id,
                host_name=j.host.name,
                filters=[
                    vm_service_pb2.FilterVerdict(
                        filter=v.filter, passed=v.passed, reason=v.reason or ""
                    )
                    for v in j.verdicts
                ],
                eligible=j.eligible,
                weights=[
                    vm_service_pb2.WeightScore(weight=name, score=score) for name, score in j.scores
                ],
                score=j.score,
            )
            for j in result.judgements
        ]
    )
    if result.host is not None:
        reply.chosen_host_id = result.host.id
        reply.chosen_host_name = result.host.name
    return reply


_BALANCING_POLICY = {
    BalancePolicy.OFF: host_api.BALANCING_POLICY_OFF,
    BalancePolicy.EVENLY_DISTRIBUTED: host_api.BALANCING_POLICY_EVENLY_DISTRIBUTED,
}


def balancing(decision: Decision, settings: BalanceSettings) -> host_api.ExplainBalancingResponse:
    reply = host_api.ExplainBalancingResponse(
        policy=_BALANCING_POLICY[settings.policy],
        high_percent=settings.high_percent,
        low_percent=settings.low_percent,
        sustained_seconds=settings.sustained_seconds,
        reason=decision.reason,
        hosts=[
            host_api.HostLoad(
                host_id=h.host_id,
                host_name=h.host_name,
                memory_percent=h.memory_percent,
                cpu_percent=h.cpu_percent,
                over=h.over_seconds is not None,
                over_seconds=h.over_seconds or 0.0,
            )
            for h in decision.hosts
        ],
    )
    if (move := decision.move) is not None:
        reply.move.CopyFrom(
            host_api.BalancingMove(
                vm_id=move.vm_id,
                vm_name=move.vm_name,
                source_host_id=move.source_id,
                source_host_name=move.source_name,
                destination_host_id=move.destination_id,
                destination_host_name=move.destination_name,
            )
        )
    return reply


def affinity_group(row: models.AffinityGroup) -> affinity_pb2.AffinityGroup:
    group = affinity_pb2.AffinityGroup
    return group(
        id=row.id,
        name=row.name,
        polarity=group.POLARITY_POSITIVE if row.positive else group.POLARITY_NEGATIVE,
        enforcing=row.enforcing,
        vm_ids=[m.vm_id for m in row.members],
    )


def operation(op: models.Operation) -> operation_pb2.Operation:
    error = None
    if op.state is OperationState.FAILED:
        error = operation_pb2.OperationError(code=op.error_code, message=op.error_message)
    return operation_pb2.Operation(
        id=op.id,
        kind=operation_pb2.Operation.Kind.Value(f"KIND_{op.kind.value}"),
        vm_id=op.vm_id,
        host_id=op.host_id or "",
        state=operation_pb2.Operation.State.Value(f"STATE_{op.state.value}"),
        done=op.state is not OperationState.RUNNING,
        error=error,
        request_id=op.request_id or "",
        message=op.message if op.state is OperationState.RUNNING else "",
        phases=operation_pb2.OperationPhases(
            create_time=timestamp(op.created_at),
            scheduled_time=timestamp(op.scheduled_at),
            dispatched_time=timestamp(op.dispatched_at),
            accepted_time=timestamp(op.accepted_at),
            powering_up_time=timestamp(op.powering_up_at),
            up_time=timestamp(op.up_at),
            done_time=timestamp(op.done_at),
            transferring_time=timestamp(op.transferring_at),
            switched_over_time=timestamp(op.switched_over_at),
        ),
        migration=migration_transfer(op),
    )


def migration_transfer(op: models.Operation) -> operation_pb2.MigrationTransfer | None:
    """A migration's transfer as its source last reported it; None before."""
    phase = op.migration_phase
    if phase is None:
        return None
    transfer = operation_pb2.MigrationTransfer
    return transfer(
        phase=transfer.Phase.Value(f"PHASE_{phase.value}"),
        percent=percent(phase, op.migration_total_bytes, op.migration_remaining_bytes),
        data_total_bytes=op.migration_total_bytes,
        data_processed_bytes=op.migration_processed_bytes,
        data_remaining_bytes=op.migration_remaining_bytes,
        bytes_per_second=op.migration_bytes_per_second,
        iterations=op.migration_iterations,
        elapsed_ms=op.migration_elapsed_ms,
        downtime_ms=op.migration_downtime_ms,
        message=op.migration_message,
        update_time=timestamp(op.migration_updated_at),
    )


def event(row: models.Event) -> operation_service_pb2.Event:
    return operation_service_pb2.Event(
        id=row.id,
        time=timestamp(row.time),
        kind=row.kind,
        vm_id=row.vm_id or "",
        host_id=row.host_id or "",
        operation_id=row.operation_id or "",
        request_id=row.request_id or "",
        message=row.message,
        principal=row.principal or "",
    )
