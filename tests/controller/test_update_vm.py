"""UpdateVm: update_mask paths, changes that wait for the next start,
optimistic concurrency; disks in the spec, started with the VM. On each engine, with a real
hostd on libvirt's test driver where a VM must run."""

from __future__ import annotations

# Raw stubs: this module checks UpdateVm's masks, replies and status details as sent.
import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.controller_rig import WAIT, Rig, close_rig, config, error, open_rig, spec
from tests.support.rig_hosts import add_daemon, add_test_host, start_test_hostd
from tests.support.served import Served
from virtplane_client import ExitReason, VmState

S = vm_pb2.Vm


def _update(vm: str, values: vm_pb2.Vm, *paths: str, version: int = 0) -> vm_api.UpdateVmRequest:
    return vm_api.UpdateVmRequest(
        vm=vm,
        vm_update=values,
        update_mask=FieldMask(paths=list(paths)),
        expected_spec_version=version,
    )


async def test_a_down_vm_takes_the_change_at_once(rig: Rig, boot: vm_pb2.BootSource) -> None:
    created = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=spec(boot)))).vm
    assert created.spec_version == 1
    values = vm_pb2.Vm(spec=vm_pb2.VmSpec(memory_mib=512, vcpus=7))  # vcpus is not in the mask
    updated = (await rig.vms.UpdateVm(_update("a", values, "spec.memory_mib"))).vm
    assert updated.spec.memory_mib == 512 and updated.spec.vcpus == 1
    assert updated.spec_version == 2
    assert not updated.HasField("next_run_spec") and not updated.status.pending_restart
    assert updated.spec.nics[0].mac_address == created.spec.nics[0].mac_address
    assert updated.status.revision > created.status.revision


async def test_bad_paths_and_values_are_named(rig: Rig, boot: vm_pb2.BootSource) -> None:
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=spec(boot)))
    code, why = await error(rig.vms.UpdateVm(_update("a", vm_pb2.Vm(), "spec.memory_mib", "id")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert why.startswith("update_mask.paths[1]: 'id' cannot be updated")
    code, why = await error(rig.vms.UpdateVm(_update("a", vm_pb2.Vm())))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and why.startswith("update_mask:")
    values = vm_pb2.Vm(spec=vm_pb2.VmSpec(memory_mib=1))
    code, why = await error(rig.vms.UpdateVm(_update("a", values, "spec.memory_mib")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert why.startswith("vm_update.spec.memory_mib: must be between")
    values = vm_pb2.Vm(spec=vm_pb2.VmSpec(boot=vm_pb2.BootSource(kernel_path="rel/k")))
    code, why = await error(rig.vms.UpdateVm(_update("a", values, "spec.boot.kernel_path")))
    assert why.startswith("vm_update.spec.boot.kernel_path: must be an absolute path")
    assert (await rig.client.vms.get("a")).spec_version == 1  # nothing changed


async def test_a_stale_version_is_aborted_and_no_update_is_lost(
    rig: Rig, boot: vm_pb2.BootSource
) -> None:
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=spec(boot)))
    # Ten clients read version 1 and each try to set its own cmdline.
    attempts = [
        rig.vms.UpdateVm(
            _update(
                "a",
                vm_pb2.Vm(spec=vm_pb2.VmSpec(boot=vm_pb2.BootSource(cmdline=f"c{i}"))),
                "spec.boot.cmdline",
                version=1,
            )
        )
        for i in range(10)
    ]
    results = await asyncio.gather(*attempts, return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1 and len(lost) == 9
    assert all(e.code() is grpc.StatusCode.ABORTED for e in lost)
    assert "is at spec_version 2, not 1" in (lost[0].details() or "")
    vm = await rig.client.vms.get("a")
    assert vm.spec_version == 2 and vm.spec.boot.cmdline == won[0].vm.spec.boot.cmdline


async def test_changes_to_a_running_vm_wait_for_its_next_start(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    name = f"u-{uuid.uuid4().hex[:8]}"
    created = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))).vm
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=WAIT)

    values = vm_pb2.Vm(
        name=f"{name}-renamed",
        spec=vm_pb2.VmSpec(memory_mib=192, nics=[vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER)] * 2),
    )
    values.spec.nics[0].name, values.spec.nics[1].name = "nic0", "nic1"
    request = _update(name, values, "name", "spec.memory_mib", "spec.nics")
    request.request_id = "update-1"
    vm = (await rig.vms.UpdateVm(request)).vm
    name = vm.name
    assert name.endswith("-renamed")  # a name applies at once
    assert vm.spec.memory_mib == 128 and len(vm.spec.nics) == 1  # what runs
    assert vm.next_run_spec.memory_mib == 192 and len(vm.next_run_spec.nics) == 2
    assert list(vm.status.pending_restart) == ["spec.memory_mib", "spec.nics"]
    # A repeat, by the name the VM had: the same update, found by its request id.
    again = (await rig.vms.UpdateVm(request)).vm
    assert (again.id, again.spec_version) == (created.id, vm.spec_version)

    # A second change adds to the first.
    more = vm_pb2.Vm(spec=vm_pb2.VmSpec(vcpus=2))
    vm = (await rig.vms.UpdateVm(_update(name, more, "spec.vcpus"))).vm
    assert list(vm.status.pending_restart) == ["spec.memory_mib", "spec.nics", "spec.vcpus"]
    assert vm.next_run_spec.memory_mib == 192 and vm.next_run_spec.vcpus == 2

    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))
    assert (await rig.client.vms.get(name)).status.pending_restart  # still waiting while DOWN
    started = await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    vm = started.vm
    assert vm.spec.memory_mib == 192 and vm.spec.vcpus == 2 and len(vm.spec.nics) == 2
    assert not vm.HasField("next_run_spec") and not vm.status.pending_restart
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))


