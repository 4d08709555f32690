"""`virtplane op …` and `virtplane events`: operations and the audit log,
and the options every verb that returns an operation takes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc
from virtplane.v1 import operation_pb2
from virtplane.v1 import operation_service_pb2 as op_api
from virtplane.v1 import operation_service_pb2_grpc as op_grpc

from controller.cli import format as fmt


async def show_operation(
    args: argparse.Namespace, channel: grpc.aio.Channel, op: operation_pb2.Operation
) -> None:
    """Prints the operation; with --wait, once it is done."""
    if getattr(args, "wait", False) and not op.done:
        request = op_api.WaitOperationRequest(id=op.id, timeout_seconds=args.wait_seconds)
        op = (await op_grpc.OperationServiceStub(channel).WaitOperation(request)).operation
    print(fmt.operation(op))


async def op_get(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await op_grpc.OperationServiceStub(channel).GetOperation(
        op_api.GetOperationRequest(id=args.id)
    )
    print(fmt.operation(reply.operation))


async def op_wait(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await op_grpc.OperationServiceStub(channel).WaitOperation(
        op_api.WaitOperationRequest(id=args.id, timeout_seconds=args.wait_seconds)
    )
    print(fmt.operation(reply.operation))
    if not reply.operation.done:
        print(f"virtplane: not done after {args.wait_seconds} s", file=sys.stderr)
        sys.exit(2)


async def op_list(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    states = [operation_pb2.Operation.State.Value(f"STATE_{s}") for s in args.state]
    request = op_api.ListOperationsRequest(vm=args.vm, states=states, page_size=args.limit)
    reply = await op_grpc.OperationServiceStub(channel).ListOperations(request)
    print(fmt.operations(reply.operations))


async def events_list(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    request = op_api.ListEventsRequest(
        vm_id=args.vm, host_id=args.host, after_id=args.after, page_size=args.limit
    )
    reply = await op_grpc.OperationServiceStub(channel).ListEvents(request)
    print(fmt.events(reply.events))


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
