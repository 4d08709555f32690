"""hostd's test rig: a VmService on the fake hypervisor (tests/hostd/fakes.py)
with the journal at hand, the rig of hostd's fast tests; and the VM
configurations, boot files and hook scripts that hostd's tests start VMs
with."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import domxml
from hostd.builder import build_domain
from hostd.config import ChannelLimits
from hostd.defaults import with_defaults
from hostd.hooks import HookPoint
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.registry import RunnerSettings
from hostd.virt_type import VirtType
from hostd.vms import VmService
from tests.hostd.fakes import FakeHypervisor
from tests.support.waiting import until

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


def hook_script(hooks: Path, point: HookPoint, name: str, body: str) -> Path:
    """Writes an executable shell script (body after its #! line) as hook
    `name` at point under the hooks folder; returns its path."""
    folder = hooks / point.value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def boot_files(folder: Path) -> tuple[str, str]:
    """A kernel and an initrd that exist in folder (the test driver and the
    fake never boot them)."""
    kernel = folder / "vmlinux"
    initrd = folder / "initramfs.img"
    kernel.write_bytes(b"not a kernel")
    initrd.write_bytes(b"not an initrd")
    return str(kernel), str(initrd)


def vm_config(
    kernel: str,
    *,
    vm_id: str | None = None,
    name: str | None = None,
    initrd: str = "",
    memory_mib: int = 64,
    vcpus: int = 1,
    nics: tuple[vm_pb2.Nic, ...] = (),
) -> pb.VmConfig:
    """A VM's configuration for hostd, booting kernel."""
    vm_id = vm_id or str(uuid.uuid4())
    return pb.VmConfig(
        vm_id=vm_id,
        name=name or f"test-{vm_id[:8]}",
        spec=vm_pb2.VmSpec(
            vcpus=vcpus,
            memory_mib=memory_mib,
            boot=vm_pb2.BootSource(kernel_path=kernel, initrd_path=initrd, cmdline="console=ttyS0"),
            nics=list(nics),
        ),
    )


@dataclass
class Rig:
    """A VmService on a fake hypervisor, and what the tests look at it with."""

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
        await until(self.in_state(vm_id, state), what=S.State.Name(state))

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
