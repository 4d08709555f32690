"""One contract for every Hypervisor: the fake, libvirt's test driver, and libvirt on real QEMU.

The QEMU variant starts real domains of the test guest (without waiting for
it to boot); it is skipped, or fails under VIRTPLANE_REQUIRE_REAL=1, where
there is no qemu:///system or no guest image. Not every implementation can do
everything: CAPABILITIES says what each can, and a case that needs what one
cannot is not generated for it (nothing is skipped at run time). Where one
cannot, a case of its own checks that it says so. What QEMU does that no case
here can without booting a guest or a second libvirtd, live migration, is
tested in tests/hostd/test_real_migration.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import convert, domxml
from hostd.builder import build_domain
from hostd.defaults import with_defaults
from hostd.errors import DomainNotFound, DomainStateConflict, OperationUnsupported
from hostd.hypervisor import (
    DomainAction,
    DomainInfo,
    DomainState,
    Hypervisor,
    HypervisorEvent,
    LifecycleEvent,
    LifecycleKind,
    MigrationTarget,
    StopReason,
)
from hostd.layout import StateLayout
from hostd.libvirt_driver import LibvirtHypervisor
from hostd.model import VmConfig
from hostd.virt_type import VirtType
from tests.hostd.fakes import FakeHypervisor
from tests.support.hostd_rig import vm_config
from tests.support.real import GuestImage
from tests.support.virt import remove_domains
from tests.support.waiting import next_item
from virtplane_common.errors import VirtplaneError

K = LifecycleKind
TEST_URI = "test:///default"


class Can(Enum):
    """What a Hypervisor may be unable to do."""

    PAUSED_START = "a paused start (VIR_DOMAIN_START_PAUSED)"
    PAUSED_RESTORE = "a paused restore (VIR_DOMAIN_SAVE_PAUSED)"
    RESET_EVENTS = "reset (reboot) events"
    JOBS = "job statistics and aborting jobs"
    MIGRATION = "live migration"


CAPABILITIES: dict[str, frozenset[Can]] = {
    "fake": frozenset(Can) - {Can.MIGRATION},
    "test": frozenset(),  # libvirt's test driver
    "qemu": frozenset(Can),
}
"""What each implementation can do: "fake" (tests/hostd/fakes.py), "test" (libvirt's
test driver) and "qemu" (libvirt on real QEMU)."""


def on(*needs: Can, lacking: Can | None = None) -> pytest.MarkDecorator:
    """A case generated for the implementations that can do all of needs and,
    given lacking, cannot do it; a case without this runs on every one."""
    kinds = [
        kind
        for kind, can in CAPABILITIES.items()
        if can.issuperset(needs) and (lacking is None or lacking not in can)
    ]
    return pytest.mark.parametrize("target", kinds, indirect=True)


@dataclass
class Target:
    kind: str
    """"fake", "test" (libvirt's test driver) or "qemu"."""
    hypervisor: Hypervisor
    kernel: str
    initrd: str
    layout: StateLayout
    made: list[str] = field(default_factory=list)

    def config(self, name: str | None = None) -> VmConfig:
        config = vm_config(self.kernel, initrd=self.initrd, name=name, memory_mib=128)
        return with_defaults(convert.config_from_proto(config))

    def xml(self, config: VmConfig) -> str:
        self.made.append(config.vm_id)
        return domxml.to_xml(build_domain(config, VirtType.QEMU, self.layout))

    async def started(
        self, *, persistent: bool = False, paused: bool = False
    ) -> tuple[AsyncIterator[HypervisorEvent], VmConfig]:
        """Starts a domain of a new configuration and waits for its STARTED event;
        returns the events, followed from before the start, and the configuration."""
        events = self.hypervisor.events()
        config = self.config()
        await self.hypervisor.start(self.xml(config), persistent=persistent, paused=paused)
        await _until(events, config.vm_id, K.STARTED)
        return events, config

    async def domain(self, vm_id: str) -> DomainInfo | None:
        return next((d for d in await self.hypervisor.list_domains() if d.uuid == vm_id), None)

    async def clean_up(self) -> None:
        async def remove(vm_id: str) -> None:
            for action in (DomainAction.DESTROY, DomainAction.UNDEFINE):
                with contextlib.suppress(VirtplaneError):
                    await self.hypervisor.act(vm_id, action)

        await asyncio.gather(*(remove(vm_id) for vm_id in self.made))


@pytest.fixture(scope="session")
def reaper() -> Iterator[ThreadPoolExecutor]:
    """Destroys real domains in the background: QEMU's exit is slow to be noticed on these
    machines (../shared/GUEST.md), and no test needs to wait for it."""
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="reaper") as pool:
        yield pool


