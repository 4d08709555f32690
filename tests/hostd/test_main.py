"""virtplane-hostd as a process: arguments, readiness line, clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc

from hostd.config import HostdConfig, MigrationConfig
from hostd.listing import GUEST_BUDGET_BYTES
from hostd.main import parse_args
from hostd.server import Hostd
from tests.support.connect import TEST_HOST_ID, give_identity, hostd_channel
from tests.support.pki import TestPki
from tests.support.waiting import TIMEOUT
from virtplane_common.tls.names import Role

HOSTD = Path(sys.executable).parent / "virtplane-hostd"


def test_defaults() -> None:
    config, log = parse_args([])
    assert config.listen == "127.0.0.1:7070"
    assert config.libvirt_uri == "qemu:///system"
    assert config.state_dir == Path("/var/lib/virtplane/hostd")
    assert config.virt_type == "auto"
    assert config.list_guest_budget_bytes == GUEST_BUDGET_BYTES
    assert log.level == "INFO"


def test_list_budget_argument() -> None:
    config, _ = parse_args(["--list-guest-budget-bytes", "131072"])
    assert config.list_guest_budget_bytes == 131072


def test_arguments() -> None:
    config, log = parse_args(
        [
            *("--listen", "0.0.0.0:9", "--libvirt-uri", "test:///default"),
            *("--state-dir", "rel", "--virt-type", "qemu", "--log-level", "DEBUG"),
        ]
    )
    assert (config.listen, config.libvirt_uri, config.virt_type) == (
        "0.0.0.0:9",
        "test:///default",
        "qemu",
    )
    assert config.state_dir.is_absolute()
    assert log.level == "DEBUG"


def test_bad_virt_type_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--virt-type", "xen"])


async def _line_matching(stream: asyncio.StreamReader, pattern: str) -> re.Match[str]:
    seen: list[str] = []
    while line := (await stream.readline()).decode(errors="replace"):
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    pytest.fail(f"hostd ended without printing {pattern!r}:\n{''.join(seen)}")


async def test_serves_and_stops_on_sigterm(short_tmp: Path) -> None:
    pki = TestPki(short_tmp / "pki")
    give_identity(pki, short_tmp / "state")
    process = await asyncio.create_subprocess_exec(
        str(HOSTD),
        *("--listen", "127.0.0.1:0", "--libvirt-uri", "test:///default"),
        *("--state-dir", str(short_tmp / "state"), "--virt-type", "qemu"),
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        match = await asyncio.wait_for(
            _line_matching(process.stderr, r"hostd listening on (\S+)"), TIMEOUT
        )
        async with hostd_channel(match.group(1), pki, TEST_HOST_ID) as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            caps = await stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
            assert caps.hypervisor_type == "qemu"
        assert (short_tmp / "state" / "channels").is_dir()
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_line_matching(process.stderr, r"hostd stopped"), TIMEOUT)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_an_unreachable_libvirt_fails_cleanly(short_tmp: Path) -> None:
    give_identity(TestPki(short_tmp / "pki"), short_tmp / "state")
    process = await asyncio.create_subprocess_exec(
        str(HOSTD),
        *("--listen", "127.0.0.1:0", "--state-dir", str(short_tmp / "state")),
        *("--libvirt-uri", f"qemu+unix:///system?socket={short_tmp}/none"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 1
    assert b"hostd cannot run" in err
    assert b"libvirt" in err
    assert b"Traceback" not in err


async def test_hostd_serves_health_and_reflection(short_tmp: Path) -> None:
    config = HostdConfig(
        listen="127.0.0.1:0",
        libvirt_uri="test:///default",
        state_dir=short_tmp / "s",
        migration=MigrationConfig(qemu_tls_dir=short_tmp / "qemu-tls"),
    )
    pki = TestPki(short_tmp / "pki")
    give_identity(pki, config.state_dir)
    hostd = Hostd(config)
    port = await hostd.start()
    try:
        # Open to any peer with a certificate of the CA, whatever its role.
        user = pki.pair(Role.USER, "alice")
        async with hostd_channel(f"127.0.0.1:{port}", pki, TEST_HOST_ID, user) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "virtplane.v1.HostAgentService"):
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await hostd.stop()


def test_hook_arguments() -> None:
    config, _ = parse_args([])
    assert (config.hooks_dir, config.hook_timeout_seconds) == (None, 30.0)
    config, _ = parse_args(["--hooks-dir", "hooks", "--hook-timeout", "2.5"])
    assert config.hooks_dir is not None and config.hooks_dir.is_absolute()
    assert (config.hooks_dir.name, config.hook_timeout_seconds) == ("hooks", 2.5)


def test_identity_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config, _ = parse_args([])
    assert config.migration.peer_hypervisor_uri == "qemu+tls://{address_host}/system"
    assert not config.insecure_plaintext_dev
    assert config.enrollment.token == ""
    monkeypatch.setenv("VIRTPLANE_ENROLL_TOKEN", "vpe_from-env")
    token_file = tmp_path / "token"
    token_file.write_text("vpe_from-file\n")
    config, _ = parse_args(
        [
            *("--controller", "ctl:7443", "--controller-ca", "ca.pem"),
            *("--peer-hypervisor-uri", "qemu+tls://{host_id}.lan/system"),
            "--insecure-plaintext-dev",
        ]
    )
    assert config.enrollment.token == "vpe_from-env"
    assert config.enrollment.controller == "ctl:7443"
    assert config.enrollment.controller_ca == Path("ca.pem").absolute()
    assert config.migration.peer_hypervisor_uri == "qemu+tls://{host_id}.lan/system"
    assert config.insecure_plaintext_dev
    assert "vpe_" not in repr(config), "the token is never in the configuration's repr"
    config, _ = parse_args(["--enroll-token-file", str(token_file)])
    assert config.enrollment.token == "vpe_from-file"


async def test_plaintext_dev_warns_loudly(short_tmp: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        str(HOSTD),
        *("--listen", "127.0.0.1:0", "--libvirt-uri", "test:///default"),
        *("--state-dir", str(short_tmp / "state"), "--virt-type", "qemu"),
        "--insecure-plaintext-dev",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        match = await asyncio.wait_for(
            _line_matching(process.stderr, r"WARNING .*INSECURE.*PLAINTEXT"), TIMEOUT
        )
        assert "checks NO caller" in match.string
        match = await asyncio.wait_for(
            _line_matching(process.stderr, r"hostd listening on (\S+)"), TIMEOUT
        )
        async with grpc.aio.insecure_channel(match.group(1)) as channel:
            stub = pb_grpc.HostAgentServiceStub(channel)
            caps = await stub.GetHostCapabilities(pb.GetHostCapabilitiesRequest())
            assert caps.hypervisor_type == "qemu"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), TIMEOUT)
