"""The test hostd a module's controller tests share, over mutual TLS.

It runs in this process (tests.support.served) with an identity from the
rig's CA (controller_rig.RIG_PKI). Each test adds it to its controller anew,
and AddHost makes a new host id each time, so add_test_host picks that id
first: the hostd serves a pair issued for it (ServingCertificate.replace:
new handshakes get it, open connections keep theirs), and the controller's
AddHost, in this process, takes it as the new host's id (next_host_id). The
controller's first handshake with the host is then the mutual TLS one a
deployed controller makes with an enrolled host.
"""

from __future__ import annotations

import contextlib
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import virtplane_client as vp
from controller import host_service
from hostd.config import ChannelLimits
from tests.support.controller_rig import RIG_PKI, Rig
from tests.support.served import Served, serve
from tests.support.stack import Daemon, start_hostd
from virtplane_common.tls.names import Role


@contextlib.asynccontextmanager
async def shared_hostd(workdir: Path) -> AsyncIterator[Served]:
    """A hostd on libvirt's test driver, serving mutual TLS with the rig's CA."""
    async with serve(workdir / "hostd", ChannelLimits(), pki=RIG_PKI) as served:
        yield served


@contextlib.contextmanager
def next_host_id(host_id: str) -> Iterator[None]:
    """The next host AddHost makes in this process gets host_id (the ones
    after it, new uuids again)."""
    planned = [uuid.UUID(host_id)]

    def uuid4() -> uuid.UUID:
        return planned.pop() if planned else uuid.uuid4()

    assert vars(host_service).get("uuid") is uuid, "AddHost makes host ids with uuid.uuid4"
    setattr(host_service, "uuid", types.SimpleNamespace(uuid4=uuid4))  # noqa: B010
    try:
        yield
    finally:
        setattr(host_service, "uuid", uuid)  # noqa: B010


def present_as(hostd: Served, host_id: str) -> None:
    """hostd presents a certificate naming host_id to new connections."""
    assert hostd.hostd.identity is not None, "the shared hostd serves mutual TLS"
    hostd.hostd.identity.serving.replace(RIG_PKI.pair(Role.HOST, host_id))


async def add_test_host(
    rig: Rig, name: str, hostd: Served, *, request_id: str | None = None
) -> vp.Host:
    """Adds hostd to the rig's controller as the new host name (a first
    AddHost, not a repeat), over mutual TLS; request_id as hosts.add takes it."""
    host_id = str(uuid.uuid4())
    present_as(hostd, host_id)
    with next_host_id(host_id):
        added = await rig.client.hosts.add(name, hostd.address, request_id=request_id)
    assert added.id == host_id, f"AddHost of {name} answered host {added.id}, a repeat"
    return added


def start_test_hostd(
    workdir: Path,
    libvirt_uri: str = "test:///default",
    port: int | None = None,
    extra: tuple[str, ...] = (),
    *,
    host_id: str = "",
) -> Daemon:
    """A hostd process (tests.support.stack.start_hostd) serving mutual TLS
    as host_id (by default a new id: add it with add_daemon, or AddHost
    under next_host_id(daemon.host_id)), its identity from the rig's CA."""
    host_id = host_id or str(uuid.uuid4())
    return start_hostd(workdir, libvirt_uri, port, extra, pki=RIG_PKI, host_id=host_id)


async def add_daemon(client: vp.AsyncClient, name: str, daemon: Daemon) -> vp.Host:
    """Adds the hostd process daemon (start_test_hostd) to the in-process
    controller client speaks to, as host name under the daemon's host id."""
    with next_host_id(daemon.host_id):
        added = await client.hosts.add(name, daemon.address)
    assert added.id == daemon.host_id, f"AddHost of {name} answered host {added.id}, a repeat"
    return added
