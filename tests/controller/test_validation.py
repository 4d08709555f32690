from __future__ import annotations

import pytest
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as api

from controller.validation import check_address, check_create
from db.enums import NicKind
from virtplane_common.errors import InvalidArgument
from virtplane_common.properties import NONE_ALLOWED


def _request(**spec: object) -> api.CreateVmRequest:
    base: dict[str, object] = {
        "vcpus": 1,
        "memory_mib": 256,
        "boot": vm_pb2.BootSource(kernel_path="/boot/vmlinux"),
    }
    base.update(spec)
    return api.CreateVmRequest(name="vm1", spec=vm_pb2.VmSpec(**base))  # type: ignore[arg-type]


def test_a_complete_request_is_accepted() -> None:
    req = _request(nics=[vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER)])
    spec = check_create(req, NONE_ALLOWED)
    assert (spec.name, spec.vcpus, spec.memory_mib, spec.kernel_path) == (
        "vm1",
        1,
        256,
        "/boot/vmlinux",
    )
    assert spec.nics[0].name == "nic0" and spec.nics[0].kind is NicKind.USER


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (api.CreateVmRequest(spec=vm_pb2.VmSpec()), "name"),
        (api.CreateVmRequest(name="bad name!"), "name"),
        (api.CreateVmRequest(name="vm1"), "spec"),
        (_request(memory_mib=0), "spec.memory_mib"),
        (_request(memory_mib=8), "spec.memory_mib"),
        (_request(vcpus=0), "spec.vcpus"),
        (_request(boot=vm_pb2.BootSource()), "spec.boot.kernel_path"),
        (_request(boot=vm_pb2.BootSource(kernel_path="rel/k")), "spec.boot.kernel_path"),
        (_request(nics=[vm_pb2.Nic()]), "spec.nics[0].kind"),
        (_request(nics=[vm_pb2.Nic(kind=vm_pb2.Nic.KIND_NETWORK)]), "spec.nics[0].network"),
        (
            _request(nics=[vm_pb2.Nic(kind=vm_pb2.Nic.KIND_USER, mac_address="xx")]),
            "spec.nics[0].mac_address",
        ),
        (_request(disks=[vm_pb2.Disk(name="d", path="rel.img")]), "spec.disks[0].path"),
        (
            _request(disks=[vm_pb2.Disk(name=f"d{i}", path=f"/i/{i}.img") for i in range(17)]),
            "spec.disks",
        ),
    ],
)
def test_each_bad_field_is_named(request_: api.CreateVmRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_create(request_, NONE_ALLOWED)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


@pytest.mark.parametrize("address", ["", "host", "host:", ":70", "h:0", "h:99999"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(InvalidArgument):
        check_address("address", address)
