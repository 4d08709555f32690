"""Hook scripts on real guests (qemu:///system, TCG), through hostd's gRPC API.

One hostd with a hooks folder serves the module. Its before_vm_start script
acts on the VM's custom properties: it adds a <watchdog> and a
<description> to the domain, fails, hangs (with a child of its own), or
leaves broken XML. Only the first kind of VM boots. hostd allows exactly the
properties these scripts use (PROPERTIES), and its environment holds a
secret no script may see (SECRET).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import vm_pb2

from hostd.config import HostdConfig
from hostd.server import Hostd
from tests.support.connect import TEST_HOST_ID, hostd_channel, new_identity
from tests.support.hostd_rig import vm_config
from tests.support.real import IMAGE_ROOTS, GuestImage
from tests.support.virt import domain_exists, remove_domains
from tests.support.waiting import until

S = pb.HostVm
TIMEOUT = 240.0
"""Generous: guests boot under TCG, several at once."""
HOOK_TIMEOUT = 3.0
PROPERTIES = {"mode": "device|fail|hang|broken", "note": "[a-z-]{1,32}"}
SECRET = ("VIRTPLANE_TEST_SECRET", "only-for-hostd")
"""Set in hostd's environment: the scripts get a minimal one, without it."""

pytestmark = pytest.mark.guest

BEFORE_START = """# Acts on the VM's custom property "mode".
env > "$HOOK_OUT/$VIRTPLANE_VM_ID.env"
case "$VIRTPLANE_PROPERTY_mode" in
device)
    sed -i "s|<devices>|<devices><watchdog model='i6300esb' action='none'/>|" "$_hook_domxml"
    sed -i "s|</name>|</name><description>$VIRTPLANE_PROPERTY_note</description>|" "$_hook_domxml"
    ;;
fail)
    echo "some output"
    echo "the storage for this VM is not ready" >&2
    exit 1
    ;;
hang)
    sleep 600 &
    echo $! > "$HOOK_OUT/$VIRTPLANE_VM_ID.child"
    wait
    ;;
broken)
    echo "<domain><name>" > "$_hook_domxml"
    ;;
esac
"""
AFTER = """echo "$VIRTPLANE_HOOK_POINT" >> "$HOOK_OUT/$VIRTPLANE_VM_ID.after"
"""


@dataclass
class HookedHost:
    hostd: Hostd
    stub: pb_grpc.HostAgentServiceAsyncStub
    out: Path
    uri: str
    image: GuestImage
    created: list[str]

    def config(self, mode: str, **properties: str) -> pb.VmConfig:
        config = vm_config(
            self.image.kernel,
            initrd=self.image.initrd,
            name=f"hook-{mode}-{os.getpid()}",
            memory_mib=256,
            nics=(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER),),
        )
        config.spec.boot.cmdline = self.image.cmdline
        config.custom_properties["mode"] = mode
        config.custom_properties.update(properties)
        self.created.append(config.vm_id)
        return config

    async def ended(self, vm_id: str) -> pb.HostVm:
        """The VM's state event that ends its start: RUNNING or DOWN."""
        async for event in self.events():
            if event.WhichOneof("payload") != "vm_state" or event.vm_state.vm_id != vm_id:
                continue
            if event.vm_state.state in (S.STATE_RUNNING, S.STATE_DOWN):
                return event.vm_state
        raise AssertionError("unreachable")

    async def events(self) -> AsyncIterator[pb.HostEvent]:
        deadline = time.monotonic() + TIMEOUT
        cursor = 0
        while time.monotonic() < deadline:
            for event in self.hostd.journal.after(cursor):
                cursor = event.sequence
                yield event
            await asyncio.sleep(0.05)
        pytest.fail(f"timed out after {TIMEOUT}s waiting for hostd's events")