async def test_a_vm_starts_with_its_disks(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource, tmp_path: Path
) -> None:
    await add_test_host(rig, "h1", test_hostd)
    name = f"d-{uuid.uuid4().hex[:8]}"
    image = tmp_path / "data0.qcow2"
    with_disk = spec(boot)
    with_disk.disks.append(
        vm_pb2.Disk(name="data0", path=str(image), format=vm_pb2.Disk.FORMAT_QCOW2)
    )
    vm = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=with_disk))).vm
    assert [(d.name, d.format) for d in vm.spec.disks] == [("data0", vm_pb2.Disk.FORMAT_QCOW2)]
    # The host gets the disk: with no image there, its validation refuses the start.
    code, why = await error(rig.vms.StartVm(vm_api.StartVmRequest(vm=name)))
    assert "config.spec.disks[0].path: is not an image file under hostd's image roots" in why, (
        code,
        why,
    )
    failed = await rig.client.vms.get(name)
    assert (failed.status.state, failed.status.exit_reason) == (
        VmState.DOWN,
        ExitReason.START_FAILED,
    )
    image.write_bytes(b"")  # the test driver opens no image: its existence is enough
    started = (await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))).vm
    assert started.status.host_id
    assert [d.path for d in started.spec.disks] == [str(image)]
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=WAIT)
    bad = vm_pb2.Vm(spec=vm_pb2.VmSpec(disks=[vm_pb2.Disk(name="x", path="rel")]))
    code, why = await error(rig.vms.UpdateVm(_update(name, bad, "spec.disks")))
    assert why.startswith("vm_update.spec.disks[0].path: must be an absolute path")
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))


async def test_availability_pinning_and_start_paused_apply_at_once_even_while_running(
    rig: Rig, test_hostd: Served, boot: vm_pb2.BootSource
) -> None:
    host_id = (await add_test_host(rig, "h1", test_hostd)).id
    name = f"p-{uuid.uuid4().hex[:8]}"
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
    await rig.vms.StartVm(vm_api.StartVmRequest(vm=name))
    await rig.client.vms.wait_for(name, VmState.POWERING_UP, timeout=WAIT)

    values = vm_pb2.Vm(
        spec=vm_pb2.VmSpec(highly_available=True, pinned_host="h1", start_paused=True)
    )
    paths = ("spec.highly_available", "spec.pinned_host", "spec.start_paused")
    vm = (await rig.vms.UpdateVm(_update(name, values, *paths))).vm
    assert vm.spec.highly_available and vm.spec.pinned_host == host_id and vm.spec.start_paused
    assert not vm.status.pending_restart and not vm.HasField("next_run_spec")

    values = vm_pb2.Vm(spec=vm_pb2.VmSpec(pinned_host="nowhere"))
    code, why = await error(rig.vms.UpdateVm(_update(name, values, "spec.pinned_host")))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert why == "vm_update.spec.pinned_host: names no registered host: 'nowhere'"
    vm = (await rig.vms.UpdateVm(_update(name, vm_pb2.Vm(), "spec.highly_available"))).vm
    assert not vm.spec.highly_available and vm.spec.pinned_host == host_id
    await rig.vms.StopVm(vm_api.StopVmRequest(vm=name))


