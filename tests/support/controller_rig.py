"""The controller's test rig: an in-process controller on a fresh database of
each engine, with gRPC stubs on it, used with a real hostd process on
libvirt's test driver (test:///default: domains are made and destroyed,
nothing boots, so a started VM stays POWERING_UP), with raw gRPC stubs on it
(the controller's tests are about its API on the wire: exact messages, status
codes) and a virtplane_client on the same channel for waiting on a VM's state
(`rig.client.vms.wait_for(vm, state, timeout=WAIT)`); and the VM specs and
error checks its tests share.

The controller serves TLS with authentication on, as a deployed one does:
its CA and pair are made in a state folder of its database's own (a restart
on the same database finds them and the bootstrap admin's token again), and
the rig's channels trust that CA and send that token. That CA is the rig's
own (RIG_PKI, seeded into the state folder, which the controller then opens
as the CA it made before), so the test hostds it adds get their identities
from it: the controller speaks mutual TLS to them (tests.support.rig_hosts).
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import operation_service_pb2_grpc as op_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from controller.app import Controller
from controller.auth.principals import ADMIN_TOKEN_FILE
from controller.config import ControllerConfig
from tests.support.pki import TestPki
from tests.support.waiting import TIMEOUT
from virtplane_client.credentials import open_channel
from virtplane_common.tls.files import write_private, write_public

WAIT = TIMEOUT
"""How long a test waits for a VM's state, in seconds."""


@dataclass
class Rig:
    """A controller in this process, and stubs and a client on its gRPC port."""

    controller: Controller
    channel: grpc.aio.Channel
    vms: vm_grpc.VmServiceAsyncStub
    hosts: host_grpc.HostServiceAsyncStub
    ops: op_grpc.OperationServiceAsyncStub
    address: str
    client: vp.AsyncClient
    credentials: vp.Credentials
    """The controller's CA and the bootstrap admin's token."""

    def open_channel(self, options: Sequence[tuple[str, int]] = ()) -> grpc.aio.Channel:
        """A new channel to the controller, as the admin (the caller closes it)."""
        return open_channel(self.address, self.credentials, options)

    def environment(self) -> dict[str, str]:
        """The CLI's environment for this controller, as the admin."""
        return environment_of(self.controller)


_STATE_ROOT = Path(tempfile.mkdtemp(prefix="vp-ctl-state-"))
atexit.register(shutil.rmtree, _STATE_ROOT, ignore_errors=True)

RIG_PKI = TestPki(_STATE_ROOT / "rig-pki", "virtplane rig CA")
"""The CA of every rig's controller (config seeds it into the state folder)
and of the test hostds added to one."""


def seed_ca(state_dir: Path) -> None:
    """Gives state_dir the rig's CA unless it holds a CA already: the
    controller opens it as the one it made before."""
    folder = state_dir / "pki"
    if (folder / "ca.pem").exists():
        return
    write_private(folder / "ca.key", RIG_PKI.ca.key_pem)
    write_public(folder / "ca.pem", RIG_PKI.ca.cert_pem)


def state_dir_of(database_url: str) -> Path:
    """The state folder of the rig's controllers on database_url."""
    return _STATE_ROOT / hashlib.sha256(database_url.encode()).hexdigest()[:16]


def config(database_url: str, **overrides: object) -> ControllerConfig:
    """The rig's controller on database_url: TLS everywhere, the rig's CA in
    its state folder unless it brings its own (ca_cert, ca_key); overrides:
    other ControllerConfig fields."""
    settings: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "host_retry_seconds": 0.1,
        "state_dir": state_dir_of(database_url),
        **overrides,
    }
    if settings.get("ca_cert") is None and settings.get("ca_key") is None:  # not the operator's
        seed_ca(Path(str(settings["state_dir"])))
    return ControllerConfig(database_url=database_url, **settings)  # type: ignore[arg-type]


def credentials_of(ctl: Controller) -> vp.Credentials:
    """What a client of ctl needs: its CA and the admin's token; plaintext
    for an insecure development controller."""
    if ctl.tls is None:
        return vp.INSECURE_DEVELOPMENT
    token = (ctl.config.state_dir / ADMIN_TOKEN_FILE).read_text().strip()
    return vp.Credentials(ca=ctl.tls.ca.cert_pem, token=token)


def admin_channel(ctl: Controller, options: Sequence[tuple[str, int]] = ()) -> grpc.aio.Channel:
    """A new channel to ctl's --listen port, as the bootstrap admin."""
    return open_channel(f"127.0.0.1:{ctl.port}", credentials_of(ctl), options)


def environment_of(ctl: Controller) -> dict[str, str]:
    """The CLI's environment for ctl (its --listen port), as the admin."""
    address = f"127.0.0.1:{ctl.port}"
    if ctl.tls is None:
        return {"VIRTPLANE_ADDRESS": address, "VIRTPLANE_INSECURE_DEV": "1"}
    ca = ctl.config.state_dir / "cli-ca.pem"
    ca.write_bytes(ctl.tls.ca.cert_pem)
    token = str(credentials_of(ctl).token)
    return {"VIRTPLANE_ADDRESS": address, "VIRTPLANE_CA": str(ca), "VIRTPLANE_TOKEN": token}


async def open_rig(cfg: ControllerConfig) -> Rig:
    ctl = Controller(cfg)
    await ctl.start()
    address = f"127.0.0.1:{ctl.port}"
    credentials = credentials_of(ctl)
    channel = open_channel(address, credentials, ())
    return Rig(
        ctl,
        channel,
        vm_grpc.VmServiceStub(channel),
        host_grpc.HostServiceStub(channel),
        op_grpc.OperationServiceStub(channel),
        address,
        vp.AsyncClient(channel=channel),  # closed with the channel
        credentials,
    )


async def close_rig(rig: Rig) -> None:
    await rig.channel.close(None)
    await rig.controller.stop(grace=0)


def spec(boot: vm_pb2.BootSource, memory_mib: int = 128) -> vm_pb2.VmSpec:
    return vm_pb2.VmSpec(
        vcpus=1,
        memory_mib=memory_mib,
        boot=boot,
        nics=[vm_pb2.Nic(name="nic0", kind=vm_pb2.Nic.KIND_USER)],
    )


def boot_source(tmp_path: Path) -> vm_pb2.BootSource:
    # The test driver boots nothing, but hostd checks that the files exist.
    (tmp_path / "vmlinuz").write_bytes(b"")
    return vm_pb2.BootSource(kernel_path=str(tmp_path / "vmlinuz"))


async def error(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of the error that call ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""
