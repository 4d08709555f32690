"""virtplane-hostd: the command line entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from hostd.config import VIRT_TYPE_SETTINGS, EnrollmentConfig, HostdConfig, MigrationConfig
from hostd.enrollment import TOKEN_ENV, EnrollmentFailed, read_token
from hostd.server import Hostd
from virtplane_common import logs
from virtplane_common.errors import VirtplaneError
from virtplane_common.properties import add_rule_argument

log = logging.getLogger("hostd")


def parse_args(argv: list[str] | None = None) -> tuple[HostdConfig, logs.LogSettings]:
    defaults = HostdConfig()
    parser = argparse.ArgumentParser(
        prog="virtplane-hostd", description="virtplane's per-host agent: runs VMs with libvirt."
    )
    parser.add_argument("--listen", default=defaults.listen, help="host:port to serve gRPC on")
    parser.add_argument("--libvirt-uri", default=defaults.libvirt_uri)
    parser.add_argument("--state-dir", type=Path, default=defaults.state_dir)
    parser.add_argument("--virt-type", choices=VIRT_TYPE_SETTINGS, default=defaults.virt_type)
    _size_arguments(parser, defaults)
    _migration_arguments(parser, defaults.migration)
    parser.add_argument(
        "--hooks-dir",
        type=Path,
        default=defaults.hooks_dir,
        help="folder of hook scripts, one sub-folder per hook point (default: no hooks)",
    )
    parser.add_argument(
        "--hook-timeout",
        type=float,
        default=defaults.hook_timeout_seconds,
        help="seconds a hook script may run before it is killed",
    )
    _libvirt_call_arguments(parser, defaults)
    _admission_arguments(parser)
    _identity_arguments(parser)
    _observability_arguments(parser, defaults.metrics_listen)
    args = parser.parse_args(argv)
    try:
        token = read_token(args.enroll_token_file, dict(os.environ))
    except EnrollmentFailed as exc:
        parser.error(str(exc))
    config = HostdConfig(
        listen=args.listen,
        libvirt_uri=args.libvirt_uri,
        state_dir=args.state_dir.absolute(),
        virt_type=args.virt_type,
        journal_size=args.journal_size,
        journal_max_bytes=args.journal_max_bytes,
        list_guest_budget_bytes=args.list_guest_budget_bytes,
        migration=_migration_config(args),
        hooks_dir=args.hooks_dir.absolute() if args.hooks_dir else None,
        hook_timeout_seconds=args.hook_timeout,
        libvirt_call_timeout_seconds=args.libvirt_call_timeout,
        libvirt_threads=args.libvirt_threads,
        image_roots=tuple(r.absolute() for r in args.image_root or defaults.image_roots),
        vm_properties=dict(args.vm_property or ()),
        metrics_listen=args.metrics_listen,
        insecure_plaintext_dev=args.insecure_plaintext_dev,
        enrollment=EnrollmentConfig(
            controller=args.controller,
            controller_ca=args.controller_ca.absolute() if args.controller_ca else None,
            token=token,
        ),
    )
    return config, logs.settings(args)


def _observability_arguments(parser: argparse.ArgumentParser, metrics_listen: str) -> None:
    """The log's level and format; the metrics endpoint (hostd.metrics)."""
    logs.add_arguments(parser, ["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--metrics-listen",
        default=metrics_listen,
        metavar="HOST:PORT",
        help="serve Prometheus metrics over plain HTTP at /metrics here (default: off)",
    )


def _migration_config(args: argparse.Namespace) -> MigrationConfig:
    return MigrationConfig(
        max_outgoing=args.max_outgoing_migrations,
        max_incoming_pending=args.max_incoming_migrations,
        address=args.migration_address,
        peer_hypervisor_uri=args.peer_hypervisor_uri,
        tls=not args.insecure_plaintext_dev,
        qemu_tls_dir=args.qemu_tls_dir.absolute(),
    )


def _libvirt_call_arguments(parser: argparse.ArgumentParser, defaults: HostdConfig) -> None:
    parser.add_argument(
        "--libvirt-call-timeout",
        type=float,
        default=defaults.libvirt_call_timeout_seconds,
        help="seconds one libvirt call may take before it fails UNAVAILABLE",
    )
    parser.add_argument(
        "--libvirt-threads",
        type=int,
        default=defaults.libvirt_threads,
        help="threads blocking libvirt calls run on",
    )


def _migration_arguments(parser: argparse.ArgumentParser, defaults: MigrationConfig) -> None:
    parser.add_argument(
        "--max-outgoing-migrations",
        type=int,
        default=defaults.max_outgoing,
        help="outgoing live migrations at once; more are refused (RESOURCE_EXHAUSTED)",
    )
    parser.add_argument(
        "--max-incoming-migrations",
        type=int,
        default=defaults.max_incoming_pending,
        help="prepared incoming migrations at once; more are refused (RESOURCE_EXHAUSTED)",
    )
    parser.add_argument(
        "--migration-address",
        default=defaults.address,
        help="the address this host receives migrated VMs on",
    )
    parser.add_argument(
        "--qemu-tls-dir",
        type=Path,
        default=defaults.qemu_tls_dir,
        metavar="DIR",
        help="where QEMU reads this host's certificate for TLS migration: the folder"
        " libvirtd's qemu.conf names as migrate_tls_x509_cert_dir",
    )
    parser.add_argument(
        "--peer-hypervisor-uri",
        metavar="TEMPLATE",
        default=defaults.peer_hypervisor_uri,
        help="how this host's libvirt reaches a migration's destination: {host_id} and"
        " {address_host} (of its address) are filled in (default: %(default)s)",
    )


def _identity_arguments(parser: argparse.ArgumentParser) -> None:
    """Who this host is (hostd.identity) and how it gets its identity (hostd.enrollment)."""
    parser.add_argument(
        "--controller", default="", metavar="ADDR", help="the controller's host:port, to enroll"
    )
    parser.add_argument(
        "--controller-ca", type=Path, metavar="FILE", help="the controller's CA certificate"
    )
    parser.add_argument(
        "--enroll-token-file",
        type=Path,
        metavar="FILE",
        help=f"a one-time enrollment token from AddHost (or env {TOKEN_ENV}); needed once",
    )
    parser.add_argument(
        "--insecure-plaintext-dev",
        action="store_true",
        help="serve plaintext, check no caller and migrate memory in clear:"
        " development only, never on a network",
    )


def _size_arguments(parser: argparse.ArgumentParser, defaults: HostdConfig) -> None:
    """How much hostd keeps of its events and hands out of its guests' facts."""
    parser.add_argument("--journal-size", type=int, default=defaults.journal_size)
    parser.add_argument("--journal-max-bytes", type=int, default=defaults.journal_max_bytes)
    parser.add_argument(
        "--list-guest-budget-bytes",
        type=int,
        default=defaults.list_guest_budget_bytes,
        help="the most the guest facts of one VM list may weigh; past it VMs are listed without",
    )


def _admission_arguments(parser: argparse.ArgumentParser) -> None:
    """What hostd accepts in a VM's configuration, whoever asks (hostd.validation)."""
    parser.add_argument(
        "--image-root",
        type=Path,
        action="append",
        metavar="DIR",
        help="kernels, initrds and disk images must be files under DIR; repeatable"
        f" (default: {', '.join(map(str, HostdConfig.image_roots))})",
    )
    add_rule_argument(parser)


async def serve(config: HostdConfig) -> None:
    """Runs hostd until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if not config.migration.tls:
        log.warning(
            "INSECURE (--insecure-plaintext-dev): migrated VMs' memory crosses the network"
            " in clear; for development only"
        )
    hostd = Hostd(config)
    try:
        port = await hostd.start()
        host = config.listen.rpartition(":")[0]
        log.info("hostd listening on %s:%d", host, port)
        await stop.wait()
        log.info("hostd stopping")
    finally:
        await hostd.stop()
    log.info("hostd stopped")


def main(argv: list[str] | None = None) -> None:
    config, log_settings = parse_args(argv)
    log_settings.apply()
    try:
        asyncio.run(serve(config))
    except (VirtplaneError, OSError) as exc:
        log.error("hostd cannot run: %s", exc)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
