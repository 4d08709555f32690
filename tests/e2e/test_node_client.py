"""A Node client (@grpc/grpc-js, the protos loaded at run time, no generated
code) runs a real VM on the stack: over TLS trusting the controller's CA,
with the admin's token as `authorization: Bearer` metadata, it creates a VM,
starts it, waits on WatchVms until it is UP, stops it and deletes it."""

from __future__ import annotations

import os

import pytest

from tests.support.guests import WAIT, Api
from tests.support.node_client import controller_environment, node, run_node
from tests.support.real import GuestImage, skip_or_fail
from tests.support.stack import Stack

__all__ = ["node"]  # the fixture
pytestmark = pytest.mark.guest


async def test_a_node_client_runs_a_vm(
    stack: Stack, api: Api, guest_image: GuestImage, node: str
) -> None:
    env = controller_environment(stack.controller)
    if "VIRTPLANE_CA" not in env or "VIRTPLANE_TOKEN" not in env:
        skip_or_fail("the stack's controller serves no TLS: the Node client needs its CA")
    name = f"node-{os.getpid()}"  # domains are named after VMs; other runs share libvirtd
    args = [
        "run",
        "--name", name,
        "--kernel", guest_image.kernel,
        "--initrd", guest_image.initrd,
        "--cmdline", guest_image.cmdline,
        "--timeout", str(WAIT),
    ]  # fmt: skip
    ran = await run_node(node, args, env, within=WAIT + 60)
    assert ran.returncode == 0, ran

    created = ran.step("created")
    assert (created["name"], created["state"]) == (name, "STATE_DOWN")
    started = ran.step("started")
    assert started["id"] == created["id"] and started["operation"]
    assert started["host_id"] == api.host_id
    seen = [line["state"] for line in ran.lines if line["step"] == "watch"]
    assert seen[-1] == "STATE_UP" and "STATE_DOWN" not in seen
    assert ran.step("up")["host_id"] == api.host_id
    assert ran.step("stopped")["id"] == created["id"]
    assert ran.steps[-1] == "deleted"

    # The VM is gone from the controller, as the client left it.
    assert name not in [vm.name for vm in await api.client.vms.list()]
