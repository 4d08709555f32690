"""`client.hosts` and `client.affinity`: the hosts VMs run on, and the
affinity groups that keep VMs together or apart (the async core)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from virtplane.v1 import affinity_group_service_pb2 as aff_api
from virtplane.v1 import affinity_group_service_pb2_grpc as aff_grpc
from virtplane.v1 import enrollment_service_pb2 as enroll_api
from virtplane.v1 import enrollment_service_pb2_grpc as enroll_grpc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc

from virtplane_client import convert
from virtplane_client._rpc import call, idempotency_key
from virtplane_client.models import AffinityGroup, Balancing, FencedHost, Host, Polarity


@dataclass(frozen=True)
class EnrollmentToken:
    """A one-time token hostd enrolls with (virtplane-hostd
    --enroll-token-file): its secret is shown this once."""

    host_id: str
    secret: str = field(repr=False)
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class AddedHost:
    """AddHost's answer: the host, and its first enrollment token (None on a
    repeat of the call: ask enrollment_token() for a new one)."""

    host: Host
    token: EnrollmentToken | None


class AsyncHosts:
    """The HostService. A host is named by its id or its name; each mutation
    carries a request_id, fresh unless the caller gives one."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = host_grpc.HostServiceStub(channel)
        self._enrollment = enroll_grpc.EnrollmentServiceStub(channel)

    async def add(self, name: str, address: str, *, request_id: str | None = None) -> Host:
        """Registers the hostd at address (host:port)."""
        return (await self.register(name, address, request_id=request_id)).host

    async def register(
        self, name: str, address: str, *, request_id: str | None = None
    ) -> AddedHost:
        """Registers the hostd at address (host:port), with the token it enrolls with."""
        request = host_api.AddHostRequest(
            name=name, address=address, request_id=idempotency_key(request_id)
        )
        reply = await call(self._stub.AddHost, request)
        host = convert.host(reply.host)
        if not reply.enrollment_token:
            return AddedHost(host, None)
        expires = reply.enrollment_token_expires_at.ToDatetime(dt.UTC)
        return AddedHost(host, EnrollmentToken(host.id, reply.enrollment_token, expires))

    async def enrollment_token(self, host: str, *, ttl_seconds: int = 0) -> EnrollmentToken:
        """A new one-time token for a host not enrolled yet (admin only);
        ttl_seconds 0: the controller's default lifetime."""
        request = enroll_api.CreateEnrollmentTokenRequest(host=host, ttl_seconds=ttl_seconds)
        reply = await call(self._enrollment.CreateEnrollmentToken, request)
        return EnrollmentToken(reply.host_id, reply.token, reply.expires_at.ToDatetime(dt.UTC))

    async def get(self, host: str) -> Host:
        request = host_api.GetHostRequest(host=host)
        return convert.host((await call(self._stub.GetHost, request)).host)

    async def list(self) -> tuple[Host, ...]:
        reply = await call(self._stub.ListHosts, host_api.ListHostsRequest())
        return tuple(convert.host(h) for h in reply.hosts)

    async def names(self) -> dict[str, str]:
        """Each host's name by its id."""
        return {h.id: h.name for h in await self.list()}

    async def remove(self, host: str, *, request_id: str | None = None) -> None:
        """Forgets a host no VM is placed on."""
        request = host_api.RemoveHostRequest(host=host, request_id=idempotency_key(request_id))
        await call(self._stub.RemoveHost, request)

    async def set_maintenance(self, host: str, *, request_id: str | None = None) -> Host:
        """Takes a host out of service: PREPARING_FOR_MAINTENANCE while its VMs
        are migrated away, MAINTENANCE once it runs nothing."""
        request = host_api.SetHostMaintenanceRequest(
            host=host, request_id=idempotency_key(request_id)
        )
        return convert.host((await call(self._stub.SetHostMaintenance, request)).host)

    async def activate(self, host: str, *, request_id: str | None = None) -> Host:
        """Brings a host back from maintenance."""
        request = host_api.ActivateHostRequest(host=host, request_id=idempotency_key(request_id))
        return convert.host((await call(self._stub.ActivateHost, request)).host)

    async def confirm_down(self, host: str, *, request_id: str | None = None) -> FencedHost:
        """Fencing: confirms a NON_RESPONSIVE host is off; its VMs go DOWN."""
        request = host_api.ConfirmHostDownRequest(host=host, request_id=idempotency_key(request_id))
        reply = await call(self._stub.ConfirmHostDown, request)
        return FencedHost(convert.host(reply.host), tuple(reply.vm_ids))

    async def explain_balancing(self) -> Balancing:
        """What the cluster's balancer would do now, and why (a dry run)."""
        reply = await call(self._stub.ExplainBalancing, host_api.ExplainBalancingRequest())
        return convert.balancing(reply)


class AsyncAffinityGroups:
    """The AffinityGroupService. A group is named by its id or its name."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = aff_grpc.AffinityGroupServiceStub(channel)

    async def create(
        self, name: str, polarity: Polarity, *, enforcing: bool = False, vms: Iterable[str] = ()
    ) -> AffinityGroup:
        """A group of VMs (ids or names); enforcing: a hard rule, not a preference."""
        request = aff_api.CreateAffinityGroupRequest(
            name=name,
            polarity=convert.polarity_message(polarity),
            enforcing=enforcing,
            vms=list(vms),
        )
        return convert.affinity_group((await call(self._stub.CreateAffinityGroup, request)).group)

    async def get(self, group: str) -> AffinityGroup:
        request = aff_api.GetAffinityGroupRequest(group=group)
        return convert.affinity_group((await call(self._stub.GetAffinityGroup, request)).group)

    async def list(self) -> tuple[AffinityGroup, ...]:
        reply = await call(self._stub.ListAffinityGroups, aff_api.ListAffinityGroupsRequest())
        return tuple(convert.affinity_group(g) for g in reply.groups)

    async def delete(self, group: str) -> None:
        """Drops the group; its VMs stay."""
        await call(self._stub.DeleteAffinityGroup, aff_api.DeleteAffinityGroupRequest(group=group))
