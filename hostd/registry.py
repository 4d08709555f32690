"""The VMs on this host: their records, their states, and the journal event each change makes.

Every real state change goes through VmRegistry.transition: one journal
event, the guest channel opened or closed to match, and a VM that went DOWN
forgotten (its persistent definition removed in the background; a create
for the same id waits for that). The background work of a VM — its job
(launch, restore or save) and its timer (a shutdown or reboot deadline) —
is spawned here too, so that stop() cancels all of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from hostd.errors import DomainNotFound, DomainStateConflict, VmNotFound
from hostd.guest_channel import GuestChannel
from hostd.hooks import HookFailure, HookPoint, Hooks, HookSettings, HookVm
from hostd.hypervisor import DomainAction, Hypervisor
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.virt_type import VirtType
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

State = pb.HostVm.State
ExitReason = pb.HostVm.ExitReason

DOMAIN_STATES = frozenset(
    {
        pb.HostVm.STATE_RUNNING,
        pb.HostVm.STATE_PAUSED,
        pb.HostVm.STATE_POWERING_DOWN,
        pb.HostVm.STATE_REBOOT_IN_PROGRESS,
        pb.HostVm.STATE_SAVING_STATE,
        pb.HostVm.STATE_MIGRATING_FROM,
    }
)
"""States in which the VM's domain runs (paused or not): its channel is open."""
REMEMBERED_ENDS = 1024
"""How many ended VMs a repeated create is still answered for."""


def state_name(state: State.ValueType) -> str:
    return State.Name(state).removeprefix("STATE_")


@dataclass(frozen=True)
class RunnerSettings:
    """What hostd needs to build, reach and follow domains."""

    virt_type: VirtType
    layout: StateLayout
    channel_limits: ChannelLimits = field(default_factory=ChannelLimits)
    reboot_settle_seconds: float = 1.0
    """A reboot is over when the guest has not been reset again for this long: one
    reboot resets it several times in a burst."""
    save_poll_seconds: float = 0.5
    """How often a save that a previous hostd began is checked on."""
    event_grace_seconds: float = 5.0
    """How long a start or verb waits for the event that confirms it before it
    records the outcome itself (not every hypervisor sends every event)."""
    hooks: HookSettings = field(default_factory=HookSettings)


@dataclass(eq=False)
class Vm:
    config: pb.VmConfig
    request_id: str = ""
    state: State.ValueType = pb.HostVm.STATE_UNSPECIFIED
    exit_reason: ExitReason.ValueType = pb.HostVm.EXIT_REASON_UNSPECIFIED
    message: str = ""
    launched: bool = False
    """A domain exists for it: created, restored or found running."""
    destroying: bool = False
    """hostd is destroying the domain: QEMU's shutdown on the kill is no POWERING_DOWN."""
    start_paused: bool = False
    """The start or restore under way was asked for paused CPUs."""
    job: asyncio.Task[None] | None = None
    """The VM's one long operation: its launch, restore or save."""
    timer: asyncio.Task[None] | None = None
    """A deadline: the end of a shutdown or reboot, or of a reboot's burst of resets."""
    channel_task: asyncio.Task[None] | None = None
    channel: GuestChannel | None = None
    """The guest channel while it is open: the route to the guest agent."""
    guest: vm_pb2.GuestInfo | None = None
    """The guest agent's last report, merged."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Verbs on one VM run one at a time."""

    @property
    def vm_id(self) -> str:
        return self.config.vm_id

    @property
    def persistent(self) -> bool:
        return self.config.persistence == pb.VmConfig.PERSISTENCE_PERSISTENT

    @property
    def hook_vm(self) -> HookVm:
        """What hook scripts are told about the VM."""
        config = self.config
        return HookVm(config.vm_id, config.name, dict(config.custom_properties))

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done()

    def as_proto(self) -> pb.HostVm:
        return pb.HostVm(
            vm_id=self.vm_id, state=self.state, exit_reason=self.exit_reason, message=self.message
        )


