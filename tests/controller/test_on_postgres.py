"""The controller as a real process, through its gRPC API, on PostgreSQL —
and on SQLite beside it, as the reference.

hostd runs on libvirt's test driver (test:///default), enrolled with the
controller as an operator enrolls one (mutual TLS between them); domains are
created and destroyed but nothing boots, so a started VM stops at POWERING_UP (no
guest agent ever reports). That is enough to exercise every table and the
revision counter through AddHost, CreateVm, ListVms, GetVm, StartVm, StopVm,
DeleteVm and WatchVms.
"""

from __future__ import annotations

# Raw stubs: this module checks WatchVms' messages, kinds and revisions as sent.
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from virtplane.v1 import host_pb2, vm_pb2
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from tests.support.controller_rig import error, spec
from tests.support.events import VmEvents
from tests.support.stack import Daemon, start_controller, start_host
from tests.support.waiting import until
from virtplane_client.credentials import open_channel

S = vm_pb2.Vm
K = vm_api.WatchVmsResponse
WAIT = 30.0  # only reached when something is broken


@contextlib.contextmanager
def enrolled(controller: Daemon) -> Iterator[Daemon]:
    """A hostd on the test driver, added to controller as host t1 and enrolled."""
    folder = Path(tempfile.mkdtemp(prefix="vp-"))  # short: socket paths must fit
    try:
        hostd = start_host(controller, folder, "t1", "test:///default")
        try:
            yield hostd
        finally:
            hostd.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def host_up(api: Api) -> host_pb2.Host:
    """Host t1 once the controller reaches it (after its enrollment)."""
    reply = await until(
        lambda: api.hosts.GetHost(host_api.GetHostRequest(host="t1")),
        lambda r: r.host.status.state == host_pb2.Host.STATE_UP,
        what="host t1 to be UP",
    )
    return reply.host


@pytest.fixture
def boot_files(tmp_path: Path) -> vm_pb2.BootSource:
    # The test driver boots nothing, but hostd checks that the files exist.
    (tmp_path / "vmlinuz").write_bytes(b"")
    (tmp_path / "initrd").write_bytes(b"")
    return vm_pb2.BootSource(
        kernel_path=str(tmp_path / "vmlinuz"), initrd_path=str(tmp_path / "initrd")
    )


class Api:
    """A gRPC client of one controller, with one WatchVms stream kept."""

    def __init__(self, daemon: Daemon) -> None:
        self.channel = open_channel(daemon.address, daemon.credentials(), ())
        self.vms = vm_grpc.VmServiceStub(self.channel)
        self.hosts = host_grpc.HostServiceStub(self.channel)
        self.watch = VmEvents.of_stub(self.vms, WAIT)

    @property
    def seen(self) -> list[vm_api.WatchVmsResponse]:
        return self.watch.events

    async def watched(
        self, check: Callable[[vm_api.WatchVmsResponse], bool]
    ) -> vm_api.WatchVmsResponse:
        """The first watch message that satisfies check."""
        return (await self.watch.first("a watch message", check))[1]

    async def close(self) -> None:
        await self.watch.close()
        await self.channel.close(None)


@pytest.fixture
def hostd(controller: tuple[Daemon, str]) -> Iterator[Daemon]:
    with enrolled(controller[0]) as daemon:
        yield daemon


@pytest.fixture
async def controller(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Daemon, str]]:
    daemon = start_controller(tmp_path, database_url, plaintext_hosts=False)
    yield daemon, database_url
    daemon.stop()