@pytest.fixture(params=list(CAPABILITIES))
async def target(
    request: pytest.FixtureRequest, boot_files: tuple[str, str], short_tmp: Path
) -> AsyncIterator[Target]:
    layout = StateLayout(short_tmp / "state")
    layout.prepare()
    kernel, initrd = boot_files
    hypervisor: Hypervisor
    if request.param == "fake":
        hypervisor = FakeHypervisor()
    elif request.param == "test":
        hypervisor = await LibvirtHypervisor.open(TEST_URI)
    else:
        image: GuestImage = request.getfixturevalue("guest_image")
        pool: ThreadPoolExecutor = request.getfixturevalue("reaper")
        kernel, initrd = image.kernel, image.initrd
        hypervisor = await LibvirtHypervisor.open(request.getfixturevalue("system_libvirt"))
    target = Target(request.param, hypervisor, kernel, initrd, layout)
    try:
        yield target
    finally:
        if isinstance(hypervisor, LibvirtHypervisor) and target.kind == "qemu":
            for vm_id in target.made:
                pool.submit(remove_domains, hypervisor.uri, [vm_id])
        else:
            await target.clean_up()
        await hypervisor.close()


def _mode(path: str) -> int | None:
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return None


async def _event_of(events: AsyncIterator[HypervisorEvent], uuid: str) -> LifecycleEvent:
    """The next lifecycle event of one domain; others' (tests share libvirt's test driver)
    are skipped."""
    while True:
        event = await next_item(events, f"an event of domain {uuid}")
        if isinstance(event, LifecycleEvent) and event.uuid == uuid:
            return event


async def _until(events: AsyncIterator[HypervisorEvent], uuid: str, kind: K) -> LifecycleEvent:
    while (event := await _event_of(events, uuid)).kind is not kind:
        pass
    return event


async def test_start_list_destroy(target: Target) -> None:
    events = target.hypervisor.events()
    config = target.config()
    vm_id = config.vm_id
    assert (
        await target.hypervisor.start(target.xml(config), persistent=False, paused=False) == vm_id
    )
    assert (await _event_of(events, vm_id)).kind in {K.STARTED, K.RESUMED}
    domain = await target.domain(vm_id)
    assert domain is not None and domain.metadata is not None
    assert domain.metadata.vm_id == vm_id
    assert domain.name.startswith("vp-test-")
    assert (domain.state, domain.active, domain.persistent) == (DomainState.RUNNING, True, False)
    xml = await target.hypervisor.domain_xml(vm_id)
    assert f"<uuid>{vm_id}</uuid>" in xml
    assert "urn:virtplane:hostd:1" in xml, "with hostd's metadata"
    await target.hypervisor.act(vm_id, DomainAction.DESTROY)
    assert (await _until(events, vm_id, K.STOPPED)).reason is StopReason.DESTROYED
    assert await target.domain(vm_id) is None
    with pytest.raises(DomainNotFound):
        await target.hypervisor.domain_xml(vm_id)


