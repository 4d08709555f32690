"""UpdateVm: changes to a VM's name and spec, through an update_mask.

A spec change to a DOWN VM applies at once, as do highly_available,
pinned_host and start_paused whatever the VM's state (they steer the
scheduler, the HA restarter and the next start, not the running VM). Any
other spec change made while the VM runs (or is paused, or hibernated, whose
saved state carries the old spec) waits in the VM's next_run_spec, with the
paths it changed, until the next start from DOWN applies it
(apply_next_run(), called by StartVm's booking). A name change applies at
once. Every update increases the VM's spec_version; an update that names
the version it read (expected_spec_version) is refused with ABORTED when
another came first, so none is lost.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import field_mask_pb2
from sqlalchemy.orm import Session
from virtplane.v1 import vm_pb2

from controller import audit, convert, requests, validation
from controller.errors import MacInUse, VmExists
from controller.requests import Call
from controller.vm_store import Outcome, VmStore
from db import repositories as repo
from db.enums import VmState
from db.models import Disk, Nic, Vm
from virtplane_common.errors import Aborted, InvalidArgument

# The paths UpdateVm accepts.
PATHS = frozenset(
    {
        "name",
        "spec",
        "spec.vcpus",
        "spec.memory_mib",
        "spec.boot",
        "spec.boot.kernel_path",
        "spec.boot.initrd_path",
        "spec.boot.cmdline",
        "spec.nics",
        "spec.disks",
        "spec.custom_properties",
        "spec.highly_available",
        "spec.pinned_host",
        "spec.start_paused",
    }
)
# Spec paths that take effect at once, whatever the VM's state.
_AT_ONCE = frozenset({"spec.highly_available", "spec.pinned_host", "spec.start_paused"})


@dataclass(frozen=True)
class Update:
    """A checked UpdateVm request."""

    values: vm_pb2.Vm
    paths: tuple[str, ...]
    expected_spec_version: int


def check_update(values: vm_pb2.Vm, mask: field_mask_pb2.FieldMask, expected: int) -> Update:
    """Checks the mask's paths; raises InvalidArgument naming a bad one."""
    if not mask.paths:
        raise InvalidArgument("update_mask", "is required: name the fields to change")
    for i, path in enumerate(mask.paths):
        if path not in PATHS:
            raise InvalidArgument(
                f"update_mask.paths[{i}]",
                f"{path!r} cannot be updated; updatable: {', '.join(sorted(PATHS))}",
            )
    if expected < 0:
        raise InvalidArgument("expected_spec_version", "must not be negative")
    return Update(values, tuple(dict.fromkeys(mask.paths)), expected)


def random_mac(session: Session) -> str:
    # 52:54:00 is the locally administered prefix QEMU and libvirt use.
    while True:
        mac = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        if not repo.mac_in_use(session, mac):
            return mac


def pinned_host_id(session: Session, ref: str, field: str) -> str | None:
    """The id of the host ref (an id or name) names; None for empty ref."""
    if not ref:
        return None
    host = repo.find_host(session, ref)
    if host is None:
        raise InvalidArgument(field, f"names no registered host: {ref!r}")
    return host.id


def _apply_at_once(session: Session, vm: Vm, paths: Iterable[str], spec: vm_pb2.VmSpec) -> None:
    for path in paths:
        if path in ("spec", "spec.highly_available"):
            vm.highly_available = spec.highly_available
            if not spec.highly_available:
                vm.ha_restart_at = None  # no automatic restart is due any more
        if path in ("spec", "spec.start_paused"):
            vm.start_paused = spec.start_paused
        if path in ("spec", "spec.pinned_host"):
            vm.pinned_host_id = pinned_host_id(
                session, spec.pinned_host, "vm_update.spec.pinned_host"
            )


def check_macs(
    session: Session, nics: Iterable[validation.NicSpec], field: str, vm_id: str = ""
) -> None:
    """Refuses (ALREADY_EXISTS) a MAC address another VM's NIC has: two
    NICs of one address on a network break both."""
    for i, nic in enumerate(nics):
        if nic.mac_address:
            user = repo.mac_user(session, nic.mac_address, other_than=vm_id)
            if user is not None:
                raise MacInUse(f"{field}[{i}]", nic.mac_address, user)


def disk_rows(disks: Iterable[validation.DiskSpec]) -> list[Disk]:
    return [
        Disk(position=i, name=d.name, path=d.path, format=d.format, read_only=d.read_only)
        for i, d in enumerate(disks)
    ]