def _stored(url: str, sql: str) -> object:
    """One value read straight from the controller's database."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


async def _second_watcher_sees(daemon: Daemon, created: vm_pb2.Vm) -> None:
    """A second watcher gets the VM in its snapshot, at its revision."""
    snapshot = Api(daemon)
    try:
        done = await snapshot.watched(lambda m: m.kind == K.KIND_SNAPSHOT_COMPLETE)
        assert [(m.kind, m.vm.id, m.revision) for m in snapshot.seen] == [
            (K.KIND_SNAPSHOT, created.id, created.status.revision),
            (K.KIND_SNAPSHOT_COMPLETE, "", created.status.revision),
        ]
        assert done.revision == created.status.revision
    finally:
        await snapshot.close()


async def test_vm_lifecycle_through_the_api(
    controller: tuple[Daemon, str], hostd: Daemon, boot_files: vm_pb2.BootSource
) -> None:
    daemon, url = controller
    api = Api(daemon)
    try:
        host = await host_up(api)
        listed = (await api.hosts.ListHosts(host_api.ListHostsRequest())).hosts
        assert [h.name for h in listed] == ["t1"]

        # The watch began on an empty database: an empty snapshot.
        complete = await api.watched(lambda m: m.kind == K.KIND_SNAPSHOT_COMPLETE)
        assert complete.revision == 0

        created = (
            await api.vms.CreateVm(vm_api.CreateVmRequest(name="v1", spec=spec(boot_files)))
        ).vm
        assert created.status.state == S.STATE_DOWN
        assert [v.name for v in (await api.vms.ListVms(vm_api.ListVmsRequest())).vms] == ["v1"]
        by_name = (await api.vms.GetVm(vm_api.GetVmRequest(vm="v1"))).vm
        by_id = (await api.vms.GetVm(vm_api.GetVmRequest(vm=created.id))).vm
        assert by_name == by_id == created
        code, _ = await error(
            api.vms.CreateVm(vm_api.CreateVmRequest(name="v1", spec=spec(boot_files)))
        )
        assert code is grpc.StatusCode.ALREADY_EXISTS

        await _second_watcher_sees(daemon, created)

        started = (await api.vms.StartVm(vm_api.StartVmRequest(vm="v1"))).vm
        assert started.status.host_id == host.id
        running = await api.watched(
            lambda m: m.vm.id == created.id and m.vm.status.state == S.STATE_POWERING_UP
        )
        used = (await api.hosts.GetHost(host_api.GetHostRequest(host="t1"))).host
        assert used.status.memory_free_mib == used.status.memory_total_mib - 128

        stopped = (await api.vms.StopVm(vm_api.StopVmRequest(vm="v1"))).vm
        assert stopped.status.state == S.STATE_DOWN
        assert stopped.status.exit_reason == S.EXIT_REASON_USER_STOP

        await api.vms.DeleteVm(vm_api.DeleteVmRequest(vm="v1"))
        code, _ = await error(api.vms.GetVm(vm_api.GetVmRequest(vm="v1")))
        assert code is grpc.StatusCode.NOT_FOUND
        deleted = await api.watched(lambda m: m.kind == K.KIND_DELETED)
        assert deleted.vm.id == created.id
    finally:
        await api.close()

    changes = [m for m in api.seen if m.kind in (K.KIND_CHANGED, K.KIND_DELETED)]
    revisions = [m.revision for m in changes]
    assert revisions == sorted(set(revisions))  # strictly increasing
    assert running.revision in revisions
    # The revisions came from the database's counter, on this engine.
    assert _stored(url, "SELECT value FROM revision_counter") == revisions[-1]
    assert _stored(url, "SELECT count(*) FROM vms") == 0


async def _created_on(controller: Daemon, boot_files: vm_pb2.BootSource) -> vm_pb2.Vm:
    api = Api(controller)
    try:
        await host_up(api)
        request = vm_api.CreateVmRequest(name="kept", spec=spec(boot_files))
        return (await api.vms.CreateVm(request)).vm
    finally:
        await api.close()


async def _kept_on(controller: Daemon, before: vm_pb2.Vm) -> None:
    api = Api(controller)
    try:
        kept = (await api.vms.GetVm(vm_api.GetVmRequest(vm="kept"))).vm
        assert kept == before
        await host_up(api)
        started = (await api.vms.StartVm(vm_api.StartVmRequest(vm="kept"))).vm
        assert started.status.revision > before.status.revision
        await api.vms.StopVm(vm_api.StopVmRequest(vm="kept"))
    finally:
        await api.close()


async def test_a_restarted_controller_keeps_its_vms_and_counts_on(
    database_url: str, tmp_path: Path, boot_files: vm_pb2.BootSource
) -> None:
    first = start_controller(tmp_path, database_url, plaintext_hosts=False)
    with contextlib.ExitStack() as running:
        running.callback(first.stop)
        running.enter_context(enrolled(first))
        before = await _created_on(first, boot_files)
        first.stop()
        # The same state folder (its CA) and database: the host is trusted still.
        second = start_controller(tmp_path, database_url, plaintext_hosts=False)
        running.callback(second.stop)  # alembic upgrade head: nothing to do
        await _kept_on(second, before)
