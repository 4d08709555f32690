"""Inputs that once reached INTERNAL or stored a VM no host would start, through
the controller's gRPC API on each database engine: each gets INVALID_ARGUMENT
naming its field, or ALREADY_EXISTS naming the other object."""

from __future__ import annotations

# Raw stubs: this module checks status codes and details as sent.
import asyncio
import base64
from pathlib import Path

import grpc
import pytest
from sqlalchemy.orm import Session
from virtplane.v1 import host_agent_service_pb2 as agent_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from controller import convert
from db import repositories as repo
from hostd import convert as hostd_convert
from hostd.validation import Admission, validate_config
from tests.support.controller_rig import Rig, error, spec
from virtplane_common.limits import AGENT_VERSION_COLUMN
from virtplane_common.validation import clean_agent_version

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CONCURRENT = 8
UNREACHABLE = "127.0.0.1:43999"  # in this module's range; nothing listens there


def _create(name: str, body: vm_pb2.VmSpec) -> vm_api.CreateVmRequest:
    return vm_api.CreateVmRequest(name=name, spec=body)


def _bad_specs(boot: vm_pb2.BootSource) -> dict[str, tuple[vm_pb2.VmSpec, str]]:
    def with_boot(**fields: str) -> vm_pb2.VmSpec:
        body = spec(boot)
        for key, value in fields.items():
            setattr(body.boot, key, value)
        return body

    def with_nics(*nics: vm_pb2.Nic) -> vm_pb2.VmSpec:
        body = spec(boot)
        del body.nics[:]
        body.nics.extend(nics)
        return body

    user, network = vm_pb2.Nic.KIND_USER, vm_pb2.Nic.KIND_NETWORK
    mac = "52:54:00:12:34:56"
    return {
        "NUL in the kernel path": (with_boot(kernel_path="/boot/vm\x00linux"), "kernel_path"),
        "NUL in the initrd path": (with_boot(initrd_path="/boot/initrd\x00"), "initrd_path"),
        "NUL in the cmdline": (with_boot(cmdline="quiet\x00"), "spec.boot.cmdline"),
        "newline in the cmdline": (with_boot(cmdline="quiet\n"), "spec.boot.cmdline"),
        "two NICs of one MAC": (
            with_nics(
                vm_pb2.Nic(name="a", kind=user, mac_address=mac),
                vm_pb2.Nic(name="b", kind=user, mac_address=mac.upper()),
            ),
            "spec.nics[1].mac_address",
        ),
        "a MAC with a trailing newline": (
            with_nics(vm_pb2.Nic(kind=user, mac_address=mac + "\n")),
            "spec.nics[0].mac_address",
        ),
        "a network name longer than its column": (
            with_nics(vm_pb2.Nic(kind=network, network="n" * 300)),
            "spec.nics[0].network",
        ),
        "a network name with a newline": (
            with_nics(vm_pb2.Nic(kind=network, network="default\n")),
            "spec.nics[0].network",
        ),
        "NUL in a NIC name": (with_nics(vm_pb2.Nic(kind=user, name="n\x00")), "spec.nics[0].name"),
        "NUL in a disk path": (
            _with_disk(spec(boot), vm_pb2.Disk(name="d", path="/i/d\x00.img")),
            "spec.disks[0].path",
        ),
        "NUL in the pinned host": (_pinned(spec(boot), "h\x00"), "spec.pinned_host"),
    }


def _with_disk(body: vm_pb2.VmSpec, disk: vm_pb2.Disk) -> vm_pb2.VmSpec:
    body.disks.append(disk)
    return body


def _pinned(body: vm_pb2.VmSpec, host: str) -> vm_pb2.VmSpec:
    body.pinned_host = host
    return body


BAD_SPEC_CASES = sorted(_bad_specs(vm_pb2.BootSource(kernel_path="/k")))


@pytest.mark.parametrize("case", BAD_SPEC_CASES)
async def test_a_bad_spec_names_its_field(rig: Rig, boot: vm_pb2.BootSource, case: str) -> None:
    body, field = _bad_specs(boot)[case]
    code, details = await error(rig.vms.CreateVm(_create("web", body)))
    assert (code, field in details) == (INVALID, True), details
    assert (await rig.vms.ListVms(vm_api.ListVmsRequest())).vms == []


@pytest.mark.parametrize("name", ["web\n", "web\x00", "w" * 300, "wéb"])
async def test_a_bad_vm_name_is_refused(rig: Rig, boot: vm_pb2.BootSource, name: str) -> None:
    code, details = await error(rig.vms.CreateVm(_create(name, spec(boot))))
    assert (code, details.startswith("name: ")) == (INVALID, True), details


