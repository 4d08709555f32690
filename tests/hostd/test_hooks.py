"""Hook scripts: the runner on its own, then wired into the VM paths on the fake hypervisor.

The scripts are real executables run as child processes; only the hypervisor is the fake.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb

from hostd import convert
from hostd.hooks import (
    STDERR_CAP,
    STDERR_TAIL,
    HookFailed,
    HookPoint,
    Hooks,
    HookSettings,
    HookVm,
)
from hostd.model import VmState
from hostd.validation import Admission, validate_config
from tests.hostd.fakes import FakeHypervisor
from tests.support.hostd_rig import FAST, Rig, hook_script, make_rig, vm_config
from tests.support.real import IMAGE_ROOTS
from tests.support.waiting import until
from virtplane_common.errors import InvalidArgument
from virtplane_common.properties import AllowedProperties

ALLOWED = AllowedProperties.compile({"good_key1": ".*", "tag": "[a-z-]+"})


def check(config: pb.VmConfig) -> None:
    """Validates config as hostd receives it: converted at the edge, then checked."""
    validate_config(convert.config_from_proto(config), Admission(IMAGE_ROOTS, ALLOWED))


XML = "<domain type='qemu'><name>vp-a</name><uuid>{uuid}</uuid><devices/></domain>"
VM_ID = "6f1c0000-0000-4000-8000-000000000001"


def _hooks(directory: Path, timeout: float = 5.0) -> Hooks:
    return Hooks(HookSettings(directory, timeout))


async def test_scripts_run_in_sorted_order_on_one_xml_file(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    point = HookPoint.BEFORE_VM_START
    hook_script(
        hooks,
        point,
        "20-second",
        'sed -i "s|<devices/>|<devices><b/></devices>|" "$_hook_domxml"\n',
    )
    hook_script(
        hooks,
        point,
        "10-first",
        'sed -i "s|<name>|<description>x</description><name>|" "$_hook_domxml"\n',
    )
    not_executable = hooks / point.value / "05-disabled"
    not_executable.write_text("#!/bin/sh\nexit 1\n")
    run = await _hooks(hooks).run(point, HookVm(VM_ID), XML.format(uuid=VM_ID))
    assert run.ran == ("10-first", "20-second")
    assert run.failures == ()
    assert "<description>x</description><name>" in run.xml
    assert "<devices><b/></devices>" in run.xml


async def test_a_script_sees_the_vm_and_its_properties(tmp_path: Path) -> None:
    hooks, seen = tmp_path / "hooks", tmp_path / "seen"
    hook_script(hooks, HookPoint.AFTER_VM_START, "env", f"env > {seen}\n")
    vm = HookVm(VM_ID, "web-1", {"numa": "strict", "sap_agent": "true"})
    os.environ["VIRTPLANE_PROPERTY_STALE"] = "from hostd's environment"
    try:
        await _hooks(hooks).run(HookPoint.AFTER_VM_START, vm, XML.format(uuid=VM_ID))
    finally:
        del os.environ["VIRTPLANE_PROPERTY_STALE"]
    env = _variables(seen)
    assert env["VIRTPLANE_VM_ID"] == VM_ID
    assert env["VIRTPLANE_VM_NAME"] == "web-1"
    assert env["VIRTPLANE_HOOK_POINT"] == "after_vm_start"
    assert env["VIRTPLANE_PROPERTY_numa"] == "strict"
    assert env["VIRTPLANE_PROPERTY_sap_agent"] == "true"
    assert "VIRTPLANE_PROPERTY_STALE" not in env
    assert env["_hook_domxml"].endswith(".xml")
    assert not _exists(env["_hook_domxml"]), "the XML file is removed after the run"


async def test_a_script_gets_a_minimal_environment_not_hostds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks, seen = tmp_path / "hooks", tmp_path / "seen"
    hook_script(hooks, HookPoint.BEFORE_VM_START, "env", f"env > {seen}\n")
    monkeypatch.setenv("HOSTD_SECRET", "not for hooks")
    monkeypatch.setenv("PATH", "/opt/hostd-only/bin:" + os.environ["PATH"])
    vm = HookVm(VM_ID, "web-1", {"tier": "gold"})
    await _hooks(hooks).run(HookPoint.BEFORE_VM_START, vm, XML.format(uuid=VM_ID))
    env = _variables(seen)
    env.pop("PWD")  # the shell's own
    assert env == {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "_hook_domxml": env["_hook_domxml"],
        "VIRTPLANE_HOOK_POINT": "before_vm_start",
        "VIRTPLANE_VM_ID": VM_ID,
        "VIRTPLANE_VM_NAME": "web-1",
        "VIRTPLANE_PROPERTY_tier": "gold",
    }


async def test_a_failing_before_hook_stops_the_run_with_its_stderr(tmp_path: Path) -> None:
    hooks, later = tmp_path / "hooks", tmp_path / "later"
    point = HookPoint.BEFORE_VM_START
    hook_script(hooks, point, "10-check", "echo noise\necho 'no licence for this VM' >&2\nexit 3\n")
    hook_script(hooks, point, "20-later", f"touch {later}\n")
    with pytest.raises(HookFailed) as caught:
        await _hooks(hooks).check(point, HookVm(VM_ID), XML.format(uuid=VM_ID))
    assert str(caught.value) == (
        "hook before_vm_start/10-check failed (exit status 3): no licence for this VM"
    )
    assert not later.exists()


async def test_a_flood_of_stderr_is_capped_and_said_so(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    point = HookPoint.BEFORE_VM_START
    flood = "head -c 5000000 /dev/zero | tr '\\0' x >&2\necho 'the last words' >&2\nexit 1\n"
    hook_script(hooks, point, "10-flood", flood)
    with pytest.raises(HookFailed) as caught:
        await _hooks(hooks).check(point, HookVm(VM_ID), XML.format(uuid=VM_ID))
    message = str(caught.value)
    dropped = 5_000_000 + len("the last words\n") - STDERR_CAP
    assert f"exit status 1; {dropped} earlier bytes of its stderr dropped" in message
    assert message.endswith("the last words")
    assert len(message) < STDERR_TAIL + 200


async def test_after_hooks_all_run_and_their_failures_are_returned(tmp_path: Path) -> None:
    hooks, later = tmp_path / "hooks", tmp_path / "later"
    point = HookPoint.AFTER_VM_DESTROY
    hook_script(hooks, point, "10-fails", "exit 1\n")
    hook_script(hooks, point, "20-later", f"touch {later}\n")
    run = await _hooks(hooks).run(point, HookVm(VM_ID), "")
    assert [(f.hook, f.message) for f in run.failures] == [("10-fails", "failed (exit status 1)")]
    assert later.exists()


async def test_a_hanging_script_and_its_children_are_killed_after_the_timeout(
    tmp_path: Path,
) -> None:
    hooks, pid_file = tmp_path / "hooks", tmp_path / "child.pid"
    point = HookPoint.BEFORE_VM_START
    hook_script(hooks, point, "10-hang", f"sleep 600 &\necho $! > {pid_file}\nwait\n")
    started = time.monotonic()
    with pytest.raises(HookFailed, match=r"^hook before_vm_start/10-hang timed out after 0.5 s$"):
        await _hooks(hooks, timeout=0.5).check(point, HookVm(VM_ID), XML.format(uuid=VM_ID))
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    await until(lambda: not _alive(child), what="the script's child to be killed", within=10)


@pytest.mark.parametrize(
    ("rewrite", "problem"),
    [
        ("echo '<domain><name>' > $_hook_domxml", "not well-formed XML"),
        ("echo '<network/>' > $_hook_domxml", "the root element is <network>, not <domain>"),
        (
            "sed -i 's|<uuid>.*</uuid>|<uuid>6f1c0000-0000-4000-8000-000000000002</uuid>|' "
            "$_hook_domxml",
            f"its <uuid> is 6f1c0000-0000-4000-8000-000000000002, not the VM's {VM_ID}",
        ),
    ],
)
async def test_a_start_hook_must_leave_the_vms_domain(
    tmp_path: Path, rewrite: str, problem: str
) -> None:
    hooks = tmp_path / "hooks"
    hook_script(hooks, HookPoint.BEFORE_VM_START, "50-rewrite", rewrite + "\n")
    with pytest.raises(HookFailed) as caught:
        await _hooks(hooks).check(HookPoint.BEFORE_VM_START, HookVm(VM_ID), XML.format(uuid=VM_ID))
    message = str(caught.value)
    assert message.startswith("hook before_vm_start/50-rewrite left unusable domain XML: ")
    assert problem in message


async def test_no_hooks_folder_runs_nothing(tmp_path: Path) -> None:
    hooks = Hooks(HookSettings(None))
    assert hooks.scripts(HookPoint.BEFORE_VM_START) == []
    missing = _hooks(tmp_path / "absent")
    run = await missing.run(HookPoint.BEFORE_VM_START, HookVm(VM_ID), "<x/>")
    assert (run.xml, run.ran) == ("<x/>", ())


def test_custom_property_keys_must_be_safe_variable_names(boot_files: tuple[str, str]) -> None:
    config = vm_config(boot_files[0])
    config.custom_properties["good_key1"] = "any value, spaces and all"
    check(config)
    for key in ("1abc", "with-dash", "PATH=x", "", "a" * 65):
        bad = vm_config(boot_files[0])
        bad.custom_properties[key] = "v"
        with pytest.raises(InvalidArgument, match=r"config\.custom_properties"):
            check(bad)
    bad = vm_config(boot_files[0])
    bad.custom_properties["k"] = "line\nbreak"
    with pytest.raises(InvalidArgument, match=r"config.custom_properties\[k\]"):
        check(bad)


# -- wired into the VM paths, on the fake hypervisor


@pytest.fixture
async def hooked(tmp_path: Path, boot_files: tuple[str, str]) -> AsyncIterator[Rig]:
    settings = dataclasses.replace(
        FAST, hooks=HookSettings(tmp_path / "hooks", 2.0), admission=Admission(IMAGE_ROOTS, ALLOWED)
    )
    rig = await make_rig(FakeHypervisor(), tmp_path, boot_files[0], settings)
    yield rig
    await rig.vms.stop()


def _hooks_dir(rig: Rig) -> Path:
    directory = rig.vms.hooks.settings.directory
    assert directory is not None
    return directory


def _hook_failures(rig: Rig) -> list[pb.HookFailedEvent]:
    return [e.hook_failed for e in rig.journal.after(0) if e.WhichOneof("payload") == "hook_failed"]


async def test_the_rewritten_xml_is_what_the_hypervisor_starts(hooked: Rig) -> None:
    hook_script(
        _hooks_dir(hooked),
        HookPoint.BEFORE_VM_START,
        "10-describe",
        'sed -i "s|<devices>|<description>$VIRTPLANE_PROPERTY_tag</description><devices>|" '
        '"$_hook_domxml"\n',
    )
    config = replace(hooked.config(), custom_properties={"tag": "tagged-by-hook"})
    await hooked.running(config)
    assert "<description>tagged-by-hook</description>" in hooked.fake.started_xml[0]


async def test_a_failing_start_hook_leaves_the_vm_down_start_failed(hooked: Rig) -> None:
    hook_script(
        _hooks_dir(hooked), HookPoint.BEFORE_VM_START, "10-no", "echo 'not today' >&2\nexit 1\n"
    )
    config = hooked.config()
    await hooked.vms.create(config)
    await until(lambda: hooked.state_names(config.vm_id)[-1:] == ["DOWN"], what="DOWN")
    down = hooked.journal.after(0)[-1].vm_state
    assert (down.exit_reason, down.message) == (
        pb.HostVm.EXIT_REASON_START_FAILED,
        "hook before_vm_start/10-no failed (exit status 1): not today",
    )
    assert hooked.fake.started_xml == []


async def test_after_hooks_failing_are_reported_and_change_nothing(hooked: Rig) -> None:
    hooks = _hooks_dir(hooked)
    hook_script(
        hooks, HookPoint.AFTER_VM_START, "10-broken", "echo 'after went wrong' >&2\nexit 7\n"
    )
    config = await hooked.running()
    await until(lambda: bool(_hook_failures(hooked)), what="the hook failure to be journaled")
    (failed,) = _hook_failures(hooked)
    assert (failed.vm_id, failed.point, failed.hook, failed.message) == (
        config.vm_id,
        "after_vm_start",
        "10-broken",
        "failed (exit status 7): after went wrong",
    )
    assert hooked.state(config.vm_id) == VmState.RUNNING


async def test_destroy_runs_its_hooks_and_is_not_stopped_by_them(
    hooked: Rig, tmp_path: Path
) -> None:
    hooks, seen = _hooks_dir(hooked), tmp_path / "after-destroy"
    hook_script(hooks, HookPoint.BEFORE_VM_DESTROY, "10-refuse", "exit 1\n")
    count = f'grep -c "<uuid>" "$_hook_domxml" > {seen}.tmp; mv {seen}.tmp {seen}\n'
    hook_script(hooks, HookPoint.AFTER_VM_DESTROY, "10-log", count)
    config = await hooked.running()
    await hooked.vms.destroy(config.vm_id)
    assert hooked.state_names(config.vm_id)[-1] == "DOWN"
    await until(seen.exists, what="after_vm_destroy to run")
    assert seen.read_text().strip() == "1", "it got the domain's XML"
    assert [f.point for f in _hook_failures(hooked)] == ["before_vm_destroy"]


async def test_a_failing_hibernate_hook_keeps_the_vm_running(hooked: Rig) -> None:
    hook_script(
        _hooks_dir(hooked), HookPoint.BEFORE_VM_HIBERNATE, "10-no", "echo busy >&2\nexit 1\n"
    )
    config = await hooked.running()
    await hooked.vms.hibernate(config.vm_id)
    await until(
        lambda: hooked.state_names(config.vm_id)[-2:] == ["SAVING_STATE", "RUNNING"], what="RUNNING"
    )
    vm = hooked.vms.get(config.vm_id)
    assert (
        vm.message
        == "hibernation failed: hook before_vm_hibernate/10-no failed (exit status 1): busy"
    )
    assert config.vm_id in hooked.fake.domains
    assert list(hooked.layout.saved_dir.iterdir()) == []


async def test_dehibernate_hooks_run_after_a_restore(hooked: Rig, tmp_path: Path) -> None:
    seen = tmp_path / "restored"
    hook_script(
        _hooks_dir(hooked),
        HookPoint.AFTER_VM_DEHIBERNATE,
        "10-log",
        f"echo $VIRTPLANE_VM_ID > {seen}.tmp; mv {seen}.tmp {seen}\n",
    )
    config = await hooked.running()
    await hooked.vms.hibernate(config.vm_id)
    await hooked.wait_for(config.vm_id, VmState.SUSPENDED)
    await hooked.vms.create(config)
    await hooked.wait_for(config.vm_id, VmState.RUNNING)
    await until(seen.exists, what="after_vm_dehibernate to run")
    assert seen.read_text().strip() == config.vm_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (PID 1 here reaps late) is dead too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _variables(path: Path) -> dict[str, str]:
    """What `env` wrote."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _exists(path: str) -> bool:
    return Path(path).exists()


async def test_after_destroy_alone_still_gets_the_domains_xml(hooked: Rig, tmp_path: Path) -> None:
    seen = tmp_path / "after-destroy"
    count = f'grep -c "<uuid>" "$_hook_domxml" > {seen}.tmp; mv {seen}.tmp {seen}\n'
    hook_script(_hooks_dir(hooked), HookPoint.AFTER_VM_DESTROY, "10-log", count)
    config = await hooked.running()
    await hooked.vms.destroy(config.vm_id)
    await until(seen.exists, what="after_vm_destroy to run")
    assert seen.read_text().strip() == "1"
