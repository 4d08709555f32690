"""What only the libvirt implementation does: translation, foreign domains, the bounded queue."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import convert, domxml
from hostd.builder import build_domain
from hostd.defaults import with_defaults
from hostd.errors import (
    DomainAlreadyExists,
    DomainNotFound,
    DomainStateConflict,
    HypervisorError,
    HypervisorUnavailable,
    PeerUnavailable,
)
from hostd.hypervisor import (
    DomainAction,
    EventsLost,
    JobProgress,
    LifecycleEvent,
    LifecycleKind,
    MigrationTarget,
    StopReason,
)
from hostd.layout import StateLayout
from hostd.libvirt_driver import LibvirtHypervisor
from hostd.libvirt_driver.translate import (
    parse_job,
    parse_stats,
    state_words,
    translate_error,
    translate_lifecycle,
)
from hostd.virt_type import VirtType
from tests.support.hostd_rig import vm_config
from tests.support.waiting import next_item

TEST_URI = "test:///default"


@pytest.mark.parametrize(
    ("event", "detail", "kind", "reason"),
    [
        (libvirt.VIR_DOMAIN_EVENT_STARTED, 0, LifecycleKind.STARTED, None),
        (libvirt.VIR_DOMAIN_EVENT_RESUMED, 0, LifecycleKind.RESUMED, None),
        (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, 0, LifecycleKind.SUSPENDED, None),
        (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, 0, LifecycleKind.SHUTDOWN, None),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN,
            LifecycleKind.STOPPED,
            StopReason.SHUTDOWN,
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
            LifecycleKind.STOPPED,
            StopReason.FAILED,
        ),
        (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED,
            LifecycleKind.STOPPED,
            StopReason.SAVED,
        ),
        (libvirt.VIR_DOMAIN_EVENT_STOPPED, 99, LifecycleKind.STOPPED, StopReason.OTHER),
        (libvirt.VIR_DOMAIN_EVENT_CRASHED, 0, LifecycleKind.CRASHED, StopReason.CRASHED),
        (libvirt.VIR_DOMAIN_EVENT_DEFINED, 0, LifecycleKind.OTHER, None),
    ],
)
def test_translate_lifecycle(
    event: int, detail: int, kind: LifecycleKind, reason: StopReason | None
) -> None:
    assert translate_lifecycle("u", event, detail) == LifecycleEvent("u", kind, reason)


async def test_errors_are_translated(boot_files: tuple[str, str], tmp_path: Path) -> None:
    conn = libvirt.open(TEST_URI)
    try:
        with pytest.raises(libvirt.libvirtError) as caught:
            conn.lookupByUUIDString(str(uuid.uuid4()))
        assert isinstance(translate_error(caught.value, "u"), DomainNotFound)
        with pytest.raises(libvirt.libvirtError) as caught:
            conn.createXML("<domain", 0)
        assert isinstance(translate_error(caught.value), HypervisorError)
    finally:
        conn.close()


async def test_an_unreachable_libvirt_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(HypervisorUnavailable):
        await LibvirtHypervisor.open(f"qemu+unix:///system?socket={tmp_path}/nothing")


def _xml(config: pb.VmConfig, tmp_path: Path) -> str:
    return domxml.to_xml(
        build_domain(
            with_defaults(convert.config_from_proto(config)), VirtType.QEMU, StateLayout(tmp_path)
        )
    )


@pytest.fixture
async def driver() -> AsyncIterator[LibvirtHypervisor]:
    """The driver on libvirt's test driver."""
    driver = await LibvirtHypervisor.open(TEST_URI)
    yield driver
    await driver.close()


async def _start_transient(
    driver: LibvirtHypervisor, kernel: str, tmp_path: Path
) -> tuple[pb.VmConfig, str]:
    """Starts a transient domain of a fresh VM; its config and XML."""
    config = vm_config(kernel)
    xml = _xml(config, tmp_path)
    await driver.start(xml, persistent=False, paused=False)
    return config, xml


async def test_destroying_twice(
    driver: LibvirtHypervisor, boot_files: tuple[str, str], tmp_path: Path
) -> None:
    config, xml = await _start_transient(driver, boot_files[0], tmp_path)
    with pytest.raises(DomainStateConflict):
        await driver.start(xml, persistent=False, paused=False)
    await driver.act(config.vm_id, DomainAction.DESTROY)
    with pytest.raises(DomainNotFound):
        await driver.act(config.vm_id, DomainAction.DESTROY)


async def test_defining_over_a_running_domain_is_refused(
    driver: LibvirtHypervisor, boot_files: tuple[str, str], tmp_path: Path
) -> None:
    config, xml = await _start_transient(driver, boot_files[0], tmp_path)
    with pytest.raises(DomainAlreadyExists):
        await driver.start(xml, persistent=True, paused=False)
    (domain,) = [d for d in await driver.list_domains() if d.uuid == config.vm_id]
    assert (domain.active, domain.persistent) == (True, False)
    await driver.act(config.vm_id, DomainAction.DESTROY)


def test_state_words() -> None:
    assert state_words(libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED) == (
        "running",
        "booted",
    )
    assert state_words(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_SAVE) == (
        "paused",
        "save",
    )
    assert state_words(libvirt.VIR_DOMAIN_SHUTOFF, 99) == ("shut off", "unknown")


