"""What only the libvirt implementation does: translation, foreign domains, the bounded queue."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import libvirt
import pytest

from hostd import domxml
from hostd.builder import build_domain
from hostd.errors import (
    DomainNotFound,
    DomainStateConflict,
    HypervisorError,
    HypervisorUnavailable,
)
from hostd.hypervisor import EventsLost, LifecycleEvent, LifecycleKind, StopReason
from hostd.layout import StateLayout
from hostd.libvirt_driver import LibvirtHypervisor, translate_error, translate_lifecycle
from hostd.virt_type import VirtType
from tests.hostd.conftest import next_item, vm_config

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


async def test_destroying_twice(boot_files: tuple[str, str], tmp_path: Path) -> None:
    driver = await LibvirtHypervisor.open(TEST_URI)
    try:
        config = vm_config(boot_files[0])
        xml = domxml.to_xml(build_domain(config, VirtType.QEMU, StateLayout(tmp_path)))
        await driver.start_transient(xml)
        with pytest.raises(DomainStateConflict):
            await driver.start_transient(xml)
        await driver.destroy(config.vm_id)
        with pytest.raises(DomainNotFound):
            await driver.destroy(config.vm_id)
    finally:
        await driver.close()


async def test_domains_without_hostd_metadata_are_not_owned() -> None:
    driver = await LibvirtHypervisor.open(TEST_URI)
    try:
        # test:///default always has a running domain named "test", not hostd's.
        assert await asyncio.to_thread(_default_domain_is_active)
        assert "test" not in {d.name for d in await driver.list_owned()}
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
            await driver.start_transient(domxml.to_xml(build_domain(config, VirtType.QEMU, layout)))
            await driver.destroy(config.vm_id)
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