async def test_a_mac_address_in_use_is_refused_naming_its_vm(
    rig: Rig, boot: vm_pb2.BootSource
) -> None:
    first = spec(boot)
    first.nics[0].mac_address = "52:54:00:aa:bb:01"
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=first))
    second = spec(boot)
    second.nics[0].mac_address = "52:54:00:AA:BB:01"
    code, why = await error(rig.vms.CreateVm(vm_api.CreateVmRequest(name="b", spec=second)))
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert why == "spec.nics[0]: MAC address 52:54:00:aa:bb:01 is in use by VM 'a'"

    await rig.vms.CreateVm(vm_api.CreateVmRequest(name="b", spec=spec(boot)))
    values = vm_pb2.Vm(spec=second)
    code, why = await error(rig.vms.UpdateVm(_update("b", values, "spec.nics")))
    assert code is grpc.StatusCode.ALREADY_EXISTS
    assert why == "vm_update.spec.nics[0]: MAC address 52:54:00:aa:bb:01 is in use by VM 'a'"
    # A VM's own address is no conflict.
    values = vm_pb2.Vm(spec=first)
    values.spec.nics[0].network = ""
    vm = (await rig.vms.UpdateVm(_update("a", values, "spec.nics"))).vm
    assert vm.spec.nics[0].mac_address == "52:54:00:aa:bb:01"


TIER = "tier=gold|silver"
"""The one custom property the controller and hostd allow here (--vm-property)."""


@pytest.fixture
async def tier_rig(database_url: str) -> AsyncIterator[Rig]:
    """A controller allowing the custom property tier."""
    opened = await open_rig(config(database_url, vm_properties=dict([TIER.split("=", 1)])))
    yield opened
    await close_rig(opened)


async def test_custom_properties_reach_the_hosts_hooks_and_changes_wait_for_a_restart(
    tier_rig: Rig, boot: vm_pb2.BootSource, tmp_path: Path
) -> None:
    rig = tier_rig
    hooks, seen = tmp_path / "hooks", tmp_path / "seen"
    (hooks / "before_vm_start").mkdir(parents=True)
    script = hooks / "before_vm_start" / "10-record"
    script.write_text(f'#!/bin/sh\necho "$VIRTPLANE_PROPERTY_tier" >> {seen}\n')
    script.chmod(0o755)
    workdir = Path(tempfile.mkdtemp(prefix="vp-"))  # short: socket paths must fit
    hostd = start_test_hostd(workdir, extra=("--hooks-dir", str(hooks), "--vm-property", TIER))
    try:
        await add_daemon(rig.client, "h1", hostd)
        bad = spec(boot)
        bad.custom_properties["2tier"] = "x"
        code, why = await error(rig.vms.CreateVm(vm_api.CreateVmRequest(name="p", spec=bad)))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert why.startswith("spec.custom_properties: keys must be")

        good = spec(boot)
        good.custom_properties["tier"] = "gold"
        await rig.vms.CreateVm(vm_api.CreateVmRequest(name="p", spec=good))
        await rig.vms.StartVm(vm_api.StartVmRequest(vm="p"))
        await rig.client.vms.wait_for("p", VmState.POWERING_UP, timeout=WAIT)
        assert seen.read_text() == "gold\n"

        values = vm_pb2.Vm(spec=vm_pb2.VmSpec(custom_properties={"tier": "silver"}))
        vm = (await rig.vms.UpdateVm(_update("p", values, "spec.custom_properties"))).vm
        assert dict(vm.spec.custom_properties) == {"tier": "gold"}
        assert list(vm.status.pending_restart) == ["spec.custom_properties"]
        await rig.vms.StopVm(vm_api.StopVmRequest(vm="p"))
        await rig.vms.StartVm(vm_api.StartVmRequest(vm="p"))
        await rig.client.vms.wait_for("p", VmState.POWERING_UP, timeout=WAIT)
        assert seen.read_text() == "gold\nsilver\n"
        await rig.vms.StopVm(vm_api.StopVmRequest(vm="p"))
    finally:
        hostd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