def test_stats_records_are_parsed() -> None:
    # The shape domainListGetStats gave for a TCG guest with one tap NIC and one disk.
    stats = parse_stats(
        {
            "state.state": 1,
            "state.reason": 1,
            "cpu.time": 7796139000,
            "cpu.user": 7480030000,
            "cpu.system": 316108000,
            "balloon.current": 262144,
            "balloon.maximum": 262144,
            "balloon.rss": 278152,
            "vcpu.current": 1,
            "net.count": 2,
            "net.0.name": "vnet0",
            "net.0.rx.bytes": 10,
            "net.0.rx.pkts": 1,
            "net.0.tx.bytes": 20,
            "net.0.tx.drop": 3,
            "block.count": 1,
            "block.0.name": "vda",
            "block.0.path": "/srv/images/data0.img",
            "block.0.rd.bytes": 4096,
            "block.0.wr.reqs": 2,
            "dirtyrate.calc_mode": "page-sampling",
        }
    )
    assert (stats.state_name, stats.state_reason, stats.vcpus) == ("running", "booted", 1)
    assert (stats.cpu_time_ns, stats.memory_rss_kib) == (7796139000, 278152)
    # net.1 has no name: a user-mode NIC, with nothing on the host to count.
    assert [(n.name, n.rx_bytes, n.tx_bytes, n.tx_drops) for n in stats.nics] == [
        ("vnet0", 10, 20, 3)
    ]
    assert [(d.name, d.path, d.read_bytes, d.write_requests) for d in stats.disks] == [
        ("vda", "/srv/images/data0.img", 4096, 2)
    ]


async def test_domains_without_hostd_metadata_have_none() -> None:
    driver = await LibvirtHypervisor.open(TEST_URI)
    try:
        # test:///default always has a running domain named "test", not hostd's.
        assert await asyncio.to_thread(_default_domain_is_active)
        (domain,) = [d for d in await driver.list_domains() if d.name == "test"]
        assert domain.metadata is None
        assert domain.active
    finally:
        await driver.close()


def _default_domain_is_active() -> bool:
    conn = libvirt.open(TEST_URI)
    try:
        return bool(conn.lookupByName("test").isActive())
    finally:
        conn.close()


async def test_a_full_queue_drops_events_then_reports_the_loss(
    boot_files: tuple[str, str], tmp_path: Path
) -> None:
    driver = await LibvirtHypervisor.open(TEST_URI, event_queue_size=2)
    layout = StateLayout(tmp_path)
    configs = [vm_config(boot_files[0]) for _ in range(4)]
    try:
        for config in configs:  # 8 events, nobody consuming
            xml = domxml.to_xml(
                build_domain(
                    with_defaults(convert.config_from_proto(config)), VirtType.QEMU, layout
                )
            )
            await driver.start(xml, persistent=False, paused=False)
            await driver.act(config.vm_id, DomainAction.DESTROY)
        events = driver.events()
        seen: list[object] = []
        while not seen or not isinstance(seen[-1], EventsLost):
            seen.append(await next_item(events, "EventsLost"))
        lost = seen[-1]
        assert isinstance(lost, EventsLost)
        assert lost.dropped >= 1
        assert len(seen) - 1 + lost.dropped <= 8
    finally:
        await driver.close()


def _meminfo_kib(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise AssertionError(f"{field} not in /proc/meminfo")


async def test_host_memory_is_the_whole_hosts(system_libvirt: str) -> None:
    """The total is /proc/meminfo's, not the sum of the NUMA cells'; free counts the cache."""
    driver = await LibvirtHypervisor.open(system_libvirt)
    try:
        info = await driver.host_info()
    finally:
        await driver.close()
    assert info.memory_total_mib == _meminfo_kib("MemTotal") // 1024
    assert _meminfo_kib("MemFree") // 1024 <= info.memory_free_mib + 64
    assert info.memory_free_mib <= info.memory_total_mib


async def test_host_memory_without_node_statistics_comes_from_the_cells() -> None:
    driver = await LibvirtHypervisor.open(TEST_URI)
    try:
        info = await driver.host_info()
    finally:
        await driver.close()
    conn = libvirt.open(TEST_URI)
    try:
        assert info.memory_total_mib == conn.getInfo()[1]
        assert info.memory_free_mib == conn.getFreeMemory() // (1024 * 1024)
    finally:
        conn.close()


async def test_an_unreachable_destination_hypervisor_is_named(
    boot_files: tuple[str, str], tmp_path: Path
) -> None:
    driver = await LibvirtHypervisor.open(TEST_URI)
    config = vm_config(boot_files[0])
    nowhere = f"qemu+unix:///system?socket={tmp_path}/absent-sock"
    target = MigrationTarget(
        hypervisor_uri=nowhere,
        migration_uri="tcp://127.0.0.1:49152",
        channel_socket="/b/channel.sock",
        console_log="/b/console.log",
        state_dir="/b",
    )
    try:
        await driver.start(_xml(config, tmp_path), persistent=False, paused=False)
        with pytest.raises(
            PeerUnavailable, match=re.escape(f"hypervisor at {nowhere} cannot be reached")
        ):
            await driver.migrate(config.vm_id, target)
        await driver.act(config.vm_id, DomainAction.DESTROY)
    finally:
        await driver.close()


def test_job_statistics_are_parsed() -> None:
    stats = {
        "type": libvirt.VIR_DOMAIN_JOB_COMPLETED,
        "time_elapsed": 465,
        "downtime": 54,
        "data_total": 269230080,
        "data_processed": 104981925,
        "data_remaining": 0,
        "memory_bps": 505716884,
        "memory_dirty_rate": 7,
        "memory_iteration": 3,
    }
    assert parse_job(stats) == JobProgress(
        elapsed_ms=465,
        data_total=269230080,
        data_processed=104981925,
        data_remaining=0,
        bytes_per_second=505716884,
        dirty_pages_per_second=7,
        iterations=3,
        downtime_ms=54,
    )
    assert parse_job({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED}) == JobProgress()