def _copy(path: str, src: vm_pb2.VmSpec, dst: vm_pb2.VmSpec) -> None:
    if path == "spec":
        dst.CopyFrom(src)
    elif path in ("spec.vcpus", "spec.memory_mib"):
        field = path.removeprefix("spec.")
        setattr(dst, field, getattr(src, field))
    elif path == "spec.boot":
        dst.boot.CopyFrom(src.boot)
    elif path.startswith("spec.boot."):
        field = path.removeprefix("spec.boot.")
        setattr(dst.boot, field, getattr(src.boot, field))
    elif path == "spec.nics":
        del dst.nics[:]
        dst.nics.extend(src.nics)
    elif path == "spec.disks":
        del dst.disks[:]
        dst.disks.extend(src.disks)
    elif path == "spec.custom_properties":
        dst.custom_properties.clear()
        dst.custom_properties.update(src.custom_properties)


def _apply(session: Session, vm: Vm, spec: validation.VmSpec) -> None:
    """Writes a checked spec to the VM's row. A NIC keeps its MAC address
    (and row) when one of the same name stays."""
    vm.vcpus = spec.vcpus
    vm.memory_mib = spec.memory_mib
    vm.kernel_path = spec.kernel_path
    vm.initrd_path = spec.initrd_path
    vm.cmdline = spec.cmdline
    by_name = {n.name: n for n in vm.nics}
    nics = []
    for position, nic in enumerate(spec.nics):
        row = by_name.pop(nic.name, None) or Nic(name=nic.name)
        row.position = position
        row.kind = nic.kind
        row.network = nic.network
        row.mac_address = nic.mac_address or row.mac_address or random_mac(session)
        nics.append(row)
    vm.nics = nics
    vm.disks = disk_rows(spec.disks)
    vm.custom_properties = dict(spec.custom_properties) or None


def apply_next_run(session: Session, vm: Vm) -> None:
    """Applies the spec waiting for the VM's next start, if any."""
    pending, _paths = convert.next_run(vm.next_run_spec)
    if pending is None:
        return
    _apply(session, vm, validation.check_spec(vm.name, pending, prefix="next_run_spec"))
    vm.next_run_spec = None


def _mutate(session: Session, vm: Vm, update: Update, call: Call) -> requests.Done[bool]:
    expected = update.expected_spec_version
    if expected and vm.spec_version != expected:
        raise Aborted(
            f"VM {vm.name!r} is at spec_version {vm.spec_version}, not {expected}:"
            " it changed since it was read; read it again and retry"
        )
    if "name" in update.paths:
        name = validation.check_name("vm_update.name", update.values.name)
        if name != vm.name and repo.vm_by_name(session, name) is not None:
            raise VmExists(name)
        vm.name = name
    _apply_at_once(session, vm, update.paths, update.values.spec)
    spec_paths = [p for p in update.paths if p.startswith("spec") and p not in _AT_ONCE]
    pending = False
    if spec_paths:
        waiting, waiting_paths = convert.next_run(vm.next_run_spec)
        target = waiting or convert.vm_spec(vm)
        for path in spec_paths:
            _copy(path, update.values.spec, target)
        checked = validation.check_spec(vm.name, target, prefix="vm_update.spec")
        check_macs(session, checked.nics, "vm_update.spec.nics", vm.id)
        if vm.state is VmState.DOWN:
            _apply(session, vm, checked)
            vm.next_run_spec = None
        else:
            vm.next_run_spec = convert.stored_next_run(target, waiting_paths + spec_paths)
            pending = True
    vm.spec_version += 1
    note = ", ".join(update.paths) + (" (waits for the next start)" if pending else "")
    audit.mutation(session, call, note, vm_id=vm.id)
    return requests.Done(True, vm.id)


async def update(store: VmStore, vm_ref: str, update: Update, call: Call) -> Vm:
    def mutate(session: Session, vm: Vm) -> Outcome[None]:
        work = functools.partial(_mutate, vm=vm, update=update, call=call)
        return Outcome(requests.claimed(session, call, work, lambda _s, _p: False), None)

    if call.request_id:
        prior = await store.db.run(lambda s: requests.lookup(s, call))
        if prior is not None:
            vm_ref = prior.result_id  # the VM's id: found even if renamed since
    return (await store.update(vm_ref, mutate, call)).vm
