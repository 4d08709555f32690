"""`virtplane host …`: the hosts the controller runs VMs on. A command is sent
once, so it carries no request_id (NO_KEY), as it always did."""

from __future__ import annotations

import argparse
from typing import Any

from virtplane_client.aio import AsyncClient
from virtplane_client.cli import format as fmt

NO_KEY = ""


async def host_add(args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.hosts([await client.hosts.add(args.name, args.address, request_id=NO_KEY)]))


async def host_list(_args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.hosts(await client.hosts.list()))


async def host_remove(args: argparse.Namespace, client: AsyncClient) -> None:
    await client.hosts.remove(args.host, request_id=NO_KEY)
    print(f"{args.host}: removed")


async def host_maintenance(args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.hosts([await client.hosts.set_maintenance(args.host, request_id=NO_KEY)]))


async def host_activate(args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.hosts([await client.hosts.activate(args.host, request_id=NO_KEY)]))


async def host_confirm_down(args: argparse.Namespace, client: AsyncClient) -> None:
    fenced = await client.hosts.confirm_down(args.host, request_id=NO_KEY)
    print(fmt.hosts([fenced.host]))
    print(f"VMs now DOWN: {', '.join(fenced.vm_ids) or 'none'}")


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
