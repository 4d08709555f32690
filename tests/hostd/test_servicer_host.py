"""HostAgentService end to end, the host: capabilities, statistics, and what a restarted
hostd adopts (GetRecoveryReport).

A real grpc.aio server, hostd, libvirt's test driver (fixtures: served, small_journal).
"""

from __future__ import annotations

from pathlib import Path

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd.model import VmState
from hostd.server import Hostd
from tests.support import served as serving
from tests.support.connect import hostd_channel
from tests.support.hostd_rig import vm_config
from tests.support.waiting import next_item

S = pb.HostVm


async def test_host_capabilities(served: serving.Served) -> None:
    caps = await served.stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
    assert caps.hypervisor_type == "qemu"
    assert caps.cpus >= 1
    assert caps.memory_total_mib >= caps.memory_free_mib > 0
    assert caps.hostname


async def test_host_stats(served: serving.Served, boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    while vms.get(config.vm_id).state != VmState.RUNNING:
        await next_item(served.hostd.journal.follow(served.hostd.journal.last_sequence), "RUNNING")
    stats = await served.stub.GetHostStats(pb.HostAgentServiceGetHostStatsRequest())
    assert stats.vms_running == 1
    assert stats.domains_active >= 2  # test:///default's own "test" domain too
    assert stats.hypervisor_type == "qemu"
    assert stats.memory_total_mib >= stats.memory_free_mib > 0
    assert stats.time.seconds > 0


async def test_a_restarted_hostd_adopts_its_domains(
    served: serving.Served, boot_files: tuple[str, str], short_tmp: Path
) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    while not any(vm.state == VmState.RUNNING for vm in vms.list()):
        events = served.hostd.journal.follow(served.hostd.journal.last_sequence)
        await next_item(events, "RUNNING")
    second = Hostd(served.hostd.config)  # the same libvirt (test:///default is shared)
    await second.start()
    try:
        adopted = second.vms.get(config.vm_id)
        assert (adopted.state, adopted.message) == (VmState.RUNNING, "recovered")
        assert "test" not in {vm.vm_id for vm in second.vms.list()}
    finally:
        await second.stop(grace=1)


async def test_the_recovery_report_lists_adopted_and_external(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    config = vm_config(boot_files[0])
    await served.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vms = served.hostd.vms
    while vms.get(config.vm_id).state != VmState.RUNNING:
        await next_item(served.hostd.journal.follow(served.hostd.journal.last_sequence), "RUNNING")
    second = Hostd(served.hostd.config)  # the same libvirt (test:///default is shared)
    port = await second.start()
    channel = hostd_channel(f"127.0.0.1:{port}", served.pki, served.host_id)
    try:
        stub = pb_grpc.HostAgentServiceStub(channel)
        report = (
            await stub.GetRecoveryReport(pb.HostAgentServiceGetRecoveryReportRequest())
        ).report
        adopted = {a.vm_id: a for a in report.adopted}
        assert adopted[config.vm_id].state == S.STATE_RUNNING
        assert adopted[config.vm_id].reason == "its domain is running"
        external = {e.name: e.reason for e in report.external}
        assert external["test"] == "no virtplane metadata: not created by hostd"
    finally:
        await channel.close(None)
        await second.stop(grace=1)
