"""A Node client (@grpc/grpc-js, the protos loaded at run time) against the
controller serving TLS with authentication on: with the CA file and a
token in `authorization: Bearer` metadata it is served as its role allows;
without a token it is UNAUTHENTICATED; it does not trust a controller whose
certificate another CA signed."""

from __future__ import annotations

from pathlib import Path

import pytest
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from tests.support.auth_rig import AuthRig, auth
from tests.support.controller_rig import boot_source, spec
from tests.support.node_client import environment, node, run_node
from tests.support.pki import TestPki

__all__ = ["auth", "node"]  # the fixtures


def _ca_file(rig: AuthRig, folder: Path) -> Path:
    path = folder / "ca.pem"
    path.write_bytes(rig.pki.ca_pem)
    return path


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: what is under test here is the client, not the engine."""
    return f"sqlite:///{tmp_path / 'virtplane.db'}"


async def test_a_viewer_lists_vms(auth: AuthRig, node: str, tmp_path: Path) -> None:
    admin = vm_grpc.VmServiceStub(auth.channel(auth.admin_token))
    await admin.CreateVm(vm_api.CreateVmRequest(name="web", spec=spec(boot_source(tmp_path))))
    token = await auth.token_of("node-viewer", "viewer")
    ran = await run_node(node, ["list"], environment(auth.tls, _ca_file(auth, tmp_path), token))
    assert ran.returncode == 0, ran
    listed = ran.step("listed")
    assert listed["count"] == 1
    assert [(vm["name"], vm["state"]) for vm in listed["vms"]] == [("web", "STATE_DOWN")]


async def test_without_a_token_it_is_unauthenticated(
    auth: AuthRig, node: str, tmp_path: Path
) -> None:
    ran = await run_node(node, ["list"], environment(auth.tls, _ca_file(auth, tmp_path), None))
    assert ran.error["step"] == "ListVms"
    assert ran.error["error"] == "UNAUTHENTICATED", ran


async def test_a_controller_signed_by_another_ca_is_not_trusted(
    auth: AuthRig, node: str, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(TestPki(tmp_path / "other", "another CA").ca_pem)
    ran = await run_node(node, ["list"], environment(auth.tls, other, auth.admin_token))
    assert (ran.error["step"], ran.error["error"]) == ("ListVms", "UNAVAILABLE"), ran


async def test_a_viewer_may_not_create_a_vm(auth: AuthRig, node: str, tmp_path: Path) -> None:
    token = await auth.token_of("node-viewer", "viewer")
    kernel = boot_source(tmp_path).kernel_path
    args = ["create", "--name", "refused", "--kernel", kernel]
    ran = await run_node(node, args, environment(auth.tls, _ca_file(auth, tmp_path), token))
    assert (ran.error["step"], ran.error["error"]) == ("CreateVm", "PERMISSION_DENIED"), ran
    assert "'vm.change'" in ran.error["details"] and "node-viewer" in ran.error["details"]
    assert token not in ran.error["details"]


async def test_an_operator_creates_a_vm(auth: AuthRig, node: str, tmp_path: Path) -> None:
    token = await auth.token_of("node-operator", "operator")
    kernel = boot_source(tmp_path).kernel_path
    args = ["create", "--name", "from-node", "--kernel", kernel, "--memory-mib", "192"]
    ran = await run_node(node, args, environment(auth.tls, _ca_file(auth, tmp_path), token))
    assert ran.returncode == 0, ran
    created = ran.step("created")
    admin = vm_grpc.VmServiceStub(auth.channel(auth.admin_token))
    vm = (await admin.GetVm(vm_api.GetVmRequest(vm=created["id"]))).vm
    assert (vm.name, vm.spec.memory_mib, vm.spec.boot.kernel_path) == ("from-node", 192, kernel)
