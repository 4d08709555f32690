"""hostd over mutual TLS: whom it lets in, and for what (hostd.peer_auth).

A real hostd on libvirt's test driver, its identity from a TestPki (fixture
served); clients present certificates of every role, of another CA,
expired and revoked ones. Two hostds migrate to each other over mTLS (the
test driver cannot move the memory: the migration fails after the
destination was prepared, as a real one may).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from virtplane.v1 import host_agent_service_pb2 as pb
from virtplane.v1 import host_agent_service_pb2_grpc as pb_grpc
from virtplane.v1 import host_identity_service_pb2 as idp
from virtplane.v1 import host_identity_service_pb2_grpc as idp_grpc

from hostd.config import ChannelLimits, MigrationConfig
from hostd.identity import tls_files
from hostd.peer_auth import authorize
from tests.support import served as serving
from tests.support.connect import controller_pair, hostd_channel, renew
from tests.support.hostd_rig import vm_config
from tests.support.pki import TestPki
from tests.support.waiting import until
from virtplane_common.errors import Unauthenticated
from virtplane_common.tls.files import KeyPair
from virtplane_common.tls.names import Role
from virtplane_common.tls.revocation import Revocations

S = pb.HostVm
CAPS = pb.GetHostCapabilitiesRequest()
NO_CHANNEL = ChannelLimits(connect_timeout_seconds=0.01, connect_retry_seconds=0.01)


async def _capabilities(channel: grpc.aio.Channel) -> grpc.StatusCode:
    try:
        await pb_grpc.HostAgentServiceStub(channel).GetHostCapabilities(CAPS, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _refusal(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code(), caught.value.details() or ""


@contextlib.asynccontextmanager
async def _as(served: serving.Served, pair: KeyPair) -> AsyncIterator[grpc.aio.Channel]:
    async with hostd_channel(served.address, served.pki, served.host_id, pair) as channel:
        yield channel


async def test_the_controller_is_let_in(served: serving.Served) -> None:
    async with _as(served, served.pki.pair(Role.CONTROLLER)) as channel:
        assert await _capabilities(channel) == grpc.StatusCode.OK


async def test_a_plaintext_client_is_refused(served: serving.Served) -> None:
    async with grpc.aio.insecure_channel(served.address) as channel:
        assert await _capabilities(channel) == grpc.StatusCode.UNAVAILABLE


async def test_a_client_without_a_certificate_is_refused(served: serving.Served) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=served.pki.ca_pem)
    options = [("grpc.ssl_target_name_override", f"{served.host_id}.hosts.virtplane")]
    async with grpc.aio.secure_channel(served.address, credentials, options) as channel:
        assert await _capabilities(channel) == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_of_another_ca_is_refused(
    served: serving.Served, tmp_path: Path
) -> None:
    stranger = TestPki(tmp_path / "other", "another CA").pair(Role.CONTROLLER)
    async with _as(served, stranger) as channel:
        assert await _capabilities(channel) == grpc.StatusCode.UNAVAILABLE


async def test_an_expired_certificate_is_refused(served: serving.Served) -> None:
    expired = served.pki.pair(Role.CONTROLLER, lifetime=-dt.timedelta(minutes=1))
    async with _as(served, expired) as channel:
        assert await _capabilities(channel) == grpc.StatusCode.UNAVAILABLE


async def test_only_the_host_named_is_accepted(served: serving.Served) -> None:
    """The client side: TLS completes only with the host whose id it asks for."""
    async with hostd_channel(served.address, served.pki, "another-host") as channel:
        assert await _capabilities(channel) == grpc.StatusCode.UNAVAILABLE


async def test_a_revoked_certificate_is_refused(served: serving.Served) -> None:
    doomed = served.pki.pair(Role.CONTROLLER)
    async with _as(served, doomed) as channel:
        assert await _capabilities(channel) == grpc.StatusCode.OK
        served.pki.revoke(doomed)
        identity = idp_grpc.HostIdentityServiceStub(channel)
        crl = served.pki.crl(1).decode()
        # The list is taken from the controller (the other pair of the fixture).
        async with _as(served, controller_pair(served.pki)) as controller:
            await idp_grpc.HostIdentityServiceStub(controller).SetRevocationList(
                idp.SetRevocationListRequest(revocation_list_pem=crl)
            )
        # Refused on the connection it already had, call by call.
        code, details = await _refusal(
            pb_grpc.HostAgentServiceStub(channel).GetHostCapabilities(CAPS)
        )
        assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
        code, _ = await _refusal(
            identity.SetRevocationList(idp.SetRevocationListRequest(revocation_list_pem=crl))
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
    async with _as(served, doomed) as fresh:
        assert await _capabilities(fresh) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_user_is_refused_everything(served: serving.Served) -> None:
    async with _as(served, served.pki.pair(Role.USER, "alice")) as channel:
        code, details = await _refusal(
            pb_grpc.HostAgentServiceStub(channel).GetHostCapabilities(CAPS)
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "user alice lacks the permission 'host.manage'"
        code, _ = await _refusal(
            pb_grpc.HostAgentServiceStub(channel).CancelMigration(
                pb.HostAgentServiceCancelMigrationRequest(vm_id="x")
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # Health answers any peer of the CA.
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_another_host_may_only_migrate_to_it(
    served: serving.Served, boot_files: tuple[str, str]
) -> None:
    async with _as(served, served.pki.pair(Role.HOST, "source-host")) as channel:
        stub = pb_grpc.HostAgentServiceStub(channel)
        code, details = await _refusal(stub.GetHostCapabilities(CAPS))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "host source-host lacks the permission 'host.manage'"
        config = vm_config(boot_files[0])
        for call in (
            stub.CreateVm(pb.HostAgentServiceCreateVmRequest(config=config)),
            stub.DestroyVm(pb.HostAgentServiceDestroyVmRequest(vm_id=config.vm_id)),
            stub.MigrateVm(
                pb.HostAgentServiceMigrateVmRequest(
                    vm_id=config.vm_id, destination_address="x:1", destination_host_id="x"
                )
            ),
            idp_grpc.HostIdentityServiceStub(channel).PrepareRenewal(idp.PrepareRenewalRequest()),
        ):
            assert (await _refusal(call))[0] == grpc.StatusCode.PERMISSION_DENIED
        prepared = await stub.PrepareIncomingMigration(
            pb.HostAgentServicePrepareIncomingMigrationRequest(config=config, source_address="a")
        )
        assert prepared.destination.migration_uri.startswith("tcp://")
        assert not prepared.destination.hypervisor_uri, "a destination names no libvirt URI"
        cancelled = await stub.CancelMigration(
            pb.HostAgentServiceCancelMigrationRequest(vm_id=config.vm_id)
        )
        assert cancelled.vm.vm_id == config.vm_id


NODE_XML = """<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><active>2</active><nodes>1</nodes>
    <sockets>1</sockets><cores>2</cores><threads>1</threads></cpu>
  <memory>4194304</memory>
