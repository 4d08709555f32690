"""Running the operator's hook scripts around a VM's operations, on its domain XML.

hostd.hooks knows the scripts (points, order, environment, timeout); this
module runs them for a VM: a before_ point on the domain's current XML
(guarding the operation, or only reported), an after_ point in the
background. A failure that does not stop the operation is journaled as a
hook-failed event.
"""

from __future__ import annotations

from hostd.hooks import HookFailure, HookPoint, Hooks, HookSettings
from hostd.hypervisor import Hypervisor
from hostd.journal import Journal
from hostd.registry import Vm
from hostd.tasks import TaskSupervisor
from virtplane_common.errors import VirtplaneError


class HookRunner:
    def __init__(
        self,
        hypervisor: Hypervisor,
        journal: Journal,
        settings: HookSettings,
        tasks: TaskSupervisor,
    ) -> None:
        self._hypervisor = hypervisor
        self._journal = journal
        self._tasks = tasks
        self.hooks = Hooks(settings)

    async def domain_xml(self, vm: Vm, fallback: str = "") -> str:
        """The VM's domain XML as libvirt has it now; fallback when it cannot be read."""
        try:
            return await self._hypervisor.domain_xml(vm.vm_id)
        except VirtplaneError:
            return fallback

    async def before(
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
        self._report_failures(vm.vm_id, result.failures)
        return xml

    def after(self, vm: Vm, point: HookPoint, xml: str = "") -> None:
        """Runs an after_ point's scripts in the background; failures are reported only.

        xml: the domain's XML when it has none any more; else it is read.
        """
        if not self.hooks.scripts(point):
            return
        hook_vm = vm.hook_vm

        async def run() -> None:
            text = xml or await self.domain_xml(vm)
            result = await self.hooks.run(point, hook_vm, text)
            self._report_failures(hook_vm.vm_id, result.failures)

        self._tasks.spawn(run(), f"{point.value} {vm.vm_id}")

    def _report_failures(self, vm_id: str, failures: tuple[HookFailure, ...]) -> None:
        for failure in failures:
            self._journal.append_hook_failed(
                vm_id, failure.point.value, failure.hook, failure.message
            )
