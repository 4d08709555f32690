"""`virtplane host …`: the hosts the controller runs VMs on. A command is sent
once, so it carries no request_id (NO_KEY), as it always did."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from virtplane_client.aio import AsyncClient
from virtplane_client.cli import config
from virtplane_client.cli import format as fmt
from virtplane_client.fleet import EnrollmentToken
from virtplane_client.models import HostState
from virtplane_common.tls.files import write_private

NO_KEY = ""
TOKEN_FILE = "/etc/virtplane/enroll.token"
# How often `host maintenance` looks at an evacuating host.
EVACUATION_POLL_SECONDS = 1.0


def enrollment_text(args: argparse.Namespace, name: str, token: EnrollmentToken) -> str:
    """The token, and the hostd command line that enrolls with it. With
    --token-file, the token is written there (0600) instead of shown."""
    if args.token_file is not None:
        write_private(args.token_file, token.secret.encode())
        return _command_text(args, name, token, args.token_file)
    return _command_text(args, name, token, None)


def _command_text(
    args: argparse.Namespace, name: str, token: EnrollmentToken, written: Path | None
) -> str:
    settings = config.load()
    address = args.controller or settings.address
    ca = settings.ca or "CA.pem"
    until = token.expires_at.isoformat(timespec="seconds") if token.expires_at else "?"
    if written is not None:
        where = [f"enrollment token for host {name!r} (works once, until {until}) in {written}"]
        token_file = str(written)
    else:
        where = [
            f"enrollment token for host {name!r} (works once, until {until}):",
            f"  {token.secret}",
            f"on the host, put it in a file only root reads ({TOKEN_FILE}), and",
        ]
        token_file = TOKEN_FILE
    return "\n".join(
        [
            *where,
            f"with the controller's CA certificate ({ca}), start hostd once with its usual"
            " flags and:",
            f"  virtplane-hostd --controller {address} --controller-ca {ca}"
            f" --enroll-token-file {token_file}",
        ]
    )


async def host_add(args: argparse.Namespace, client: AsyncClient) -> None:
    added = await client.hosts.register(args.name, args.address, request_id=NO_KEY)
    print(fmt.hosts([added.host]))
    if added.token is not None:
        print(enrollment_text(args, added.host.name, added.token))


async def host_enroll_token(args: argparse.Namespace, client: AsyncClient) -> None:
    token = await client.hosts.enrollment_token(args.host, ttl_seconds=args.ttl_seconds)
    print(enrollment_text(args, args.host, token))


async def host_list(_args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.hosts(await client.hosts.list()))


async def host_remove(args: argparse.Namespace, client: AsyncClient) -> None:
    await client.hosts.remove(args.host, request_id=NO_KEY)
    print(f"{args.host}: removed")


def _stuck(message: str) -> bool:
    """Whether an evacuation's message says nothing moves any more and some
    VMs cannot ("evacuating: 0 VMs moving; cannot move: …")."""
    return message.startswith("evacuating: 0 VMs moving") and "cannot move" in message


async def host_maintenance(args: argparse.Namespace, client: AsyncClient) -> None:
    """Takes the host out of service; while it evacuates its VMs, shows each
    change of the evacuation until the host is empty (MAINTENANCE), is
    activated again, or only VMs that cannot move are left (named)."""
    host = await client.hosts.set_maintenance(args.host, request_id=NO_KEY)
    print(fmt.hosts([host]))
    shown = host.status.message
    while host.status.state is HostState.PREPARING_FOR_MAINTENANCE and not args.no_wait:
        if _stuck(host.status.message):
            print(f"{host.name}: stays PREPARING_FOR_MAINTENANCE: {host.status.message}")
            return
        await asyncio.sleep(EVACUATION_POLL_SECONDS)
        host = await client.hosts.get(args.host)
        if host.status.message != shown:
            shown = host.status.message
            print(f"{host.name}: {fmt.host_state(host.status.state)}: {shown}")


async def host_balance_explain(_args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.balancing(await client.hosts.explain_balancing()))


async def host_activate(args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.hosts([await client.hosts.activate(args.host, request_id=NO_KEY)]))


async def host_confirm_down(args: argparse.Namespace, client: AsyncClient) -> None:
    fenced = await client.hosts.confirm_down(args.host, request_id=NO_KEY)
    print(fmt.hosts([fenced.host]))
    print(f"VMs now DOWN: {', '.join(fenced.vm_ids) or 'none'}")


def _token_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file",
        type=Path,
        help="write the enrollment token to this file (mode 0600) instead of showing it",
    )


def add_parsers(groups: Any) -> None:
    host = groups.add_parser("host", help="hosts").add_subparsers(dest="verb", required=True)
    add = host.add_parser("add", help="register a hostd")
    add.add_argument("name")
    add.add_argument("address", help="hostd address, host:port")
    _token_file_argument(add)
    add.set_defaults(run=host_add)
    host.add_parser("list", help="list hosts").set_defaults(run=host_list)
    token = host.add_parser(
        "enroll-token", help="a new one-time enrollment token for a host not enrolled yet"
    )
    token.add_argument("host", help="id or name")
    token.add_argument(
        "--ttl-seconds", type=int, default=0, help="how long it lasts (default: the controller's)"
    )
    _token_file_argument(token)
    token.set_defaults(run=host_enroll_token)
    maintenance = host.add_parser(
        "maintenance", help="take a host out of service, migrating its VMs away first"
    )
    maintenance.add_argument("host", help="id or name")
    maintenance.add_argument(
        "--no-wait", action="store_true", help="answer at once; do not show the evacuation"
    )
    maintenance.set_defaults(run=host_maintenance)
    host.add_parser(
        "balance-explain", help="what the cluster's balancer would migrate now, and why"
    ).set_defaults(run=host_balance_explain)
    for verb, run, what in (
        ("remove", host_remove, "forget a host no VM is placed on"),
        ("activate", host_activate, "bring a host back from maintenance"),
        ("confirm-down", host_confirm_down, "fence: confirm a NON_RESPONSIVE host is off"),
    ):
        sub = host.add_parser(verb, help=what)
        sub.add_argument("host", help="id or name")
        sub.set_defaults(run=run)