def _script(folder: Path, out: Path, text: str) -> None:
    """A script writing under out (named in it: hostd's environment is not the scripts')."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "50-test"
    path.write_text(f"#!/bin/sh\nHOOK_OUT='{out}'\n{text}")
    path.chmod(0o755)


@pytest.fixture(scope="module")
async def hooked(
    system_libvirt: str, guest_image: GuestImage, state_root: Path
) -> AsyncIterator[HookedHost]:
    hooks, out = state_root / "hooks", state_root / "out"
    out.mkdir()
    _script(hooks / "before_vm_start", out, BEFORE_START)
    for point in ("after_vm_start", "before_vm_destroy", "after_vm_destroy"):
        _script(hooks / point, out, AFTER)
    os.environ[SECRET[0]] = SECRET[1]
    pki = new_identity(state_root / "s")
    hostd = Hostd(
        HostdConfig(
            listen="127.0.0.1:0",
            libvirt_uri=system_libvirt,
            state_dir=state_root / "s",
            hooks_dir=hooks,
            hook_timeout_seconds=HOOK_TIMEOUT,
            image_roots=IMAGE_ROOTS,
            vm_properties=PROPERTIES,
        )
    )
    port = await hostd.start()
    channel = hostd_channel(f"127.0.0.1:{port}", pki, TEST_HOST_ID)
    host = HookedHost(
        hostd, pb_grpc.HostAgentServiceStub(channel), out, system_libvirt, guest_image, []
    )
    try:
        yield host
    finally:
        await asyncio.gather(*(hostd.vms.destroy(vm.vm_id) for vm in hostd.vms.list()))
        await channel.close(None)
        await hostd.stop(grace=1)
        del os.environ[SECRET[0]]
        await asyncio.to_thread(remove_domains, system_libvirt, host.created)


def _running_xml(uri: str, vm_id: str) -> str:
    conn = libvirt.open(uri)
    try:
        return str(conn.lookupByUUIDString(vm_id).XMLDesc(0))
    finally:
        conn.close()


def _variables(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


async def test_a_hook_adds_a_device_the_running_domain_has(hooked: HookedHost) -> None:
    config = hooked.config("device", note="added-by-a-hook")
    await hooked.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vm = await hooked.ended(config.vm_id)
    assert vm.state == S.STATE_RUNNING, vm.message
    xml = await asyncio.to_thread(_running_xml, hooked.uri, config.vm_id)
    assert "<watchdog model='i6300esb' action='none'>" in xml
    assert "<description>added-by-a-hook</description>" in xml

    env = _variables(hooked.out / f"{config.vm_id}.env")
    assert env["VIRTPLANE_VM_ID"] == config.vm_id
    assert env["VIRTPLANE_VM_NAME"] == config.name
    assert env["VIRTPLANE_HOOK_POINT"] == "before_vm_start"
    assert env["VIRTPLANE_PROPERTY_mode"] == "device"
    assert env["VIRTPLANE_PROPERTY_note"] == "added-by-a-hook"
    assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert SECRET[0] not in env, "hostd's environment does not reach the scripts"

    after = hooked.out / f"{config.vm_id}.after"
    await until(lambda: len(_words(after)) == 1, what="after_vm_start", within=TIMEOUT)
    assert _words(after) == ["after_vm_start"]

    await hooked.stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id))
    await until(lambda: len(_words(after)) == 3, what="the destroy hooks", within=TIMEOUT)
    assert after.read_text().split() == ["after_vm_start", "before_vm_destroy", "after_vm_destroy"]


async def test_a_failing_hook_fails_the_start_with_its_message(hooked: HookedHost) -> None:
    config = hooked.config("fail")
    await hooked.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vm = await hooked.ended(config.vm_id)
    assert (vm.state, vm.exit_reason, vm.message) == (
        S.STATE_DOWN,
        S.EXIT_REASON_START_FAILED,
        "hook before_vm_start/50-test failed (exit status 1): the storage for this VM is not ready",
    )
    conn_has = await asyncio.to_thread(domain_exists, hooked.uri, config.vm_id)
    assert not conn_has, "libvirt never got the domain"


async def test_a_hanging_hook_is_killed_and_fails_the_start(hooked: HookedHost) -> None:
    config = hooked.config("hang")
    started = time.monotonic()
    await hooked.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    # Other VMs' events go on meanwhile: the loop is not blocked.
    listed = await hooked.stub.ListVms(pb.HostAgentServiceListVmsRequest())
    assert config.vm_id in {vm.vm_id for vm in listed.vms}
    vm = await hooked.ended(config.vm_id)
    took = time.monotonic() - started
    assert (vm.state, vm.exit_reason, vm.message) == (
        S.STATE_DOWN,
        S.EXIT_REASON_START_FAILED,
        f"hook before_vm_start/50-test timed out after {HOOK_TIMEOUT:g} s",
    )
    child = int((hooked.out / f"{config.vm_id}.child").read_text())
    await until(
        lambda: not _alive(child), what="the hook's own child to be killed with it", within=30
    )
    print(f"\nhanging hook: the start failed {took:.1f} s after CreateVm")


async def test_broken_xml_from_a_hook_fails_the_start_clearly(hooked: HookedHost) -> None:
    config = hooked.config("broken")
    await hooked.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    vm = await hooked.ended(config.vm_id)
    assert (vm.state, vm.exit_reason) == (S.STATE_DOWN, S.EXIT_REASON_START_FAILED)
    assert vm.message.startswith(
        "hook before_vm_start/50-test left unusable domain XML: not well-formed XML"
    )


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"  # PID 1 here reaps orphans late
