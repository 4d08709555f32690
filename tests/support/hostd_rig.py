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
from typing import Any

from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import convert, domxml
from hostd.builder import build_domain
from hostd.config import ChannelLimits
from hostd.defaults import with_defaults
from hostd.hooks import HookPoint
from hostd.journal import Journal
from hostd.layout import StateLayout
from hostd.model import ExitReason, VmConfig, VmState
from hostd.registry import RunnerSettings
from hostd.validation import Admission
from hostd.virt_type import VirtType
from hostd.vms import VmService
from tests.hostd.fakes import FakeHypervisor
from tests.support.real import IMAGE_ROOTS
from tests.support.waiting import until

NO_CHANNEL = ChannelLimits(connect_timeout_seconds=0.01, connect_retry_seconds=0.01)
FAST = RunnerSettings(
    VirtType.QEMU,
    StateLayout(Path("/nonexistent")),
    NO_CHANNEL,
    reboot_settle_seconds=0.05,
    save_poll_seconds=0.01,
    event_grace_seconds=0.5,
    admission=Admission(IMAGE_ROOTS),
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
    """A VM's configuration, as the API's message, booting kernel."""
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


def domain_config(kernel: str, **fields: Any) -> VmConfig:
    """vm_config as hostd's domain type, as the servicer hands it on."""
    return convert.config_from_proto(vm_config(kernel, **fields))


@dataclass
class Rig:
    """A VmService on a fake hypervisor, and what the tests look at it with."""

    fake: FakeHypervisor
    journal: Journal
    vms: VmService
    layout: StateLayout
    kernel: str

    def states(self, vm_id: str) -> list[tuple[VmState, ExitReason]]:
        """Every (state, exit reason) the journal holds for the VM, oldest first."""
        return [
            (VmState(e.vm_state.state), ExitReason(e.vm_state.exit_reason))
            for e in self.journal.after(0)
            if e.WhichOneof("payload") == "vm_state" and e.vm_state.vm_id == vm_id
        ]

    def state_names(self, vm_id: str) -> list[str]:
        return [state.name for state, _ in self.states(vm_id)]

    def state(self, vm_id: str) -> VmState:
        return {vm.vm_id: vm.state for vm in self.vms.list()}.get(vm_id, VmState.DOWN)

    def in_state(self, vm_id: str, state: VmState) -> Callable[[], bool]:
        return lambda: self.state(vm_id) == state

    async def wait_for(self, vm_id: str, state: VmState) -> None:
        await until(self.in_state(vm_id, state), what=state.api_name)

    def config(self, **fields: object) -> VmConfig:
        """A VM's configuration (built as the API's message, fields set on it)."""
        config = vm_config(self.kernel)
        for name, value in fields.items():
            setattr(config, name, value)
        return convert.config_from_proto(config)

    async def running(self, config: VmConfig | None = None, **create: object) -> VmConfig:
        """Creates a VM and waits until it runs."""
        config = config or self.config()
        await self.vms.create(config, **create)  # type: ignore[arg-type]
        await self.wait_for(config.vm_id, VmState.RUNNING)
        return config

    def xml(self, config: VmConfig, layout: StateLayout | None = None) -> str:
        filled = with_defaults(config)
        return domxml.to_xml(build_domain(filled, VirtType.QEMU, layout or self.layout))


def with_spec(config: VmConfig, **fields: object) -> VmConfig:
    """config with fields of its spec replaced."""
    return dataclasses.replace(config, spec=dataclasses.replace(config.spec, **fields))  # type: ignore[arg-type]


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
