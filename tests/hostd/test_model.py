"""hostd's domain types against the API's messages: enums that agree, and round trips."""

from __future__ import annotations

from typing import Any

import pytest
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import vm_pb2

from hostd import convert, model
from hostd.defaults import with_defaults
from tests.support.hostd_rig import vm_config
from virtplane_common.errors import InvalidArgument

PAIRS: list[tuple[type[model.ApiEnum], Any]] = [
    (model.Persistence, pb.VmConfig.Persistence),
    (model.ConsoleKind, pb.Console.Kind),
    (model.DiskFormat, vm_pb2.Disk.Format),
    (model.NicKind, vm_pb2.Nic.Kind),
    (model.VmState, pb.HostVm.State),
    (model.ExitReason, pb.HostVm.ExitReason),
    (model.MigrationDirection, pb.MigrationProgress.Direction),
    (model.MigrationPhase, pb.MigrationProgress.Phase),
]


@pytest.mark.parametrize(("ours", "api"), PAIRS, ids=lambda p: getattr(p, "__name__", ""))
def test_each_enum_is_the_apis(ours: type[model.ApiEnum], api: Any) -> None:
    assert {m.api_name: int(m) for m in ours} == dict(api.items())


def test_a_config_round_trips_byte_for_byte(boot_files: tuple[str, str]) -> None:
    config = vm_config(
        boot_files[0],
        initrd=boot_files[1],
        nics=(vm_pb2.Nic(kind=vm_pb2.Nic.KIND_NETWORK, network="default"),),
    )
    config.spec.disks.add(name="data", path=boot_files[1], read_only=True)
    config.spec.highly_available = True
    config.spec.custom_properties["b"] = "2"
    config.custom_properties["a"] = "1"
    config.guest_agent_version = "1.2"
    filled = convert.config_to_proto(with_defaults(convert.config_from_proto(config)))
    stored = filled.SerializeToString(deterministic=True)
    assert convert.config_to_bytes(convert.config_from_bytes(stored)) == stored


def test_an_enum_value_the_api_lacks_is_refused_naming_its_field(
    boot_files: tuple[str, str],
) -> None:
    config = vm_config(boot_files[0])
    config.persistence = 9  # type: ignore[assignment]
    with pytest.raises(InvalidArgument) as caught:
        convert.config_from_proto(config)
    assert str(caught.value) == (
        "config.persistence: unknown value 9; known: PERSISTENCE_TRANSIENT, PERSISTENCE_PERSISTENT"
    )
