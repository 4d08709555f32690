"""The CLI's rendering of a VM."""

from __future__ import annotations

from virtplane.v1 import vm_pb2

from virtplane_client import Vm, convert
from virtplane_client.cli import format as fmt


def _vm(host_id: str) -> Vm:
    return convert.vm(
        vm_pb2.Vm(
            id="v1",
            name="web",
            spec=vm_pb2.VmSpec(vcpus=1, memory_mib=128),
            status=vm_pb2.VmStatus(state=vm_pb2.Vm.STATE_UP, host_id=host_id),
        )
    )


def test_the_host_is_shown_by_name() -> None:
    text = fmt.vm_detail(_vm("h-1"), {"h-1": "rack1-node3"})
    assert "host:    rack1-node3" in text.splitlines()


def test_an_unknown_host_is_shown_by_id_and_no_host_as_a_dash() -> None:
    assert "host:    h-9" in fmt.vm_detail(_vm("h-9"), {}).splitlines()
    assert "host:    -" in fmt.vm_detail(_vm("")).splitlines()
