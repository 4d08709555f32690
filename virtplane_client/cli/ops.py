"""`virtplane op …` and `virtplane events`: operations and the audit log,
and the options every verb that returns an operation takes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from virtplane_client.aio import AsyncClient
from virtplane_client.cli import format as fmt
from virtplane_client.models import Operation, OperationState


def request_id(args: argparse.Namespace) -> str:
    """--request-id; when not given, "": the command is sent once, so it
    carries no key (and the audit log shows none), as it always did."""
    return str(args.request_id)


async def show_operation(args: argparse.Namespace, client: AsyncClient, op: Operation) -> None:
    """Prints the operation; with --wait, once it is done."""
    if getattr(args, "wait", False) and not op.done:
        op = await client.operations.wait(op, args.wait_seconds)
    print(fmt.operation(op))


async def op_get(args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.operation(await client.operations.get(args.id)))


async def op_wait(args: argparse.Namespace, client: AsyncClient) -> None:
    op = await client.operations.wait(args.id, args.wait_seconds)
    print(fmt.operation(op))
    if not op.done:
        print(f"virtplane: not done after {args.wait_seconds} s", file=sys.stderr)
        sys.exit(2)


async def op_list(args: argparse.Namespace, client: AsyncClient) -> None:
    states = [OperationState[s] for s in args.state]
    print(fmt.operations(await client.operations.list(vm=args.vm, states=states, limit=args.limit)))


async def events_list(args: argparse.Namespace, client: AsyncClient) -> None:
    found = await client.operations.events(
        vm_id=args.vm, host_id=args.host, after_id=args.after, limit=args.limit
    )
    print(fmt.events(found))


def request_id_option(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--request-id",
        default="",
        help="idempotency key: repeating the command with it acts once",
    )


def wait_options(sub: argparse.ArgumentParser, wait: bool) -> None:
    if wait:
        sub.add_argument("--wait", action="store_true", help="wait for the operation to end")
    sub.add_argument(
        "--wait-seconds", type=int, default=120, help="how long to wait (default %(default)s)"
    )


def add_parsers(groups: Any) -> None:
    op = groups.add_parser("op", help="operations").add_subparsers(dest="verb", required=True)
    get = op.add_parser("get", help="an operation and its phases")
    get.add_argument("id")
    get.set_defaults(run=op_get)
    wait = op.add_parser("wait", help="wait for an operation to end")
    wait.add_argument("id")
    wait_options(wait, wait=False)
    wait.set_defaults(run=op_wait)
    ops = op.add_parser("list", help="operations, newest first")
    ops.add_argument("--vm", default="", help="only this VM's")
    ops.add_argument(
        "--state",
        action="append",
        default=[],
        type=str.upper,
        choices=["RUNNING", "SUCCEEDED", "FAILED"],
        help="only operations in this state (repeatable)",
    )
    ops.add_argument("--limit", type=int, default=50)
    ops.set_defaults(run=op_list)

    events = groups.add_parser("events", help="the audit log, oldest first")
    events.add_argument("--vm", default="", help="only this VM id's")
    events.add_argument("--host", default="", help="only this host id's")
    events.add_argument("--after", type=int, default=0, help="only events after this id")
    events.add_argument("--limit", type=int, default=100)
    events.set_defaults(run=events_list)
