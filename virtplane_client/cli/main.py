"""virtplane: the command line client of the controller."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from virtplane_client.aio import AsyncClient
from virtplane_client.cli import affinity, config, hosts, ops, principals, vms
from virtplane_client.errors import RpcError

Command = Callable[[argparse.Namespace, AsyncClient], Coroutine[Any, Any, None]]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="virtplane", description=__doc__)
    p.add_argument(
        "--controller",
        default=None,
        help="controller address (default: $VIRTPLANE_ADDRESS, else the config file's"
        f" (virtplane login), else {config.DEFAULT_ADDRESS})",
    )
    p.add_argument(
        "--insecure-plaintext-dev",
        action="store_true",
        help="plaintext to a development controller (--insecure-plaintext-dev); no credentials",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    groups = p.add_subparsers(dest="group", required=True)
    hosts.add_parsers(groups)
    affinity.add_parsers(groups)
    vms.add_parsers(groups)
    ops.add_parsers(groups)
    principals.add_parsers(groups)
    return p


async def run_command(args: argparse.Namespace) -> None:
    run: Command | None = args.run
    if run is None:  # login: nothing to ask the controller
        principals.login(args)
        return
    settings = config.load()
    if args.insecure_plaintext_dev:
        settings = dataclasses.replace(settings, ca="", token="", cert="", key="")
        settings = dataclasses.replace(settings, insecure_development="1")
    address = args.controller or settings.address
    async with AsyncClient(address, credentials=settings.credentials()) as client:
        await asyncio.wait_for(run(args, client), args.timeout)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        asyncio.run(run_command(args))
    except RpcError as exc:
        print(f"virtplane: {exc.code.name}: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except TimeoutError:
        print(f"virtplane: no answer within {args.timeout} s", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
