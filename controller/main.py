"""virtplane-controller: the engine's command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from controller.app import Controller
from controller.balancing import BalancePolicy, BalanceSettings
from controller.config import ControllerConfig
from controller.lifecycle.migration_limits import MigrationLimits
from controller.lifecycle.migration_policy import MigrationPolicy
from virtplane_common import logs
from virtplane_common.properties import add_rule_argument

log = logging.getLogger(__name__)


def parse(argv: list[str] | None = None) -> tuple[ControllerConfig, logs.LogSettings]:
    defaults = ControllerConfig()
    parser = argparse.ArgumentParser(prog="virtplane-controller", description=__doc__)
    _add_addresses(parser, defaults)
    parser.add_argument(
        "--database",
        default=defaults.database_url,
        help="SQLAlchemy URL (default %(default)s; PostgreSQL: postgresql+psycopg://…)",
    )
    parser.add_argument(
        "--max-streams-per-client",
        type=int,
        default=defaults.max_streams_per_client,
        help="WatchVms and WaitOperation calls one client may have open (default %(default)s)",
    )
    parser.add_argument(
        "--migration-max-bandwidth",
        type=int,
        default=defaults.migration_max_bandwidth_mib,
        metavar="MIB",
        help="caps each live migration's transfer, MiB/s (default %(default)s: no cap)",
    )
    _add_migration_limits(parser, defaults.migration_limits)
    _add_balancing(parser, defaults.balancing)
    _add_migration_policy(parser, defaults.migration_policy)
    add_rule_argument(parser)
    logs.add_arguments(parser)
    _add_security_arguments(parser, defaults)
    args = parser.parse_args(argv)
    config = ControllerConfig(
        listen=args.listen,
        listen_mtls=args.listen_mtls,
        database_url=args.database,
        max_streams_per_client=args.max_streams_per_client,
        migration_max_bandwidth_mib=args.migration_max_bandwidth,
        migration_limits=MigrationLimits(
            args.migrations_out_per_host, args.migrations_in_per_host, args.migrations_per_cluster
        ),
        balancing=_balancing(parser, args),
        migration_policy=_migration_policy(parser, args),
        vm_properties=dict(args.vm_property or ()),
        require_auth=args.require_auth,
        state_dir=args.state_dir,
        ca_cert=args.ca_cert,
        ca_key=args.ca_key,
        server_names=tuple(args.server_name or ()),
        controller_cert_days=args.controller_cert_days,
        host_cert_days=args.host_cert_days,
        enrollment_token_minutes=args.enrollment_token_minutes,
        insecure_plaintext_dev=args.insecure_plaintext_dev,
        plaintext_hosts=args.plaintext_hosts_dev,
        metrics_listen=args.metrics_listen,
        web_listen=args.web_listen,
        web_root=args.web_root,
    )
    return config, logs.settings(args)


def _add_addresses(parser: argparse.ArgumentParser, defaults: ControllerConfig) -> None:
    """Where the controller listens: gRPC, gRPC with mutual TLS, metrics."""
    parser.add_argument(
        "--listen", default=defaults.listen, help="gRPC address, host:port (TLS; tokens)"
    )
    parser.add_argument(
        "--listen-mtls",
        default="",
        help="address for mutual TLS (clients present a certificate the CA signed)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=defaults.metrics_listen,
        metavar="HOST:PORT",
        help="serve Prometheus metrics over plain HTTP at /metrics here (default: off)",
    )


def _add_web_arguments(parser: argparse.ArgumentParser, defaults: ControllerConfig) -> None:
    parser.add_argument(
        "--web-listen",
        default=defaults.web_listen,
        help="the web page's address, host:port (TLS as --listen; default: no page)",
    )
    parser.add_argument(
        "--web-root", type=Path, default=defaults.web_root, help="the built page (make web)"
    )


def _add_migration_limits(parser: argparse.ArgumentParser, defaults: MigrationLimits) -> None:
    """How many live migrations run at once; more wait their turn."""
    for flag, default, what in (
        ("--migrations-out-per-host", defaults.outgoing_per_host, "from one host"),
        ("--migrations-in-per-host", defaults.incoming_per_host, "to one host"),
        ("--migrations-per-cluster", defaults.cluster, "in the cluster"),
    ):
        parser.add_argument(
            flag,
            type=int,
            default=default,
            metavar="N",
            help=f"live migrations at once {what} (default %(default)s)",
        )


def _add_balancing(parser: argparse.ArgumentParser, defaults: BalanceSettings) -> None:
    """The cluster's balancing policy (controller.balancing)."""
    parser.add_argument(
        "--balance-policy",
        choices=[p.value for p in BalancePolicy],
        default=defaults.policy.value,
        help="move VMs off a host that stays over the high threshold (default %(default)s)",
    )
    for flag, kind, default, what in (
        ("--balance-high-percent", int, defaults.high_percent, "a host over this is loaded"),
        ("--balance-low-percent", int, defaults.low_percent, "a host under this takes VMs"),
        ("--balance-sustained-seconds", float, defaults.sustained_seconds, "over for this long"),
        ("--balance-interval-seconds", float, defaults.interval_seconds, "between looks"),
    ):
        parser.add_argument(
            flag,
            type=kind,
            default=default,
            metavar=flag.rsplit("-", 1)[1].upper(),
            help=f"{what} (default %(default)s)",
        )


