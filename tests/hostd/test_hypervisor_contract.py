"""One contract for every Hypervisor: libvirt (on its test driver) and the fake."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from virtplane.errors import VirtplaneError

from hostd import domxml
from hostd.builder import build_domain
from hostd.errors import DomainNotFound
from hostd.hypervisor import (
    DomainState,
    Hypervisor,
    HypervisorEvent,
    LifecycleEvent,
    LifecycleKind,
    StopReason,
)
from hostd.layout import StateLayout
from hostd.libvirt_driver import LibvirtHypervisor
from hostd.virt_type import VirtType
from tests.hostd.conftest import next_item, vm_config
from tests.hostd.fakes import FakeHypervisor

TEST_URI = "test:///default"


@pytest.fixture(params=["libvirt", "fake"])
async def hypervisor(request: pytest.FixtureRequest) -> AsyncIterator[Hypervisor]:
    if request.param == "fake":
        yield FakeHypervisor()
        return
    driver = await LibvirtHypervisor.open(TEST_URI)
    try:
        yield driver
    finally:
        await driver.close()


def _xml(kernel: str, tmp_path: Path) -> tuple[str, str]:
    config = vm_config(kernel)
    domain = build_domain(config, VirtType.QEMU, StateLayout(tmp_path))
    return config.vm_id, domxml.to_xml(domain)


async def _event_of(events: AsyncIterator[HypervisorEvent], uuid: str) -> LifecycleEvent:
    """The next lifecycle event of one domain; others' (tests share libvirt's test driver)
    are skipped."""
    while True:
        event = await next_item(events, f"an event of domain {uuid}")
        if isinstance(event, LifecycleEvent) and event.uuid == uuid:
            return event


async def test_start_list_destroy(
    hypervisor: Hypervisor, boot_files: tuple[str, str], tmp_path: Path
) -> None:
    events = hypervisor.events()
    vm_id, xml = _xml(boot_files[0], tmp_path)
    try:
        assert await hypervisor.start_transient(xml) == vm_id
        kinds = {(await _event_of(events, vm_id)).kind}
        assert kinds & {LifecycleKind.STARTED, LifecycleKind.RESUMED}
        owned = {d.uuid: d for d in await hypervisor.list_owned()}
        assert owned[vm_id].metadata.vm_id == vm_id
        assert owned[vm_id].name.startswith("vp-test-")
        assert owned[vm_id].state is DomainState.RUNNING
    finally:
        await hypervisor.destroy(vm_id)
    event = await _event_of(events, vm_id)
    while event.kind is not LifecycleKind.STOPPED:
        event = await _event_of(events, vm_id)
    assert event.reason is StopReason.DESTROYED
    assert vm_id not in {d.uuid for d in await hypervisor.list_owned()}


async def test_unknown_domains_are_not_found(hypervisor: Hypervisor) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(DomainNotFound):
        await hypervisor.destroy(unknown)


async def test_a_second_domain_with_the_same_name_fails(
    hypervisor: Hypervisor, boot_files: tuple[str, str], tmp_path: Path
) -> None:
    first = vm_config(boot_files[0], name="same-name")
    second = vm_config(boot_files[0], name="same-name")
    layout = StateLayout(tmp_path)
    await hypervisor.start_transient(domxml.to_xml(build_domain(first, VirtType.QEMU, layout)))
    try:
        with pytest.raises(VirtplaneError):
            await hypervisor.start_transient(
                domxml.to_xml(build_domain(second, VirtType.QEMU, layout))
            )
    finally:
        await hypervisor.destroy(first.vm_id)


async def test_capacity(hypervisor: Hypervisor) -> None:
    capacity = await hypervisor.capacity()
    assert capacity.hostname
    assert capacity.cpus >= 1
    assert capacity.memory_total_mib >= capacity.memory_free_mib > 0
