"""`virtplane affinity …` against a controller (each engine)."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api

from tests.support.controller_rig import Rig, spec
from virtplane_client.cli.main import parser, run_command


async def _cli(rig: Rig, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with mock.patch.dict(os.environ, rig.environment()):
        await run_command(parser().parse_args(["--controller", rig.address, *argv]))
    return capsys.readouterr().out


async def test_groups_are_created_listed_and_deleted(
    rig: Rig, boot: vm_pb2.BootSource, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = []
    for name in ("web1", "web2"):
        created = await rig.vms.CreateVm(vm_api.CreateVmRequest(name=name, spec=spec(boot)))
        ids.append(created.vm.id)
    out = await _cli(
        rig, capsys, "affinity", "create", "web", "negative", "--enforcing", "--vm", "web1",
        "--vm", "web2",
    )  # fmt: skip
    assert out.split()[:3] == ["web", "apart", "enforcing"]
    assert set(out.split(None, 3)[3].strip().split(", ")) == set(ids)
    out = await _cli(rig, capsys, "affinity", "list")
    assert out.startswith("web ")
    assert await _cli(rig, capsys, "affinity", "delete", "web") == "web: deleted\n"
    assert await _cli(rig, capsys, "affinity", "list") == "no affinity groups\n"
