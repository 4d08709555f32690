"""virtplane-controller: the engine's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from controller.app import Controller
from controller.config import ControllerConfig
from virtplane_common.properties import add_rule_argument


def parse(argv: list[str] | None = None) -> tuple[ControllerConfig, str]:
    defaults = ControllerConfig()
    parser = argparse.ArgumentParser(prog="virtplane-controller", description=__doc__)
    parser.add_argument("--listen", default=defaults.listen, help="gRPC address, host:port")
    parser.add_argument(
        "--database",
        default=defaults.database_url,
        help="SQLAlchemy URL (default %(default)s; PostgreSQL: postgresql+psycopg://…)",
    )
    add_rule_argument(parser)
    parser.add_argument("--log-level", default="INFO")
    # Clients' authentication (controller.auth).
    parser.add_argument(
        "--require-auth",
        action="store_true",
        help="every call needs a token or a client certificate (SECURITY.md)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=defaults.state_dir,
        help="where the first start writes the admin's token (admin.token)",
    )
    # Host identity (controller.enrollment).
    parser.add_argument("--ca-cert", type=Path, help="the operator's CA certificate (PEM)")
    parser.add_argument("--ca-key", type=Path, help="the operator's CA key (PEM)")
    parser.add_argument(
        "--host-cert-days", type=float, default=defaults.host_cert_days,
        help="hosts' certificate lifetime in days (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--enrollment-token-minutes", type=float, default=defaults.enrollment_token_minutes,
        help="how long an enrollment token is valid (default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    config = ControllerConfig(
        listen=args.listen,
        database_url=args.database,
        vm_properties=dict(args.vm_property or ()),
        require_auth=args.require_auth,
        state_dir=args.state_dir,
        ca_cert=args.ca_cert,
        ca_key=args.ca_key,
        host_cert_days=args.host_cert_days,
        enrollment_token_minutes=args.enrollment_token_minutes,
    )
    return config, args.log_level


async def serve(config: ControllerConfig) -> None:
    controller = Controller(config)
    await controller.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger(__name__).info("stopping")
    await controller.stop()


def main(argv: list[str] | None = None) -> None:
    config, level = parse(argv)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
