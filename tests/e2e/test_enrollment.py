"""Enrollment, host identity and revocation with real daemons: a controller
process serving TLS with authentication on, hostd processes on libvirt's test
driver enrolling with AddHost's one-time tokens and serving mutual TLS. No
guest is involved (tests.support.enrolled).

A token works once; a wrong, reused or expired one is refused with the
controller's one message; a restarted host keeps its identity; a host
enrolled already is refused under another name, and cannot pose as another
host at its address; a removed host is revoked everywhere; a host's
certificate is renewed while it runs, without dropping it or any stream.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from virtplane.v1 import enrollment_service_pb2 as enroll_api
from virtplane.v1 import enrollment_service_pb2_grpc as enroll_grpc
from virtplane.v1 import host_agent_service_pb2 as agent_api
from virtplane.v1 import host_agent_service_pb2_grpc as agent_grpc
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

import virtplane_client as vp
from controller.enrollment.errors import TOKEN_REFUSED
from controller.pki.ca import CLOCK_SKEW
from hostd.identity import tls_files
from tests.support.connect import hostd_channel
from tests.support.enrolled import (
    TEST_URI,
    certificate,
    controller_serial,
    enroll_once,
    host_cert_lifetime,
    host_state,
    named_host,
    renewed_while,
    revoked_serials,
    served_serial,
    state_dir,
)
from tests.support.events import VmEvents
from tests.support.stack import (
    Daemon,
    controller_pki,
    free_port,
    start_controller,
    start_host,
    start_hostd,
)
from tests.support.waiting import until
from virtplane_common.tls.credentials import channel_credentials
from virtplane_common.tls.files import KeyPair, write_private
from virtplane_common.tls.keys import load_key, signing_request

H = vp.HostState
UP_WITHIN = 30.0
RENEWAL_LIFETIME = 40  # seconds: renewed at 2/3 of it
RENEWED_WITHIN = 60.0


class Hosts:
    """The hostds a test starts (each in a workdir of its own), stopped after it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.daemons: list[Daemon] = []

    def workdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def enrolled(self, controller: Daemon, name: str) -> Daemon:
        """A hostd added as host name and enrolled with AddHost's token."""
        daemon = start_host(controller, self.workdir(name), name, TEST_URI)
        self.daemons.append(daemon)
        return daemon

    def restarted(self, hostd: Daemon) -> Daemon:
        """hostd started again on its state folder and port, with no token."""
        port = int(hostd.address.rpartition(":")[2])
        workdir = hostd.log_path.parent
        daemon = start_hostd(workdir, TEST_URI, port, pki=hostd.pki, host_id=hostd.host_id)
        self.daemons.append(daemon)
        return daemon

    def enrolling(self, controller: Daemon, name: str, port: int, token: str) -> Daemon:
        """A hostd on port enrolling with token as host_id (added already)."""
        workdir = self.workdir(name)
        token_file = workdir / f"{name}.token"
        write_private(token_file, token.encode())
        enroll = (
            "--controller", controller.address,
            "--controller-ca", str(controller.ca_file),
            "--enroll-token-file", str(token_file),
        )  # fmt: skip
        pki = controller_pki(controller, workdir / "pki")
        host_id = named_id(controller, name)
        daemon = start_hostd(workdir, TEST_URI, port, enroll, pki=pki, host_id=host_id)
        self.daemons.append(daemon)
        return daemon

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


def named_id(controller: Daemon, name: str) -> str:
    with vp.Client(controller.address, credentials=controller.credentials()) as client:
        return client.hosts.get(name).id


