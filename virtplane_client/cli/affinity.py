"""`virtplane affinity …`: affinity groups, VMs that run together or apart."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from virtplane_client.aio import AsyncClient
from virtplane_client.models import AffinityGroup, Polarity

_POLARITY = {"positive": Polarity.POSITIVE, "negative": Polarity.NEGATIVE}


def describe(groups: Sequence[AffinityGroup]) -> str:
    """One line per group: name, polarity, hard or soft, members."""
    if not groups:
        return "no affinity groups"
    lines = []
    for g in groups:
        polarity = "together" if g.polarity is Polarity.POSITIVE else "apart"
        rule = "enforcing" if g.enforcing else "preferred"
        members = ", ".join(g.vm_ids) or "no VMs"
        lines.append(f"{g.name:<20} {polarity:<8} {rule:<9} {members}")
    return "\n".join(lines)


async def create(args: argparse.Namespace, client: AsyncClient) -> None:
    group = await client.affinity.create(
        args.name, _POLARITY[args.polarity], enforcing=args.enforcing, vms=args.vm
    )
    print(describe([group]))


async def list_groups(_args: argparse.Namespace, client: AsyncClient) -> None:
    print(describe(await client.affinity.list()))


async def delete(args: argparse.Namespace, client: AsyncClient) -> None:
    await client.affinity.delete(args.group)
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
