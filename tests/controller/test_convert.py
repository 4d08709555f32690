from __future__ import annotations

import datetime as dt

from virtplane.v1 import vm_pb2

from controller import convert
from db.enums import DiskFormat, ExitReason, NicKind, VmState
from db.models import Disk, GuestFact, Nic, Vm

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(seconds=30)


def _vm() -> Vm:
    vm = Vm(
        id="id-1", name="web", vcpus=2, memory_mib=512, kernel_path="/k", initrd_path="/i",
        cmdline="console=ttyS0", state=VmState.UP, host_id="h", exit_reason=ExitReason.NONE,
        status_message="", revision=7, state_changed_at=T0,
    )  # fmt: skip
    vm.nics.append(Nic(position=0, name="nic0", kind=NicKind.USER, mac_address="52:54:00:00:00:01"))
    vm.nics.append(
        Nic(
            position=1,
            name="nic1",
            kind=NicKind.NETWORK,
            network="default",
            mac_address="52:54:00:00:00:02",
        )
    )
    vm.disks.append(Disk(position=0, name="root", path="/img/root.qcow2", format=DiskFormat.QCOW2))
    vm.disks.append(
        Disk(position=1, name="seed", path="/img/seed.img", format=DiskFormat.RAW, read_only=True)
    )
    return vm


def test_the_host_gets_the_whole_configuration() -> None:
    config = convert.vm_config(_vm())
    assert (config.vm_id, config.name) == ("id-1", "web")
    assert (config.spec.vcpus, config.spec.memory_mib) == (2, 512)
    assert (config.spec.boot.kernel_path, config.spec.boot.initrd_path) == ("/k", "/i")
    assert config.spec.boot.cmdline == "console=ttyS0"
    assert [(n.name, n.kind, n.network, n.mac_address) for n in config.spec.nics] == [
        ("nic0", vm_pb2.Nic.KIND_USER, "", "52:54:00:00:00:01"),
        ("nic1", vm_pb2.Nic.KIND_NETWORK, "default", "52:54:00:00:00:02"),
    ]
    assert [(d.name, d.path, d.format, d.read_only) for d in config.spec.disks] == [
        ("root", "/img/root.qcow2", vm_pb2.Disk.FORMAT_QCOW2, False),
        ("seed", "/img/seed.img", vm_pb2.Disk.FORMAT_RAW, True),
    ]


def _fact(name: str, value: object, source: str, at: dt.datetime) -> GuestFact:
    return GuestFact(
        vm_id="id-1", name=name, value=value, source=source, observed_at=at, received_at=at
    )


def test_guest_facts_round_trip_and_keep_the_agent_state_apart() -> None:
    info = vm_pb2.GuestInfo(
        hostname="g", os_name="Debian", os_version="12", kernel_release="6.1",
        interfaces=[vm_pb2.GuestInterface(name="eth0", ipv4_addresses=["10.0.2.15"])],
        applications=["a 1", "b 2"], uptime_seconds=3.5, agent_version="0.1.0",
        agent_state=vm_pb2.GuestInfo.AGENT_STATE_NOT_RESPONDING, fqdn="g.example.org",
        timezone="Europe/Paris", cpus=2, memory_total_kib=262144, memory_free_kib=1000,
        architecture="x86_64",
        filesystems=[
            vm_pb2.GuestFilesystem(mount_point="/", type="ext4", total_bytes=10, used_bytes=4)
        ],
        users=[vm_pb2.GuestUser(name="root", terminal="ttyS0")],
        channel_state=vm_pb2.GuestInfo.CHANNEL_STATE_THROTTLED,
        channel_message="over its budget: 5 messages dropped",
    )  # fmt: skip
    info.users[0].login_time.FromDatetime(T0)
    info.last_heard_time.FromDatetime(T1)
    facts = [_fact(k, v, "guestd", T0) for k, v in convert.guest_facts(info).items()]
    facts.append(_fact("agent", convert.agent_fact(info), "hostd", T1))
    back = convert.guest_info(facts)
    assert back is not None
    assert back.agent_state == vm_pb2.GuestInfo.AGENT_STATE_NOT_RESPONDING
    assert back.last_heard_time.ToDatetime(dt.UTC) == T1
    # the facts stay as observed, with when they were observed
    assert back.observed_time.ToDatetime(dt.UTC) == T0
    assert (back.hostname, back.os_name, back.application_count) == ("g", "Debian", 2)
    assert back.interfaces[0].ipv4_addresses == ["10.0.2.15"]
    expected = vm_pb2.GuestInfo()
    expected.CopyFrom(info)
    for field in ("application_count", "last_report_time", "observed_time"):
        expected.ClearField(field)
        back.ClearField(field)
    assert back == expected


def test_no_facts_no_guest_info() -> None:
    assert convert.guest_info([]) is None