@pytest.mark.parametrize(
    ("name", "address", "field"),
    [
        ("h\x00", UNREACHABLE, "name"),
        ("h1\n", UNREACHABLE, "name"),
        ("h1", "h\x00:7070", "address"),
        ("h1", UNREACHABLE + "\n", "address"),
        ("h1", "a" * 300 + ":7070", "address"),
    ],
)
async def test_a_bad_host_is_refused(rig: Rig, name: str, address: str, field: str) -> None:
    request = host_api.AddHostRequest(name=name, address=address)
    code, details = await error(rig.hosts.AddHost(request))
    assert (code, details.startswith(f"{field}: ")) == (INVALID, True), details


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


@pytest.mark.parametrize(
    "token",
    [
        _token(b"[" * 5000 + b"]" * 5000),  # RecursionError in json
        _token(b'{"after": ' + b"[" * 3000 + b"]" * 3000 + b', "filters": {}}'),
        _token(b'{"after": "a\\u0000", "filters": {}}'),
        _token(b'{"after": 7, "filters": {}}'),
        _token(b"[]"),
        _token(b"\xff\xfe"),
        "not base64 at all!",
        "\u00e9\u00e9",
        "A" * 100_000,
    ],
)
async def test_a_malformed_page_token_is_refused(rig: Rig, token: str) -> None:
    code, details = await error(rig.vms.ListVms(vm_api.ListVmsRequest(page_token=token)))
    assert (code, details.startswith("page_token: ")) == (INVALID, True), details


async def test_list_filters_with_nul_are_refused(rig: Rig) -> None:
    for request, field in [
        (vm_api.ListVmsRequest(host="h\x00"), "host"),
        (vm_api.ListVmsRequest(name_contains="w\x00"), "name_contains"),
    ]:
        code, details = await error(rig.vms.ListVms(request))
        assert (code, details.startswith(f"{field}: ")) == (INVALID, True), details


async def _outcomes(calls: list[object]) -> tuple[int, list[tuple[grpc.StatusCode, str]]]:
    results = await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[call-overload]
    failures = []
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            failures.append((result.code(), result.details() or ""))
        elif isinstance(result, BaseException):
            raise result
    return len(results) - len(failures), failures


async def test_concurrent_creates_of_one_vm_name(rig: Rig, boot: vm_pb2.BootSource) -> None:
    calls: list[object] = [rig.vms.CreateVm(_create("web", spec(boot))) for _ in range(CONCURRENT)]
    created, failures = await _outcomes(calls)
    assert created == 1
    for code, details in failures:
        assert (code, details) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "a VM named 'web' exists already",
        )
    assert len((await rig.vms.ListVms(vm_api.ListVmsRequest())).vms) == 1


async def test_concurrent_creates_of_one_mac(rig: Rig, boot: vm_pb2.BootSource) -> None:
    mac = "52:54:00:12:34:56"

    def body() -> vm_pb2.VmSpec:
        one = spec(boot)
        one.nics[0].mac_address = mac
        return one

    calls: list[object] = [rig.vms.CreateVm(_create(f"web{i}", body())) for i in range(CONCURRENT)]
    created, failures = await _outcomes(calls)
    assert created == 1
    for code, details in failures:
        assert code == grpc.StatusCode.ALREADY_EXISTS, details
        assert details.startswith(f"spec.nics[0]: MAC address {mac} is in use by VM 'web")


async def test_concurrent_adds_of_one_host_name(rig: Rig) -> None:
    calls: list[object] = [
        rig.hosts.AddHost(host_api.AddHostRequest(name="h1", address=UNREACHABLE))
        for _ in range(CONCURRENT)
    ]
    added, failures = await _outcomes(calls)
    assert added == 1
    for code, details in failures:
        assert (code, details) == (
            grpc.StatusCode.ALREADY_EXISTS,
            "a host named 'h1' exists already",
        )


# The worst agent versions a VM's row may hold: the longest the guest can
# make hostd keep (every character printable but unusual), and a raw one an
# older controller may have stored before the one rule.
STORED_AGENT_VERSIONS = [
    clean_agent_version("\U0001f600\u00e9\u4e2d" * 200 + "\n"),
    "1.0\n\x1b[31m\x7f",
]


@pytest.mark.parametrize("stored", STORED_AGENT_VERSIONS)
async def test_a_stored_agent_version_never_fails_a_start(
    rig: Rig, boot: vm_pb2.BootSource, tmp_path: Path, stored: str
) -> None:
    """What the controller sends hostd for a VM whose row carries the agent
    version passes hostd's checks."""
    created = (await rig.vms.CreateVm(_create("web", spec(boot)))).vm

    def store(session: Session) -> agent_pb2.VmConfig:
        vm = repo.find_vm(session, created.id)
        assert vm is not None
        vm.guest_agent_version = stored[:AGENT_VERSION_COLUMN]
        session.flush()
        return convert.vm_config(vm)

    sent = await rig.controller.db.run(store)
    config = hostd_convert.config_from_proto(sent)
    validate_config(config, Admission((tmp_path,)))
    assert config.guest_agent_version == clean_agent_version(stored)