class VmRegistry:
    def __init__(self, hypervisor: Hypervisor, journal: Journal, settings: RunnerSettings) -> None:
        self._hypervisor = hypervisor
        self._journal = journal
        self.settings = settings
        self._vms: dict[str, Vm] = {}
        self._ended: OrderedDict[tuple[str, str], pb.HostVm] = OrderedDict()
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self.hooks = Hooks(settings.hooks)

    # -- records

    def get(self, vm_id: str) -> Vm | None:
        return self._vms.get(vm_id)

    def lookup(self, vm_id: str) -> Vm:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise VmNotFound(vm_id)
        return vm

    def add(self, vm: Vm) -> None:
        self._vms[vm.vm_id] = vm

    def is_current(self, vm: Vm) -> bool:
        """Whether vm is still the registered VM of its id (it has not gone DOWN)."""
        return self._vms.get(vm.vm_id) is vm

    def all(self) -> list[Vm]:
        return list(self._vms.values())

    def list(self) -> list[pb.HostVm]:
        """Every VM with its guest's last report."""
        out = []
        for vm in self._vms.values():
            proto = vm.as_proto()
            if vm.guest is not None:
                # the channel's copy is newer: heartbeats and its own state
                proto.guest.CopyFrom(vm.channel.info if vm.channel else vm.guest)
            out.append(proto)
        return out

    def ended(self, vm_id: str, request_id: str) -> pb.HostVm | None:
        """How a VM that a create with this request_id made ended, if it did recently."""
        return self._ended.get((vm_id, request_id)) if request_id else None

    # -- states

    def transition(
        self,
        vm: Vm,
        state: State.ValueType,
        reason: ExitReason.ValueType = pb.HostVm.EXIT_REASON_UNSPECIFIED,
        message: str = "",
    ) -> None:
        """Moves vm to state, journaling it; nothing happens when it is in state already."""
        if vm.state == state:
            return
        vm.state, vm.exit_reason, vm.message = state, reason, message
        self._journal.append_vm_state(vm.as_proto())
        if state == pb.HostVm.STATE_DOWN:
            self._forget(vm)
        elif state in DOMAIN_STATES:
            if vm.channel_task is None:
                self._open_channel(vm)
        elif vm.channel_task is not None:
            vm.channel_task.cancel()
            vm.channel_task = None
            vm.channel = None
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, vm: Vm, done: Callable[[Vm], bool], within: float) -> bool:
        """Waits for the events that make done(vm) true, or for vm to go; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not done(vm) and self.is_current(vm):
            changed = self._changed
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return done(vm) or not self.is_current(vm)
        return True

    def _forget(self, vm: Vm) -> None:
        del self._vms[vm.vm_id]
        for task in (vm.channel_task, vm.timer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if vm.request_id:
            self._ended[(vm.vm_id, vm.request_id)] = vm.as_proto()
            while len(self._ended) > REMEMBERED_ENDS:
                self._ended.popitem(last=False)
        if vm.persistent and vm.launched:
            self._cleanups[vm.vm_id] = self.spawn(self._undefine(vm.vm_id), f"undefine {vm.vm_id}")

    async def _undefine(self, vm_id: str) -> None:
        try:
            await self._hypervisor.act(vm_id, DomainAction.UNDEFINE)
        except (DomainNotFound, DomainStateConflict):
            pass  # undefined already, or running again as a transient domain
        except VirtplaneError as exc:
            log.warning("VM %s: cannot remove its domain's definition: %s", vm_id, exc)
        finally:
            self._cleanups.pop(vm_id, None)

    async def idle(self, vm: Vm) -> None:
        """Returns once vm's job, if it has one running, has ended."""
        job = vm.job
        if job is not None and job is not asyncio.current_task() and not job.done():
            await asyncio.wait([job])

    async def settled(self, vm_id: str) -> None:
        """Returns once an earlier VM with this id has been cleaned up after."""
        cleanup = self._cleanups.get(vm_id)
        if cleanup is not None:
            await asyncio.wait([cleanup])

    # -- background work

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def set_timer(self, vm: Vm, seconds: float, then: Callable[[], Awaitable[None]]) -> None:
        """Runs then() after seconds, unless the VM's timer is set again or cancelled first."""
        self.cancel_timer(vm)

        async def wait_then() -> None:
            await asyncio.sleep(seconds)
            if self.is_current(vm):
                await then()

        vm.timer = self.spawn(wait_then(), f"timer {vm.vm_id}")

    def cancel_timer(self, vm: Vm) -> None:
        timer, vm.timer = vm.timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def stop(self) -> None:
        """Cancels all background work; the domains keep running."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # -- hooks

    async def domain_xml(self, vm: Vm, fallback: str = "") -> str:
        """The VM's domain XML as libvirt has it now; fallback when it cannot be read."""
        try:
            return await self._hypervisor.domain_xml(vm.vm_id)
        except VirtplaneError:
            return fallback

    async def before_hooks(
        self, vm: Vm, point: HookPoint, *, guarding: bool = True, then: HookPoint | None = None
    ) -> str:
        """Runs a before_ point's scripts on the VM's current domain XML; returns it.

        A failure raises HookFailed when the hook guards the operation, else it
        is only reported (journaled) and the operation goes on. The XML is read
        only when scripts need it: these, or those of the after_ point then.
        """
        if not self.hooks.scripts(point):
            needed = then is not None and self.hooks.scripts(then)
            return await self.domain_xml(vm) if needed else ""
        xml = await self.domain_xml(vm)
        if guarding:
            await self.hooks.check(point, vm.hook_vm, xml)
            return xml
        result = await self.hooks.run(point, vm.hook_vm, xml)
        self._report_hook_failures(vm.vm_id, result.failures)
        return xml

    def after_hooks(self, vm: Vm, point: HookPoint, xml: str = "") -> None:
        """Runs an after_ point's scripts in the background; failures are reported only.

        xml: the domain's XML when it has none any more; else it is read.
        """
        if not self.hooks.scripts(point):
            return
        hook_vm = vm.hook_vm

        async def run() -> None:
            text = xml or await self.domain_xml(vm)
            result = await self.hooks.run(point, hook_vm, text)
            self._report_hook_failures(hook_vm.vm_id, result.failures)

        self.spawn(run(), f"{point.value} {vm.vm_id}")

    def _report_hook_failures(self, vm_id: str, failures: tuple[HookFailure, ...]) -> None:
        for failure in failures:
            self._journal.append_hook_failed(
                vm_id, failure.point.value, failure.hook, failure.message
            )

    # -- the guest channel

    def _open_channel(self, vm: Vm) -> None:
        layout = self.settings.layout
        channel = GuestChannel(
            vm.vm_id,
            layout.channel_socket(vm.vm_id),
            self.settings.channel_limits,
            self._on_guest_report,
            expected_agent=vm.config.guest_agent_version,
        )
        vm.channel = channel
        vm.channel_task = self.spawn(channel.run(), f"guest channel {vm.vm_id}")

    def _on_guest_report(self, vm_id: str, guest: vm_pb2.GuestInfo) -> None:
        vm = self._vms.get(vm_id)
        if vm is not None:
            vm.guest = guest
            self._journal.append_guest_report(vm_id, guest)
