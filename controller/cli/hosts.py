"""`virtplane host …`: the hosts the controller runs VMs on."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from virtplane.v1 import host_service_pb2 as host_api
from virtplane.v1 import host_service_pb2_grpc as host_grpc

from controller.cli import format as fmt


async def host_add(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    stub = host_grpc.HostServiceStub(channel)
    reply = await stub.AddHost(host_api.AddHostRequest(name=args.name, address=args.address))
    print(fmt.hosts([reply.host]))


async def host_list(_args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await host_grpc.HostServiceStub(channel).ListHosts(host_api.ListHostsRequest())
    print(fmt.hosts(reply.hosts))


async def host_remove(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    await host_grpc.HostServiceStub(channel).RemoveHost(host_api.RemoveHostRequest(host=args.host))
    print(f"{args.host}: removed")


async def host_maintenance(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await host_grpc.HostServiceStub(channel).SetHostMaintenance(
        host_api.SetHostMaintenanceRequest(host=args.host)
    )
    print(fmt.hosts([reply.host]))


async def host_activate(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await host_grpc.HostServiceStub(channel).ActivateHost(
        host_api.ActivateHostRequest(host=args.host)
    )
    print(fmt.hosts([reply.host]))


async def host_confirm_down(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await host_grpc.HostServiceStub(channel).ConfirmHostDown(
        host_api.ConfirmHostDownRequest(host=args.host)
    )
    print(fmt.hosts([reply.host]))
    print(f"VMs now DOWN: {', '.join(reply.vm_ids) or 'none'}")


async def names(channel: grpc.aio.Channel) -> dict[str, str]:
    """Each host's name by its id."""
    reply = await host_grpc.HostServiceStub(channel).ListHosts(host_api.ListHostsRequest())
    return {h.id: h.name for h in reply.hosts}


def add_parsers(groups: Any) -> None:
    host = groups.add_parser("host", help="hosts").add_subparsers(dest="verb", required=True)
    add = host.add_parser("add", help="register a hostd")
    add.add_argument("name")
    add.add_argument("address", help="hostd address, host:port")
    add.set_defaults(run=host_add)
    host.add_parser("list", help="list hosts").set_defaults(run=host_list)
    for verb, run, what in (
        ("remove", host_remove, "forget a host no VM is placed on"),
        ("maintenance", host_maintenance, "take a host without running VMs out of service"),
        ("activate", host_activate, "bring a host back from maintenance"),
        ("confirm-down", host_confirm_down, "fence: confirm a NON_RESPONSIVE host is off"),
    ):
        sub = host.add_parser(verb, help=what)
        sub.add_argument("host", help="id or name")
        sub.set_defaults(run=run)