def _balancing(parser: argparse.ArgumentParser, args: argparse.Namespace) -> BalanceSettings:
    """The --balance-* flags' settings; exits naming thresholds that make no sense."""
    try:
        return BalanceSettings(
            BalancePolicy(args.balance_policy),
            args.balance_high_percent,
            args.balance_low_percent,
            args.balance_sustained_seconds,
            args.balance_interval_seconds,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _add_migration_policy(parser: argparse.ArgumentParser, defaults: MigrationPolicy) -> None:
    """How live migrations converge (controller.lifecycle.migration_policy);
    MigrateVm may override each setting per call."""
    for flag, default, what in (
        ("--migration-max-downtime-ms", defaults.max_downtime_ms, "longest switch-over pause"),
        ("--migration-stall-seconds", defaults.stall_seconds, "abort when the data remaining"
         " has not shrunk below its lowest for this long"),
        ("--migration-completion-timeout-seconds", defaults.completion_timeout_seconds,
         "the backstop: abort when still transferring after this long"),
    ):  # fmt: skip
        parser.add_argument(
            flag,
            type=int,
            default=default,
            metavar="MS" if flag.endswith("-ms") else "S",
            help=f"{what} (default %(default)s; 0: off)",
        )
    for flag, default, what in (
        ("--migration-auto-converge", defaults.auto_converge, "throttle a guest that dirties"
         " memory faster than it is sent"),
        ("--migration-allow-post-copy", defaults.allow_post_copy, "a stalled (or timed out)"
         " migration switches to post-copy rather than being aborted"),
    ):  # fmt: skip
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=what)


def _migration_policy(parser: argparse.ArgumentParser, args: argparse.Namespace) -> MigrationPolicy:
    for name in ("max_downtime_ms", "stall_seconds", "completion_timeout_seconds"):
        value = getattr(args, f"migration_{name}")
        if value < 0:
            parser.error(f"--migration-{name.replace('_', '-')}: {value} is negative; 0 is off")
    return MigrationPolicy(
        max_downtime_ms=args.migration_max_downtime_ms,
        auto_converge=args.migration_auto_converge,
        allow_post_copy=args.migration_allow_post_copy,
        stall_seconds=args.migration_stall_seconds,
        completion_timeout_seconds=args.migration_completion_timeout_seconds,
    )


def _add_security_arguments(parser: argparse.ArgumentParser, defaults: ControllerConfig) -> None:
    """TLS, the CA and clients' authentication (SECURITY.md)."""
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=defaults.state_dir,
        help="where the CA, the controller's key pair (pki/) and the admin's token live",
    )
    parser.add_argument(
        "--require-auth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every call needs a token or a client certificate (default: on, unless"
        " --insecure-plaintext-dev; --no-require-auth: development only)",
    )
    parser.add_argument("--ca-cert", type=Path, default=None, help="your own CA's certificate")
    parser.add_argument("--ca-key", type=Path, default=None, help="your own CA's key")
    parser.add_argument(
        "--server-name",
        action="append",
        help="a DNS name or IP address of the controller's certificate (repeatable;"
        " default localhost, 127.0.0.1, ::1 and the --listen host)",
    )
    for flag, default in (
        ("--controller-cert-days", defaults.controller_cert_days),
        ("--host-cert-days", defaults.host_cert_days),
    ):
        parser.add_argument(flag, type=float, default=default, help="lifetime (days)")
    parser.add_argument(
        "--enrollment-token-minutes", type=float, default=defaults.enrollment_token_minutes
    )
    parser.add_argument(
        "--insecure-plaintext-dev",
        action="store_true",
        help="DEVELOPMENT ONLY: plaintext to clients and hosts, no authentication",
    )
    parser.add_argument(
        "--plaintext-hosts-dev",
        action="store_true",
        help="DEVELOPMENT ONLY: plaintext to hosts that have no identity yet",
    )
    _add_web_arguments(parser, defaults)  # served as the gRPC port: TLS unless plaintext


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
    config, log_settings = parse(argv)
    log_settings.apply()
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        log.error("the controller cannot run: %s", exc)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