</node>
"""


@dataclasses.dataclass
class TwoHosts:
    source: serving.Served
    destination: serving.Served


@pytest.fixture
async def two_hosts(short_tmp: Path) -> AsyncIterator[TwoHosts]:
    """Two hostds of one CA: the source on test:///default, the destination on
    a test driver of its own (it must not see the source's domains)."""
    pki = TestPki(short_tmp / "pki")
    node = short_tmp / "node.xml"
    node.write_text(NODE_XML)
    # The source derives its destination's libvirt URI from its own template.
    migration = MigrationConfig(
        peer_hypervisor_uri="test:///default", qemu_tls_dir=short_tmp / "qemu-tls"
    )
    async with (
        serving.serve(
            short_tmp / "a", NO_CHANNEL, pki=pki, host_id="a", migration=migration
        ) as source,
        serving.serve(
            short_tmp / "b", NO_CHANNEL, pki=pki, host_id="b", libvirt_uri=f"test://{node}"
        ) as destination,
    ):
        yield TwoHosts(source, destination)


async def test_a_migration_reaches_only_the_host_named(
    two_hosts: TwoHosts, boot_files: tuple[str, str]
) -> None:
    served, destination = two_hosts.source, two_hosts.destination
    config = vm_config(boot_files[0])
    async with serving.watching(served) as events:
        await serving.create_running(served, config, events)
    vm_id = config.vm_id
    request = pb.HostAgentServiceMigrateVmRequest(
        vm_id=vm_id, destination_address=destination.address
    )
    code, details = await _refusal(served.stub.MigrateVm(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("destination_host_id: required")
    # Another host id than the one answering there: TLS fails, the VM stays.
    request.destination_host_id = "someone-else"
    code, details = await _refusal(served.stub.MigrateVm(request))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "cannot be reached" in details
    assert served.hostd.vms.get(vm_id).state.name == "RUNNING"
    assert not destination.hostd.vms.list()
    # The host named: prepared over mTLS with the source's host pair; the
    # test driver then cannot move the memory, and the destination is told.
    request.destination_host_id = destination.host_id
    moving = await served.stub.MigrateVm(request)
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    await until(lambda: served.hostd.vms.get(vm_id).state.name == "RUNNING", what="back")
    await until(
        lambda: (
            [vm.state.name for vm in destination.hostd.vms.list() if vm.vm_id == vm_id]
            in ([], ["DOWN"])
        ),
        what="the destination let go",
    )
    progress = destination.hostd.vms.migration_progress(vm_id)
    assert progress.phase.name == "CANCELLED"


async def test_a_source_dials_with_its_renewed_pair(
    two_hosts: TwoHosts, boot_files: tuple[str, str]
) -> None:
    source, destination = two_hosts.source, two_hosts.destination
    config = vm_config(boot_files[0])
    async with serving.watching(source) as events:
        await serving.create_running(source, config, events)
    request = pb.HostAgentServiceMigrateVmRequest(
        vm_id=config.vm_id,
        destination_address=destination.address,
        destination_host_id=destination.host_id,
    )
    # The destination refuses the source's pair once the CA revoked it ...
    source.pki.revoke(KeyPair.read(tls_files(source.hostd.config.state_dir)))
    await idp_grpc.HostIdentityServiceStub(destination.channel).SetRevocationList(
        idp.SetRevocationListRequest(revocation_list_pem=source.pki.crl(1).decode())
    )
    code, details = await _refusal(source.stub.MigrateVm(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "refused: certificate revoked (UNAUTHENTICATED)" in details
    # ... and takes its renewed one, which the source dials with from then on.
    await renew(source.channel, source.pki, source.host_id)
    moving = await source.stub.MigrateVm(request)
    assert moving.vm.state == S.STATE_MIGRATING_FROM
    await until(lambda: source.hostd.vms.get(config.vm_id).state.name == "RUNNING", what="back")


class _NoCertificate:
    """A call's context whose peer presented no certificate TLS knows of."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"ssl"]}


def test_a_peer_without_an_identity_is_unauthenticated(tmp_path: Path) -> None:
    revocations = Revocations(TestPki(tmp_path).ca_pem)
    method = "/virtplane.v1.HostAgentService/ListVms"
    with pytest.raises(Unauthenticated, match="a client certificate naming a virtplane identity"):
        authorize(revocations, method, _NoCertificate())  # type: ignore[arg-type]
