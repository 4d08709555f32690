"""hostd's own custom property allowlist (--vm-property KEY=REGEX), and the
minimal environment its hook scripts get: a real virtplane-hostd process on
libvirt's test driver (domains are made, nothing boots), with a
before_vm_start script recording what it is given."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd.config import HostdConfig
from hostd.hooks import HookPoint
from hostd.main import parse_args
from hostd.server import Hostd
from tests.support.hostd_rig import boot_files, hook_script, vm_config
from tests.support.pki import TestPki
from tests.support.stack import BIN, Daemon, start_hostd
from tests.support.waiting import until
from virtplane_common.properties import BadPropertyRule

RULES = ("tier=gold|silver", "note=[a-z ]{0,20}")
SECRET = ("VIRTPLANE_TEST_SECRET", "hostd-only-secret")
"""Set in hostd's environment, never in a hook's."""


@dataclass
class Host:
    daemon: Daemon
    stub: pb_grpc.HostAgentServiceAsyncStub
    kernel: str
    seen: Path
    """Where the hook writes the environment it got, one file per VM."""

    def config(self, **properties: str) -> pb.VmConfig:
        config = vm_config(self.kernel)
        config.custom_properties.update(properties)
        return config

    async def refusal(self, config: pb.VmConfig) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
        return caught.value.code(), caught.value.details() or ""


@pytest.fixture(scope="module")
def hostd(state_root: Path) -> Iterator[tuple[Daemon, Path, Path]]:
    hooks, seen = state_root / "hooks", state_root / "seen"
    seen.mkdir()
    hook_script(hooks, HookPoint.BEFORE_VM_START, "10-record", f'env > "{seen}/$VIRTPLANE_VM_ID"\n')
    rules = [arg for rule in RULES for arg in ("--vm-property", rule)]
    daemon = start_hostd(
        state_root,
        "test:///default",
        extra=("--hooks-dir", str(hooks), *rules),
        env=dict([SECRET]),
        pki=TestPki(state_root / "pki"),
    )
    yield daemon, seen, state_root
    daemon.stop()


@pytest.fixture
async def host(hostd: tuple[Daemon, Path, Path], tmp_path: Path) -> AsyncIterator[Host]:
    daemon, seen, _ = hostd
    async with daemon.channel() as channel:
        stub = pb_grpc.HostAgentServiceStub(channel)
        yield Host(daemon, stub, boot_files(tmp_path)[0], seen)
        for vm in (await stub.ListVms(pb.HostAgentServiceListVmsRequest())).vms:
            await stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=vm.vm_id))


async def test_a_key_hostd_does_not_allow_is_refused(host: Host) -> None:
    assert await host.refusal(host.config(tier="gold", owner="x")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "config.custom_properties[owner]: is not an allowed property (allowed: note, tier)",
    )


async def test_a_value_not_matching_its_pattern_is_refused(host: Host) -> None:
    for value in ("bronze", "gold ", "goldsilver", ""):
        assert await host.refusal(host.config(tier=value)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.custom_properties[tier]: does not match the pattern allowed for it:"
            " gold|silver",
        ), value


async def test_allowed_properties_reach_the_hook_in_a_minimal_environment(host: Host) -> None:
    config = host.config(tier="silver", note="a b c")
    await host.stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config))
    recorded = host.seen / config.vm_id
    await until(recorded.exists, what="the before_vm_start hook to run")
    await until(lambda: recorded.read_text().endswith("\n"), what="the hook's record")
    env = dict(line.split("=", 1) for line in recorded.read_text().splitlines())
    assert env["VIRTPLANE_PROPERTY_tier"] == "silver"
    assert env["VIRTPLANE_PROPERTY_note"] == "a b c"
    assert SECRET[0] not in env, "a variable of hostd's environment reached the hook"
    assert SECRET[1] not in recorded.read_text()
    assert (env["PATH"], env["LANG"]) == ("/usr/sbin:/usr/bin:/sbin:/bin", "C.UTF-8")
    assert {k for k in env if not k.startswith("VIRTPLANE_")} == {
        "PATH",
        "LANG",
        "PWD",
        "_hook_domxml",
    }


def test_the_vm_property_flag() -> None:
    config, _ = parse_args([])
    assert config.vm_properties == {}
    config, _ = parse_args(["--vm-property", "tier=gold|silver", "--vm-property", "eq=a=b"])
    assert config.vm_properties == {"tier": "gold|silver", "eq": "a=b"}


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("tier=(gold", "custom property tier: the pattern '(gold' is not a regular expression"),
        ("1tier=x", "custom property key '1tier': must be 1-64 letters"),
        ("tier", "'tier' is not KEY=REGEX"),
    ],
)
def test_a_bad_rule_stops_hostd_at_start(rule: str, why: str, tmp_path: Path) -> None:
    ran = subprocess.run(
        [str(BIN / "virtplane-hostd"), "--state-dir", str(tmp_path), "--vm-property", rule],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 2
    assert why in ran.stderr
    assert "Traceback" not in ran.stderr


def test_a_bad_rule_in_a_config_fails_hostds_construction(tmp_path: Path) -> None:
    with pytest.raises(BadPropertyRule, match="custom property tier: the pattern"):
        Hostd(HostdConfig(state_dir=tmp_path, vm_properties={"tier": "[gold"}))