async def test_a_persistent_domain_stays_defined_until_undefined(target: Target) -> None:
    events, config = await target.started(persistent=True)
    vm_id = config.vm_id
    domain = await target.domain(vm_id)
    assert domain is not None and (domain.active, domain.persistent) == (True, True)
    await target.hypervisor.act(vm_id, DomainAction.DESTROY)
    await _until(events, vm_id, K.STOPPED)
    domain = await target.domain(vm_id)
    assert domain is not None and (domain.active, domain.state) == (False, DomainState.SHUT_OFF)
    assert domain.stop_reason is StopReason.DESTROYED, "a definition keeps why it stopped"
    await target.hypervisor.act(vm_id, DomainAction.UNDEFINE)
    assert await target.domain(vm_id) is None


@on(Can.PAUSED_START)
async def test_a_paused_start(target: Target) -> None:
    events = target.hypervisor.events()
    config = target.config()
    vm_id = config.vm_id
    await target.hypervisor.start(target.xml(config), persistent=False, paused=True)
    assert [(await _event_of(events, vm_id)).kind for _ in range(2)] == [K.STARTED, K.SUSPENDED]
    domain = await target.domain(vm_id)
    assert domain is not None and domain.state is DomainState.PAUSED
    await target.hypervisor.act(vm_id, DomainAction.RESUME)
    assert (await _event_of(events, vm_id)).kind is K.RESUMED


async def test_pause_and_resume(target: Target) -> None:
    events, config = await target.started()
    vm_id = config.vm_id
    await target.hypervisor.act(vm_id, DomainAction.PAUSE)
    assert (await _event_of(events, vm_id)).kind is K.SUSPENDED
    stats = await target.hypervisor.domain_stats(vm_id)
    assert (stats.state, stats.state_name, stats.state_reason) == (
        DomainState.PAUSED,
        "paused",
        "user",
    )
    await target.hypervisor.act(vm_id, DomainAction.RESUME)
    assert (await _event_of(events, vm_id)).kind is K.RESUMED


async def test_save_read_and_restore(target: Target, short_tmp: Path) -> None:
    events, config = await target.started()
    vm_id = config.vm_id
    image = str(target.layout.saved_dir / f"{vm_id}.img")
    await target.hypervisor.save(vm_id, image)
    assert (await _until(events, vm_id, K.STOPPED)).reason is StopReason.SAVED
    assert await target.domain(vm_id) is None
    assert _mode(image) == 0o600
    metadata = await target.hypervisor.read_saved(image)
    assert metadata is not None and metadata.vm_id == vm_id
    assert pb.VmConfig.FromString(metadata.config) == convert.config_to_proto(config)

    assert await target.hypervisor.restore(image, paused=False, persistent=False) == vm_id
    assert (await _event_of(events, vm_id)).kind is K.STARTED
    domain = await target.domain(vm_id)
    assert domain is not None and domain.state is DomainState.RUNNING
    assert _mode(image) is not None, "restore leaves the image to its caller"


@on(Can.PAUSED_RESTORE)
async def test_a_paused_and_persistent_restore(target: Target) -> None:
    events, config = await target.started()
    vm_id = config.vm_id
    image = str(target.layout.saved_dir / f"{vm_id}.img")
    await target.hypervisor.save(vm_id, image)
    await _until(events, vm_id, K.STOPPED)
    await target.hypervisor.restore(image, paused=True, persistent=True)
    await _until(events, vm_id, K.SUSPENDED)
    domain = await target.domain(vm_id)
    assert domain is not None
    assert (domain.state, domain.persistent) == (DomainState.PAUSED, True)


async def test_an_incomplete_image_is_not_read_nor_restored(target: Target) -> None:
    image = target.layout.saved_dir / f"{uuid.uuid4()}.img.partial"
    image.write_bytes(b"LibvirtQemudPart" + b"\0" * 4096)
    assert await target.hypervisor.read_saved(str(image)) is None
    assert await target.hypervisor.read_saved(str(image.with_name("absent.img"))) is None
    with pytest.raises(VirtplaneError):
        await target.hypervisor.restore(str(image), paused=False, persistent=False)


