"""`virtplane affinity …`: affinity groups, VMs that run together or apart."""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from virtplane.v1 import affinity_group_service_pb2 as aff_api
from virtplane.v1 import affinity_group_service_pb2_grpc as aff_grpc

Group = aff_api.AffinityGroup
_POLARITY = {"positive": Group.POLARITY_POSITIVE, "negative": Group.POLARITY_NEGATIVE}


def describe(groups: list[Group]) -> str:
    """One line per group: name, polarity, hard or soft, members."""
    if not groups:
        return "no affinity groups"
    lines = []
    for g in groups:
        polarity = "together" if g.polarity == Group.POLARITY_POSITIVE else "apart"
        rule = "enforcing" if g.enforcing else "preferred"
        members = ", ".join(g.vm_ids) or "no VMs"
        lines.append(f"{g.name:<20} {polarity:<8} {rule:<9} {members}")
    return "\n".join(lines)


async def create(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await aff_grpc.AffinityGroupServiceStub(channel).CreateAffinityGroup(
        aff_api.CreateAffinityGroupRequest(
            name=args.name,
            polarity=_POLARITY[args.polarity],
            enforcing=args.enforcing,
            vms=args.vm,
        )
    )
    print(describe([reply.group]))


async def list_groups(_args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await aff_grpc.AffinityGroupServiceStub(channel).ListAffinityGroups(
        aff_api.ListAffinityGroupsRequest()
    )
    print(describe(list(reply.groups)))


async def delete(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    await aff_grpc.AffinityGroupServiceStub(channel).DeleteAffinityGroup(
        aff_api.DeleteAffinityGroupRequest(group=args.group)
    )
    print(f"{args.group}: deleted")


def add_parsers(groups: Any) -> None:
    affinity = groups.add_parser("affinity", help="affinity groups").add_subparsers(
        dest="verb", required=True
    )
    new = affinity.add_parser("create", help="VMs that must (or should) run together or apart")
    new.add_argument("name")
    new.add_argument("polarity", choices=sorted(_POLARITY), help="together (positive) or apart")
    new.add_argument("--enforcing", action="store_true", help="a hard rule, not a preference")
    new.add_argument("--vm", action="append", default=[], help="a member, id or name (repeat)")
    new.set_defaults(run=create)
    affinity.add_parser("list", help="every affinity group").set_defaults(run=list_groups)
    gone = affinity.add_parser("delete", help="drop a group (its VMs stay)")
    gone.add_argument("group", help="id or name")
    gone.set_defaults(run=delete)
