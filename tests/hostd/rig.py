"""A VmService on the fake hypervisor, with the journal at hand: the rig of the fast tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import domxml
from hostd.builder import build_domain
from hostd.config import ChannelLimits
from hostd.defaults import with_defaults
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.registry import RunnerSettings
from hostd.virt_type import VirtType
from hostd.vms import VmService
from tests.hostd.conftest import eventually, vm_config
from tests.hostd.fakes import FakeHypervisor

S = pb.HostVm
NO_CHANNEL = ChannelLimits(connect_timeout_seconds=0.01, connect_retry_seconds=0.01)
FAST = RunnerSettings(
    VirtType.QEMU,
    StateLayout(Path("/nonexistent")),
    NO_CHANNEL,
    reboot_settle_seconds=0.05,
    save_poll_seconds=0.01,
    event_grace_seconds=0.5,
)


@dataclass
class Rig:
    fake: FakeHypervisor
    journal: Journal
    vms: VmService
    layout: StateLayout
    kernel: str

    def states(self, vm_id: str) -> list[tuple[S.State.ValueType, S.ExitReason.ValueType]]:
        """Every (state, exit reason) the journal holds for the VM, oldest first."""
        return [
            (e.vm_state.state, e.vm_state.exit_reason)
            for e in self.journal.after(0)
            if e.WhichOneof("payload") == "vm_state" and e.vm_state.vm_id == vm_id
        ]

    def state_names(self, vm_id: str) -> list[str]:
        return [S.State.Name(state).removeprefix("STATE_") for state, _ in self.states(vm_id)]

    def state(self, vm_id: str) -> S.State.ValueType:
        return {vm.vm_id: vm.state for vm in self.vms.list()}.get(vm_id, S.STATE_DOWN)

    def in_state(self, vm_id: str, state: S.State.ValueType) -> Callable[[], bool]:
        return lambda: self.state(vm_id) == state

    async def wait_for(self, vm_id: str, state: S.State.ValueType) -> None:
        await eventually(self.in_state(vm_id, state), S.State.Name(state))

    def config(self, **fields: object) -> pb.VmConfig:
        config = vm_config(self.kernel)
        for name, value in fields.items():
            setattr(config, name, value)
        return config

    async def running(self, config: pb.VmConfig | None = None, **create: object) -> pb.VmConfig:
        """Creates a VM and waits until it runs."""
        config = config or self.config()
        await self.vms.create(config, **create)  # type: ignore[arg-type]
        await self.wait_for(config.vm_id, S.STATE_RUNNING)
        return config

    def xml(self, config: pb.VmConfig, layout: StateLayout | None = None) -> str:
        filled = with_defaults(config)
        return domxml.to_xml(build_domain(filled, VirtType.QEMU, layout or self.layout))


async def make_rig(
    fake: FakeHypervisor,
    tmp_path: Path,
    kernel: str,
    settings: RunnerSettings = FAST,
    journal_size: int = 1000,
) -> Rig:
    journal = Journal(journal_size)
    layout = StateLayout(tmp_path / "state")
    layout.saved_dir.mkdir(parents=True, exist_ok=True)  # no sockets: the fake binds none
    vms = VmService(fake, journal, dataclasses.replace(settings, layout=layout))
    await vms.start()
    return Rig(fake, journal, vms, layout, kernel)