@on(Can.RESET_EVENTS)
async def test_a_reset_is_reported(target: Target) -> None:
    events, config = await target.started()
    vm_id = config.vm_id
    await target.hypervisor.act(vm_id, DomainAction.RESET)
    await _until(events, vm_id, K.REBOOTED)


async def test_unknown_domains_are_not_found(target: Target) -> None:
    unknown = str(uuid.uuid4())
    for action in (DomainAction.DESTROY, DomainAction.PAUSE, DomainAction.UNDEFINE):
        with pytest.raises(DomainNotFound):
            await target.hypervisor.act(unknown, action)
    with pytest.raises(DomainNotFound):
        await target.hypervisor.domain_stats(unknown)


async def test_undefining_a_transient_domain_leaves_it_running(target: Target) -> None:
    config = target.config()
    await target.hypervisor.start(target.xml(config), persistent=False, paused=False)
    # QEMU's driver refuses; the test driver accepts and changes nothing.
    with contextlib.suppress(DomainStateConflict):
        await target.hypervisor.act(config.vm_id, DomainAction.UNDEFINE)
    domain = await target.domain(config.vm_id)
    assert domain is not None and domain.active


async def test_a_second_domain_with_the_same_name_fails(target: Target) -> None:
    name = f"same-{uuid.uuid4().hex[:8]}"
    first, second = target.config(name), target.config(name)
    await target.hypervisor.start(target.xml(first), persistent=False, paused=False)
    with pytest.raises(VirtplaneError):
        await target.hypervisor.start(target.xml(second), persistent=False, paused=False)
    with pytest.raises(VirtplaneError):
        await target.hypervisor.start(target.xml(second), persistent=True, paused=False)
    assert await target.domain(second.vm_id) is None


async def test_host_info(target: Target) -> None:
    info = await target.hypervisor.host_info()
    assert info.hostname
    assert info.cpus >= 1
    assert info.memory_total_mib >= info.memory_free_mib > 0
    assert info.domains_active >= 0
    if target.kind == "qemu":
        assert "vnc" in info.graphics


@on(Can.JOBS, Can.PAUSED_START)
async def test_a_domain_without_a_job_has_no_progress_and_nothing_to_abort(target: Target) -> None:
    # Paused: a guest booting meanwhile would only load the machine.
    _, config = await target.started(paused=True)
    vm_id = config.vm_id
    assert await target.hypervisor.job_progress(vm_id) is None
    with pytest.raises(DomainStateConflict):
        await target.hypervisor.act(vm_id, DomainAction.ABORT_JOB)
    with pytest.raises(DomainNotFound):
        await target.hypervisor.job_progress(str(uuid.uuid4()))


@on(lacking=Can.JOBS)
async def test_a_hypervisor_without_jobs_says_so(target: Target) -> None:
    _, config = await target.started()
    vm_id = config.vm_id
    with pytest.raises(OperationUnsupported):
        await target.hypervisor.job_progress(vm_id)


@on(lacking=Can.MIGRATION)
async def test_a_hypervisor_that_cannot_migrate_says_so(target: Target) -> None:
    """The fake and libvirt's test driver cannot migrate (QEMU can:
    tests/hostd/test_real_migration.py); the domain runs on."""
    _, config = await target.started()
    vm_id = config.vm_id
    migration = MigrationTarget(
        hypervisor_uri=TEST_URI,
        migration_uri="tcp://127.0.0.1:49152",
        channel_socket=str(target.layout.channel_socket(vm_id)),
        console_log=str(target.layout.console_log(vm_id)),
        state_dir=str(target.layout.root),
    )
    with pytest.raises(OperationUnsupported, match="cannot do this"):
        await target.hypervisor.migrate(vm_id, migration)
    domain = await target.domain(vm_id)
    assert domain is not None and domain.active