@pytest.fixture
def root() -> Iterator[Path]:
    """The test's folder: short paths (hostd's unix sockets live in its state folder)."""
    path = Path(tempfile.mkdtemp(prefix="vp-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def controller(root: Path) -> Iterator[Daemon]:
    workdir = root / "controller"
    workdir.mkdir()
    daemon = start_controller(workdir, plaintext_hosts=False)
    yield daemon
    daemon.stop()


@pytest.fixture
async def client(controller: Daemon) -> AsyncIterator[vp.AsyncClient]:
    async with controller.client() as client:
        yield client


@pytest.fixture
def hosts(root: Path) -> Iterator[Hosts]:
    hosts = Hosts(root)
    yield hosts
    hosts.stop()


async def up(client: vp.AsyncClient, name: str) -> None:
    await until(
        lambda: host_state(client, name),
        lambda state: state == H.UP,
        what=f"host {name} UP",
        within=UP_WITHIN,
        every=0.1,
    )


def assert_refused(refusal_output: str, returncode: int, code: str, message: str) -> None:
    assert returncode == 1, refusal_output
    assert code in refusal_output, refusal_output
    assert message in refusal_output, refusal_output


async def test_a_token_enrolls_once_and_a_wrong_one_never(
    controller: Daemon, client: vp.AsyncClient, hosts: Hosts, root: Path
) -> None:
    h1 = await asyncio.to_thread(hosts.enrolled, controller, "h1")
    await up(client, "h1")
    key = tls_files(state_dir(h1)).key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert named_host(h1) == h1.host_id

    used = (h1.log_path.parent / "h1.token").read_text().strip()
    other = root / "other" / "hostd"
    again = await asyncio.to_thread(enroll_once, controller, other, used)
    assert_refused(again.output, again.returncode, "UNAUTHENTICATED", TOKEN_REFUSED)
    assert not tls_files(other).cert.exists()

    wrong = "vpe_" + secrets.token_urlsafe(32)
    refused = await asyncio.to_thread(enroll_once, controller, root / "wrong" / "hostd", wrong)
    assert_refused(refused.output, refused.returncode, "UNAUTHENTICATED", TOKEN_REFUSED)
    # The tokens never appear in what hostd prints.
    assert used not in again.output
    assert wrong not in refused.output
    assert await host_state(client, "h1") == H.UP


async def test_a_restarted_host_keeps_its_identity(
    controller: Daemon, client: vp.AsyncClient, hosts: Hosts
) -> None:
    h1 = await asyncio.to_thread(hosts.enrolled, controller, "h1")
    await up(client, "h1")
    before = certificate(h1)
    served = await served_serial(h1)
    assert served == before.serial_number

    h1.stop()
    await until(
        lambda: host_state(client, "h1"), lambda s: s != H.UP, what="h1 seen gone", within=30
    )
    again = await asyncio.to_thread(hosts.restarted, h1)
    await up(client, "h1")
    assert named_host(again) == h1.host_id
    assert certificate(again).serial_number == before.serial_number
    assert await served_serial(again) == before.serial_number
    assert "enrolled as host" not in again.log_tail(lines=1000).split("hostd stopped")[-1]


async def test_a_host_enrolled_cannot_enroll_under_another_name(
    controller: Daemon, client: vp.AsyncClient, hosts: Hosts
) -> None:
    first = await asyncio.to_thread(hosts.enrolled, controller, "first")
    await up(client, "first")
    cert_before = tls_files(state_dir(first)).cert.read_bytes()
    second = await client.hosts.register("second", f"127.0.0.1:{free_port()}")
    assert second.token is not None

    # The same hostd (its state folder, its key) with the second host's token.
    token = second.token.secret
    refusal = await asyncio.to_thread(enroll_once, controller, state_dir(first), token)
    assert_refused(
        refusal.output,
        refusal.returncode,
        "ALREADY_EXISTS",
        f"this host is already enrolled as 'first' ({first.host_id}); remove it first",
    )
    assert tls_files(state_dir(first)).cert.read_bytes() == cert_before
    assert await host_state(client, "second") != H.UP
    assert await host_state(client, "first") == H.UP


async def test_an_expired_token_is_refused(
    controller: Daemon, client: vp.AsyncClient, hosts: Hosts, root: Path
) -> None:
    port = free_port()
    await client.hosts.register("late", f"127.0.0.1:{port}")
    token = await client.hosts.enrollment_token("late", ttl_seconds=1)
    assert token.expires_at is not None
    await asyncio.sleep(1.5)

    refusal = await asyncio.to_thread(
        enroll_once, controller, root / "late-try" / "hostd", token.secret
    )
    assert_refused(refusal.output, refusal.returncode, "UNAUTHENTICATED", TOKEN_REFUSED)
    # Refused for its age alone: a token of the default lifetime enrolls it.
    fresh = await client.hosts.enrollment_token("late")
    await asyncio.to_thread(hosts.enrolling, controller, "late", port, fresh.secret)
    await up(client, "late")


async def test_a_host_added_again_at_the_same_address_never_comes_up(
    controller: Daemon, client: vp.AsyncClient, hosts: Hosts, root: Path
) -> None:
    h1 = await asyncio.to_thread(hosts.enrolled, controller, "h1")
    await up(client, "h1")
    added = await client.hosts.add("h3", h1.address)

    # Its monitor dials h1's hostd every few seconds; TLS refuses it each
    # time (h1's certificate names h1's id), so h3 is never UP.
    states: list[tuple[str, H]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while loop.time() < end:
        listed = {h.name: h for h in await client.hosts.list()}
        states.append(("h1", listed["h1"].status.state))
        states.append(("h3", listed["h3"].status.state))
        await asyncio.sleep(0.2)
    assert ("h3", H.UP) not in states
    assert {s for name, s in states if name == "h1"} == {H.UP}
    assert (await client.hosts.get(added.id)).status.memory_total_mib == 0

    # The scheduler counts h1's memory once: what fills h1 cannot start a
    # second time on "h3".
    h1_host = await client.hosts.get("h1")
    memory = (h1_host.status.memory_free_mib - h1_host.status.memory_pending_mib) * 3 // 4
    kernel = root / "vmlinuz"
    kernel.write_bytes(b"")
    spec = vp.VmSpec(vcpus=1, memory_mib=memory, boot=vp.BootSource(str(kernel)))
    one = await client.vms.create("fills-h1", spec)
    started = await client.vms.start(one.id)
    assert started.vm.status.host_id == h1.host_id
    two = await client.vms.create("would-fit-h3", spec)
    with pytest.raises(vp.ClientError) as refused:
        await client.vms.start(two.id)
    # h3 is no candidate: the scheduler saw it is not UP, not its memory.
    assert "h3: host-up: host is" in str(refused.value), refused.value
    assert "h1: memory" in str(refused.value), refused.value
    assert (await client.vms.get(two.id)).status.state == vp.VmState.DOWN
    await client.vms.stop(one.id)


async def test_a_removed_host_is_revoked(
    controller: Daemon, client: vp.AsyncClient, hosts: Hosts
) -> None:
    gone = await asyncio.to_thread(hosts.enrolled, controller, "gone")
    stays = await asyncio.to_thread(hosts.enrolled, controller, "stays")
    await up(client, "gone")
    await up(client, "stays")
    serial = certificate(gone).serial_number
    gone_pair = KeyPair.read(tls_files(state_dir(gone)))
    request = agent_api.HostAgentServicePrepareIncomingMigrationRequest()
    pki = stays.pki
    assert pki is not None

    async def prepare() -> grpc.aio.AioRpcError:
        async with hostd_channel(stays.address, pki, stays.host_id, gone_pair) as channel:
            stub = agent_grpc.HostAgentServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.PrepareIncomingMigration(request, timeout=10)
            return err.value

    # While enrolled, the host's pair passes the peer's checks (the empty
    # request is then refused for itself).
    accepted = await prepare()
    assert accepted.code() == grpc.StatusCode.INVALID_ARGUMENT, accepted

    await client.hosts.remove("gone")
    await until(
        lambda: revoked_serials(stays),
        lambda serials: serial in serials,
        what=f"serial {serial} in the CRL of the host that stays",
        within=20,
        every=0.1,
    )
    revoked = await prepare()
    assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED, revoked
    assert "certificate revoked" in (revoked.details() or "")

    # Its old token went with it: the controller refuses it.
    old_token = (gone.log_path.parent / "gone.token").read_text().strip()
    key = load_key(gone_pair.key)
    enroll = enroll_api.EnrollHostRequest(
        token=old_token, csr_pem=signing_request(key, "virtplane host").decode()
    )
    creds = channel_credentials(controller.ca_file.read_bytes())
    async with grpc.aio.secure_channel(controller.address, creds) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await enroll_grpc.EnrollmentServiceStub(channel).EnrollHost(enroll, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert err.value.details() == TOKEN_REFUSED
    assert await host_state(client, "stays") == H.UP


def short_lived(root: Path, *lifetime: str) -> Daemon:
    """A controller of root/controller with lifetime's arguments."""
    workdir = root / "controller"
    workdir.mkdir()
    return start_controller(workdir, plaintext_hosts=False, extra=lifetime)


async def started_on_old_stream(
    client: vp.AsyncClient, watch: VmEvents, hostd: Daemon, name: str
) -> None:
    """A VM started on hostd now is seen on watch (a stream opened earlier)."""
    kernel = Path(tempfile.gettempdir()) / f"vmlinuz-{name}-{os.getpid()}"
    kernel.write_bytes(b"")
    try:
        spec = vp.VmSpec(vcpus=1, memory_mib=64, boot=vp.BootSource(str(kernel)))
        vm = await client.vms.create(name, spec)
        await client.vms.start(vm.id)
        await watch.next_vm(
            vm.id,
            lambda v: (
                v.status.state == vm_pb2.Vm.STATE_POWERING_UP and v.status.host_id == hostd.host_id
            ),
            f"VM {name} started on {hostd.address}, on the stream opened before",
        )
        assert not watch._task.done(), "the watch stream ended"
        await client.vms.stop(vm.id)
    finally:
        kernel.unlink()


async def test_a_host_certificate_is_renewed_while_the_host_runs(hosts: Hosts, root: Path) -> None:
    controller = short_lived(root, *host_cert_lifetime(RENEWAL_LIFETIME))
    hosts.daemons.append(controller)
    h = await asyncio.to_thread(hosts.enrolled, controller, "h")
    async with controller.client() as client:
        await up(client, "h")
        first = certificate(h)
        # notBefore is CLOCK_SKEW before the signing; the lifetime counts from it.
        lifetime = first.not_valid_after_utc - (first.not_valid_before_utc + CLOCK_SKEW)
        assert lifetime.total_seconds() <= RENEWAL_LIFETIME + 1
        assert await served_serial(h) == first.serial_number
        watch = VmEvents.of_stub(vm_grpc.VmServiceStub(client.channel), within=30)

        async def steady() -> None:
            assert await host_state(client, "h") == H.UP

        try:
            serving = functools.partial(served_serial, h)
            await renewed_while(serving, first.serial_number, steady, RENEWED_WITHIN)
            assert certificate(h).serial_number != first.serial_number
            assert named_host(h) == h.host_id
            await started_on_old_stream(client, watch, h, "after-renewal")
        finally:
            await watch.close()


async def test_the_controller_certificate_is_renewed_while_it_serves(
    hosts: Hosts, root: Path
) -> None:
    # The controller's own pair: what clients see on --listen, and what it
    # presents to hosts (new channels to them after the renewal).
    controller = short_lived(root, "--controller-cert-days", repr(RENEWAL_LIFETIME / 86400))
    hosts.daemons.append(controller)
    h = await asyncio.to_thread(hosts.enrolled, controller, "h")
    async with controller.client() as client:
        await up(client, "h")

        async def serving() -> int:
            return await asyncio.to_thread(controller_serial, controller)

        first = await serving()
        watch = VmEvents.of_stub(vm_grpc.VmServiceStub(client.channel), within=30)

        async def steady() -> None:
            assert await host_state(client, "h") == H.UP

        try:
            await renewed_while(serving, first, steady, RENEWED_WITHIN)
            await started_on_old_stream(client, watch, h, "after-controller-renewal")
        finally:
            await watch.close()
        # A new client trusts the new certificate as it did the first.
        async with controller.client() as fresh:
            assert await host_state(fresh, "h") == H.UP
