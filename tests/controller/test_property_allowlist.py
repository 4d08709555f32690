"""The controller's custom property allowlist (--vm-property KEY=REGEX, oVirt's
UserDefinedVMProperties): CreateVm and UpdateVm refuse a key it does not
list and a value not fully matching its pattern, on the wire; and the rule
itself (virtplane_common.properties), which hostd shares."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from controller.app import Controller
from controller.config import ControllerConfig
from controller.main import parse
from tests.support.controller_rig import Rig, close_rig, config, error, open_rig, spec
from virtplane_common.errors import InvalidArgument
from virtplane_common.properties import (
    NONE_ALLOWED,
    AllowedProperties,
    BadPropertyRule,
    check_properties,
)

ALLOWED = {"tier": "gold|silver", "team": "[a-z]{2,8}"}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_ALLOWED = "is not an allowed property (allowed: team, tier)"
NOT_MATCHING = "does not match the pattern allowed for it: gold|silver"


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:
    opened = await open_rig(config(database_url, vm_properties=ALLOWED))
    yield opened
    await close_rig(opened)


def _spec(boot: vm_pb2.BootSource, **properties: str) -> vm_pb2.VmSpec:
    made = spec(boot)
    made.custom_properties.update(properties)
    return made


def _update(vm: str, path: str, **properties: str) -> vm_api.UpdateVmRequest:
    values = vm_pb2.Vm(spec=vm_pb2.VmSpec(custom_properties=properties))
    return vm_api.UpdateVmRequest(vm=vm, vm_update=values, update_mask=FieldMask(paths=[path]))


async def test_create_refuses_a_key_not_allowed(rig: Rig, boot: vm_pb2.BootSource) -> None:
    bad = _spec(boot, tier="gold", owner="someone")
    assert await error(rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=bad))) == (
        INVALID,
        f"spec.custom_properties[owner]: {NOT_ALLOWED}",
    )
    assert (await rig.vms.ListVms(vm_api.ListVmsRequest())).vms == []


async def test_create_refuses_a_value_not_matching(rig: Rig, boot: vm_pb2.BootSource) -> None:
    for value in ("bronze", "gold ", "Gold", "goldsilver", ""):
        bad = _spec(boot, tier=value)
        assert await error(rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=bad))) == (
            INVALID,
            f"spec.custom_properties[tier]: {NOT_MATCHING}",
        ), value


async def test_allowed_properties_are_kept(rig: Rig, boot: vm_pb2.BootSource) -> None:
    good = _spec(boot, tier="silver", team="infra")
    vm = (await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=good))).vm
    assert dict(vm.spec.custom_properties) == {"tier": "silver", "team": "infra"}
    vm = (await rig.vms.UpdateVm(_update("a", "spec.custom_properties", tier="gold"))).vm
    assert dict(vm.spec.custom_properties) == {"tier": "gold"}


@pytest.mark.parametrize("path", ["spec.custom_properties", "spec"])
async def test_update_refuses_what_create_refuses(
    rig: Rig, boot: vm_pb2.BootSource, path: str
) -> None:
    await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=_spec(boot, tier="gold")))
    field = "vm_update.spec.custom_properties"
    assert await error(rig.vms.UpdateVm(_update("a", path, owner="x"))) == (
        INVALID,
        f"{field}[owner]: {NOT_ALLOWED}",
    )
    assert await error(rig.vms.UpdateVm(_update("a", path, tier="platinum"))) == (
        INVALID,
        f"{field}[tier]: {NOT_MATCHING}",
    )
    vm = (await rig.vms.GetVm(vm_api.GetVmRequest(vm="a"))).vm
    assert dict(vm.spec.custom_properties) == {"tier": "gold"} and vm.spec_version == 1


async def test_by_default_no_property_is_allowed(
    database_url: str, boot: vm_pb2.BootSource
) -> None:
    rig = await open_rig(config(database_url))
    try:
        bad = _spec(boot, tier="gold")
        assert await error(rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=bad))) == (
            INVALID,
            "spec.custom_properties[tier]: is not an allowed property (allowed: none)",
        )
        await rig.vms.CreateVm(vm_api.CreateVmRequest(name="a", spec=spec(boot)))
    finally:
        await close_rig(rig)


def test_the_vm_property_flag() -> None:
    assert parse([])[0].vm_properties == {}
    configured, _ = parse(["--vm-property", "tier=gold|silver", "--vm-property", "k=a=b"])
    assert configured.vm_properties == {"tier": "gold|silver", "k": "a=b"}
    with pytest.raises(SystemExit) as exited:
        parse(["--vm-property", "tier=(gold"])
    assert exited.value.code == 2


def test_a_bad_pattern_is_a_startup_error() -> None:
    with pytest.raises(BadPropertyRule, match=r"custom property tier: the pattern '\[gold'"):
        Controller(ControllerConfig(vm_properties={"tier": "[gold"}))


# -- the rule, shared with hostd


def test_the_rule_checks_format_then_allowlist() -> None:
    allowed = AllowedProperties.compile(ALLOWED)
    check_properties("f", {"tier": "gold", "team": "ab"}, allowed)
    check_properties("f", {}, NONE_ALLOWED)
    with pytest.raises(InvalidArgument) as caught:
        check_properties("f", {"1tier": "gold"}, allowed)
    assert str(caught.value) == (
        "f: keys must be 1-64 letters, digits or '_', starting with a letter (got '1tier')"
    )
    with pytest.raises(InvalidArgument) as caught:
        check_properties("f", {"tier": "gold\n"}, allowed)
    assert str(caught.value) == "f[tier]: must be at most 4096 printable characters"
    with pytest.raises(InvalidArgument) as caught:
        check_properties("f", {"team": "secret-value-1"}, allowed)
    assert "secret-value-1" not in str(caught.value), "a value is never repeated"


@pytest.mark.parametrize("rules", [{"a-b": "x"}, {"": "x"}, {"tier": "(unclosed"}, {"tier": "*"}])
def test_bad_rules_do_not_compile(rules: dict[str, str]) -> None:
    with pytest.raises(BadPropertyRule):
        AllowedProperties.compile(rules)
