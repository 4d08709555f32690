"""`virtplane login`, `virtplane principal …` and `virtplane token …`: the
CLI's credential, and the principals and tokens of the controller (admin)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any

from virtplane_client.aio import AsyncClient
from virtplane_client.cli import config
from virtplane_client.principals import Principal, PrincipalKind, Role, Token


def login(args: argparse.Namespace) -> None:
    """Stores the address, the CA's path and the token in the config file."""
    path = config.config_path()
    settings = dataclasses.replace(
        config.read(path),
        address=args.address,
        ca=str(Path(args.ca).resolve()) if args.ca else "",
        token=Path(args.token_file).read_text().strip() if args.token_file else "",
        cert=str(Path(args.cert).resolve()) if args.cert else "",
        key=str(Path(args.key).resolve()) if args.key else "",
    )
    settings.credentials()  # refuses a certificate without its key, and the reverse
    config.write(path, settings)
    print(f"logged in to {args.address}; settings saved in {path}")


def _principal_line(p: Principal) -> str:
    return f"{p.name}  {p.role.value}  {p.kind.value}"


def _token_line(t: Token) -> str:
    expires = t.expires_at.isoformat(timespec="seconds") if t.expires_at else "-"
    state = "revoked" if t.revoked else f"expires {expires}"
    return f"{t.id}  {t.principal}  {state}"


async def principal_create(args: argparse.Namespace, client: AsyncClient) -> None:
    kind = PrincipalKind.SERVICE_ACCOUNT if args.service_account else PrincipalKind.USER
    print(_principal_line(await client.principals.create(args.name, Role(args.role), kind)))


async def principal_list(_args: argparse.Namespace, client: AsyncClient) -> None:
    found = await client.principals.list()
    print("\n".join(_principal_line(p) for p in found) or "no principals")


async def principal_delete(args: argparse.Namespace, client: AsyncClient) -> None:
    await client.principals.delete(args.name)
    print(f"{args.name}: deleted")


def _write_private(path: Path, data: bytes) -> None:
    """Writes a new file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


async def principal_certificate(args: argparse.Namespace, client: AsyncClient) -> None:
    csr = await asyncio.to_thread(Path(args.csr).read_bytes)
    cert, _ca = await client.principals.issue_certificate(args.name, csr)
    await asyncio.to_thread(Path(args.out).write_bytes, cert)
    print(f"certificate of {args.name} written to {args.out}")


async def token_create(args: argparse.Namespace, client: AsyncClient) -> None:
    ttl = dt.timedelta(days=args.ttl_days) if args.ttl_days else None
    made = await client.principals.create_token(args.principal, ttl)
    await asyncio.to_thread(_write_private, Path(args.out), (made.secret + "\n").encode())
    print(f"{_token_line(made.token)}; its secret is in {args.out}")


async def token_list(args: argparse.Namespace, client: AsyncClient) -> None:
    found = await client.principals.tokens(args.principal)
    print("\n".join(_token_line(t) for t in found) or "no tokens")


async def token_revoke(args: argparse.Namespace, client: AsyncClient) -> None:
    await client.principals.revoke_token(args.id)
    print(f"{args.id}: revoked")


def add_login_parser(groups: Any) -> None:
    sub = groups.add_parser("login", help="store the controller's address and a credential")
    sub.add_argument("--address", required=True, help="controller address, host:port")
    sub.add_argument("--ca", help="the CA certificate (PEM) the controller's is signed by")
    sub.add_argument("--token-file", help="a file holding an API token")
    sub.add_argument("--cert", help="a client certificate (PEM), with --key")
    sub.add_argument("--key", help="the client certificate's key (PEM)")
    sub.set_defaults(run=None)


def add_parsers(groups: Any) -> None:
    add_login_parser(groups)
    principal = groups.add_parser("principal", help="principals (admin)")
    verbs = principal.add_subparsers(dest="verb", required=True)
    create = verbs.add_parser("create", help="a user or service account with a role")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--service-account", action="store_true")
    create.set_defaults(run=principal_create)
    verbs.add_parser("list", help="list principals").set_defaults(run=principal_list)
    delete = verbs.add_parser("delete", help="delete a principal and its tokens")
    delete.add_argument("name")
    delete.set_defaults(run=principal_delete)
    cert = verbs.add_parser("certificate", help="sign a client certificate from a CSR")
    cert.add_argument("name")
    cert.add_argument("--csr", required=True, help="a PEM certificate signing request")
    cert.add_argument("--out", required=True, help="where to write the certificate")
    cert.set_defaults(run=principal_certificate)
    token = groups.add_parser("token", help="API tokens (admin)")
    tverbs = token.add_subparsers(dest="verb", required=True)
    tcreate = tverbs.add_parser("create", help="a new token; its secret goes to --out (0600)")
    tcreate.add_argument("principal")
    tcreate.add_argument("--ttl-days", type=float, default=0.0)
    tcreate.add_argument("--out", required=True, help="a new file for the secret")
    tcreate.set_defaults(run=token_create)
    tlist = tverbs.add_parser("list", help="list tokens (never their secrets)")
    tlist.add_argument("principal", nargs="?", default="")
    tlist.set_defaults(run=token_list)
    revoke = tverbs.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    revoke.set_defaults(run=token_revoke)
