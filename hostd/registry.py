"""The VMs on this host: their records, their states, and the journal event each change makes.

Every real state change goes through VmRegistry.transition: one journal
event, the guest channel opened or closed to match, and a VM that went DOWN
forgotten (its persistent definition removed in the background; a create
for the same id waits for that). A VM's job and timer are fields of its
record; they run under hostd.tasks, which supervises all background work.
Hook scripts are run by hostd.hook_runner.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from virtplane.v1 import vm_pb2

from hostd.config import ChannelLimits
from hostd.errors import DomainNotFound, DomainStateConflict, VmNotFound
from hostd.guest_channel import GuestChannel
from hostd.hooks import HookSettings, HookVm
from hostd.hypervisor import DomainAction, Hypervisor
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.model import ExitReason, Persistence, VmConfig, VmState, VmStatus
from hostd.state_machine import DOMAIN_STATES
from hostd.tasks import TaskSupervisor
from hostd.validation import Admission
from hostd.virt_type import VirtType
from virtplane_common import log_context
from virtplane_common.errors import VirtplaneError

log = logging.getLogger(__name__)

REMEMBERED_ENDS = 1024
"""How many ended VMs a repeated create is still answered for."""


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
    admission: Admission = field(default_factory=Admission)
    """What a VM's configuration may ask for (image roots, custom properties)."""


@dataclass(eq=False)
class Vm:
    config: VmConfig
    request_id: str = ""
    state: VmState = VmState.UNSPECIFIED
    exit_reason: ExitReason = ExitReason.UNSPECIFIED
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
        return self.config.persistence == Persistence.PERSISTENT

    @property
    def hook_vm(self) -> HookVm:
        """What hook scripts are told about the VM."""
        config = self.config
        return HookVm(config.vm_id, config.name, dict(config.custom_properties))

    @property
    def busy(self) -> bool:
        return self.job is not None and not self.job.done()

    def status(self, guest: vm_pb2.GuestInfo | None = None) -> VmStatus:
        return VmStatus(self.vm_id, self.state, self.exit_reason, self.message, guest)


class VmRegistry:
    def __init__(
        self,
        hypervisor: Hypervisor,
        journal: Journal,
        settings: RunnerSettings,
        tasks: TaskSupervisor,
    ) -> None:
        self._hypervisor = hypervisor
        self._journal = journal
        self.settings = settings
        self._tasks = tasks
        self._vms: dict[str, Vm] = {}
        self._ended: OrderedDict[tuple[str, str], VmStatus] = OrderedDict()
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()

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

    def list(self) -> list[VmStatus]:
        """Every VM with its guest's last report."""
        out = []
        for vm in self._vms.values():
            guest = vm.guest
            if guest is not None and vm.channel is not None:
                guest = vm.channel.info  # newer: heartbeats and the channel's own state
            out.append(vm.status(guest))
        return out

    def ended(self, vm_id: str, request_id: str) -> VmStatus | None:
        """How a VM that a create with this request_id made ended, if it did recently."""
        return self._ended.get((vm_id, request_id)) if request_id else None

    # -- states

    def transition(
        self,
        vm: Vm,
        state: VmState,
        reason: ExitReason = ExitReason.UNSPECIFIED,
        message: str = "",
    ) -> None:
        """Moves vm to state, journaling it; nothing happens when it is in state already."""
        if vm.state == state:
            return
        vm.state, vm.exit_reason, vm.message = state, reason, message
        self._journal.append_vm_state(vm.status())
        if state == VmState.DOWN:
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
            self._ended[(vm.vm_id, vm.request_id)] = vm.status()
            while len(self._ended) > REMEMBERED_ENDS:
                self._ended.popitem(last=False)
        if vm.persistent and vm.launched:
            self._cleanups[vm.vm_id] = self._tasks.spawn(
                self._undefine(vm.vm_id), f"undefine {vm.vm_id}"
            )

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

    def set_timer(self, vm: Vm, seconds: float, then: Callable[[], Awaitable[None]]) -> None:
        """Runs then() after seconds, unless the VM's timer is set again or cancelled first."""
        self.cancel_timer(vm)

        async def wait_then() -> None:
            await asyncio.sleep(seconds)
            if self.is_current(vm):
                await then()

        vm.timer = self._tasks.spawn(wait_then(), f"timer {vm.vm_id}")

    def cancel_timer(self, vm: Vm) -> None:
        timer, vm.timer = vm.timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()

    async def settled(self, vm_id: str) -> None:
        """Returns once an earlier VM with this id has been cleaned up after."""
        cleanup = self._cleanups.get(vm_id)
        if cleanup is not None:
            await asyncio.wait([cleanup])

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
        # It outlives the call that opened it: its records name the VM only.
        work = log_context.only_for(channel.run, vm=vm.vm_id)
        vm.channel_task = self._tasks.spawn(work, f"guest channel {vm.vm_id}")

    def _on_guest_report(self, vm_id: str, guest: vm_pb2.GuestInfo) -> None:
        vm = self._vms.get(vm_id)
        if vm is not None:
            vm.guest = guest
            self._journal.append_guest_report(vm_id, guest)
