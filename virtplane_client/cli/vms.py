"""`virtplane vm …`: virtual machines — define, list, show, change, the power
verbs, the guest agent's report, placement explained, delete, watch."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from typing import Any

from virtplane_client.aio import AsyncClient
from virtplane_client.cli import format as fmt
from virtplane_client.cli import migration, ops
from virtplane_client.models import (
    BootSource,
    Disk,
    DiskFormat,
    Nic,
    NicKind,
    VerbResult,
    Vm,
    VmSpec,
    VmState,
    VmUpdate,
)

_DISK_FORMATS = {"raw": DiskFormat.RAW, "qcow2": DiskFormat.QCOW2}


def parse_disk(text: str) -> Disk:
    """A --disk option, PATH[:raw|:qcow2][:ro] (named in vm_create)."""
    path, *options = text.split(":")
    disk = Disk(path=os.path.abspath(path))
    for option in options:
        if option in _DISK_FORMATS:
            disk = dataclasses.replace(disk, format=_DISK_FORMATS[option])
        elif option == "ro":
            disk = dataclasses.replace(disk, read_only=True)
        else:
            raise argparse.ArgumentTypeError(f"{option!r} is not raw, qcow2 or ro")
    return disk


def parse_property(text: str) -> tuple[str, str]:
    """A --property option, KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _nic(index: int, option: str) -> Nic:
    if option == "user":
        return Nic(name=f"nic{index}", kind=NicKind.USER)
    return Nic(name=f"nic{index}", kind=NicKind.NETWORK, network=option)


async def vm_create(args: argparse.Namespace, client: AsyncClient) -> None:
    spec = VmSpec(
        vcpus=args.vcpus,
        memory_mib=args.memory,
        boot=BootSource(
            kernel_path=args.kernel or "",
            initrd_path=args.initrd or "",
            cmdline=args.cmdline,
        ),
        nics=tuple(_nic(i, nic) for i, nic in enumerate(args.nic)),
        disks=tuple(dataclasses.replace(d, name=f"disk{i}") for i, d in enumerate(args.disk)),
        highly_available=args.highly_available,
        pinned_host=args.pinned_host,
        start_paused=args.start_paused,
        custom_properties=dict(args.property),
    )
    vm = await client.vms.create(args.name, spec, request_id=ops.request_id(args))
    print(fmt.vm_detail(vm))


async def vm_list(args: argparse.Namespace, client: AsyncClient) -> None:
    found = await client.vms.list(
        states=[VmState[s] for s in args.state], host=args.host, name_contains=args.name
    )
    print(fmt.vms(found, await client.hosts.names()))


async def vm_show(args: argparse.Namespace, client: AsyncClient) -> None:
    print(fmt.vm_detail(await client.vms.get(args.vm), await client.hosts.names()))


async def vm_guest(args: argparse.Namespace, client: AsyncClient) -> None:
    if args.refresh:
        await client.vms.refresh_guest_report(args.vm)
        print(f"asked the guest agent of {args.vm} for a full report", file=sys.stderr)
    report = await client.vms.guest_report(args.vm, raw=args.raw)
    if not args.raw:
        print(fmt.guest_facts(report.facts, verbose=args.values))
        return
    raw = report.raw_report
    if raw is None or not raw.report_json:
        raise SystemExit(f"no raw report: {raw.unavailable_reason if raw else ''}")
    received = fmt.utc(raw.received_time).strftime("%Y-%m-%d %H:%M:%S")
    cut = " (cut at 512 KiB)" if raw.truncated else ""
    print(f"received {received} UTC by host {raw.host_id}{cut}", file=sys.stderr)
    print(raw.report_json)


def _update(args: argparse.Namespace) -> VmUpdate:
    """The changes the options name."""
    yes_no = {None: None, "yes": True, "no": False}
    return VmUpdate(
        name=args.rename or None,
        vcpus=args.vcpus,
        memory_mib=args.memory,
        kernel_path=args.kernel,
        initrd_path=args.initrd,
        cmdline=args.cmdline,
        highly_available=yes_no[args.highly_available],
        pinned_host=args.pinned_host,
        start_paused=yes_no[args.start_paused],
    )


async def vm_update(args: argparse.Namespace, client: AsyncClient) -> None:
    """Changes what the options name, against the version just read, so
    that a concurrent update is never overwritten."""
    current = await client.vms.get(args.vm)
    vm = await client.vms.update(
        current.id,
        _update(args),
        expected_spec_version=current.spec_version,
        request_id=ops.request_id(args),
    )
    print(fmt.vm_detail(vm, await client.hosts.names()))


async def vm_explain(args: argparse.Namespace, client: AsyncClient) -> None:
    explained = await client.vms.explain_placement(args.vm, for_migration=args.migration)
    print(fmt.placement(explained))


async def vm_verb(args: argparse.Namespace, client: AsyncClient) -> None:
    """start, stop, shutdown, reboot, reset, pause, resume or hibernate."""
    verb = getattr(client.vms, args.verb)
    done: VerbResult = await verb(args.vm, request_id=ops.request_id(args))
    print(f"{done.vm.name}: {fmt.vm_state(done.vm.status.state)}")
    await ops.show_operation(args, client, done.operation)


async def vm_migrate(args: argparse.Namespace, client: AsyncClient) -> None:
    """migrate, or cancel-migration."""
    if args.verb == "cancel-migration":
        done = await client.vms.cancel_migration(args.vm, request_id=ops.request_id(args))
    else:
        done = await client.vms.migrate(
            args.vm,
            to=args.to,
            request_id=ops.request_id(args),
            max_downtime_ms=args.max_downtime_ms,
            auto_converge=args.auto_converge,
            post_copy=args.post_copy,
            stall_seconds=args.stall_seconds,
        )
    names = await client.hosts.names()
    to = names.get(done.operation.host_id, done.operation.host_id)
    print(f"{done.vm.name}: {fmt.vm_state(done.vm.status.state)}, to host {to}")
    if args.verb == "migrate" and args.wait:
        print(fmt.operation(await migration.follow(client, done.operation, args.wait_seconds)))
        return
    await ops.show_operation(args, client, done.operation)


def _convergence_options(parser: argparse.ArgumentParser) -> None:
    """This migration's policy; each option left out: the cluster's."""
    parser.add_argument(
        "--max-downtime-ms", type=int, metavar="MS", help="longest pause at the switch-over"
    )
    parser.add_argument(
        "--auto-converge",
        action=argparse.BooleanOptionalAction,
        help="throttle the guest while it dirties memory faster than it is sent",
    )
    parser.add_argument(
        "--post-copy",
        action=argparse.BooleanOptionalAction,
        help="switch to post-copy when it stalls, rather than abort",
    )
    parser.add_argument(
        "--stall-seconds",
        type=int,
        metavar="S",
        help="abort (or switch to post-copy) when the data remaining has not shrunk for S s",
    )


async def vm_delete(args: argparse.Namespace, client: AsyncClient) -> None:
    await client.vms.delete(args.vm, request_id=ops.request_id(args))
    print(f"{args.vm}: deleted")


def _reported(vm: Vm) -> bool:
    g = vm.status.guest
    return bool(g and fmt.addresses(g) and g.os_name and g.application_count and g.uptime_seconds)


async def vm_watch(args: argparse.Namespace, client: AsyncClient) -> None:
    """Prints every change; with --until-guest, stops once that VM's guest has
    reported its IP, OS, applications and uptime."""
    names = await client.hosts.names()
    start = time.monotonic()
    changes = client.vms.watch(vm_ids=args.vm, host=args.host, after_revision=args.after_revision)
    async with contextlib.aclosing(changes):
        async for change in changes:
            vm = change.vm
            if vm is None:  # SNAPSHOT_COMPLETE
                what = "changes since" if change.resumed else "snapshot complete at"
                note = f" ({change.reason})" if change.reason else ""
                print(f"{'':>7}  -- {what} revision {change.revision}{note}; watching --")
                continue
            kind = change.kind.name.lower()
            host = names.get(vm.status.host_id, vm.status.host_id) or "-"
            detail = fmt.guest_summary(vm.status.guest) or fmt.exit_reason(vm.status.exit_reason)
            print(
                f"{time.monotonic() - start:6.2f}s  rev {change.revision:<5} {kind:<8} "
                f"{vm.name:<12} {fmt.vm_state(vm.status.state):<16} host={host:<10} {detail}",
                flush=True,
            )
            if args.until_guest and args.until_guest in (vm.name, vm.id) and _reported(vm):
                return


def _info_parsers(vm: Any) -> None:
    explain = vm.add_parser(
        "explain", help="where StartVm (or MigrateVm) would place a VM, and why"
    )
    explain.add_argument("vm", help="id or name")
    explain.add_argument(
        "--migration", action="store_true", help="where MigrateVm would move the VM instead"
    )
    explain.set_defaults(run=vm_explain)
    guest = vm.add_parser("guest", help="what the guest agent reported, fact by fact")
    guest.add_argument("vm", help="id or name")
    guest.add_argument("--values", action="store_true", help="print each value in full")
    guest.add_argument(
        "--raw", action="store_true", help="print the agent's last report as it sent it (JSON)"
    )
    guest.add_argument(
        "--refresh", action="store_true", help="ask the agent for a full report first"
    )
    guest.set_defaults(run=vm_guest)


def _create_parser(vm: Any) -> None:
    create = vm.add_parser("create", help="define a VM")
    create.add_argument("name")
    create.add_argument("--vcpus", type=int, default=1)
    create.add_argument("--memory", type=int, default=0, help="MiB")
    create.add_argument("--kernel", type=os.path.abspath, default=None)
    create.add_argument("--initrd", type=os.path.abspath, default=None)
    create.add_argument("--cmdline", default="")
    create.add_argument(
        "--nic", action="append", default=[], help="'user', or a libvirt network name"
    )
    ops.request_id_option(create)
    create.add_argument(
        "--highly-available", action="store_true", help="restart it after a crash or host failure"
    )
    create.add_argument("--pinned-host", default="", help="run it only on this host (id or name)")
    create.add_argument("--start-paused", action="store_true", help="start it with its CPUs paused")
    create.add_argument(
        "--disk",
        action="append",
        default=[],
        type=parse_disk,
        metavar="PATH[:qcow2][:ro]",
        help="a disk image on the host (repeatable; raw unless :qcow2)",
    )
    create.add_argument(
        "--property",
        action="append",
        default=[],
        type=parse_property,
        metavar="KEY=VALUE",
        help="a custom property for the host's hook scripts (repeatable)",
    )
    create.set_defaults(run=vm_create)


def _update_parser(vm: Any) -> None:
    update = vm.add_parser(
        "update", help="change a VM; what needs a restart waits for its next start"
    )
    update.add_argument("vm", help="id or name")
    update.add_argument("--name", dest="rename", default="", help="a new name")
    update.add_argument("--vcpus", type=int)
    update.add_argument("--memory", type=int, help="MiB")
    update.add_argument("--kernel", type=os.path.abspath)
    update.add_argument("--initrd", type=os.path.abspath)
    update.add_argument("--cmdline")
    update.add_argument(
        "--highly-available", choices=["yes", "no"], help="restart it after a crash (at once)"
    )
    update.add_argument("--pinned-host", help="run it only on this host; '' for any host (at once)")
    update.add_argument(
        "--start-paused", choices=["yes", "no"], help="start it with its CPUs paused (at once)"
    )
    ops.request_id_option(update)
    update.set_defaults(run=vm_update)


def _watch_parser(vm: Any) -> None:
    watch = vm.add_parser("watch", help="stream VM changes")
    watch.add_argument("--until-guest", metavar="VM", help="stop once VM's guest has reported")
    watch.add_argument("--vm", action="append", default=[], help="only this VM id (repeatable)")
    watch.add_argument("--host", default="", help="only VMs on this host")
    watch.add_argument(
        "--after-revision", type=int, default=0, help="only the changes after this revision"
    )
    watch.set_defaults(run=vm_watch)


def _list_parsers(vm: Any) -> None:
    listing = vm.add_parser("list", help="list VMs")
    listing.add_argument(
        "--state",
        action="append",
        default=[],
        type=str.upper,
        choices=[s.name for s in VmState if s is not VmState.UNSPECIFIED],
        help="only VMs in this state (repeatable)",
    )
    listing.add_argument("--host", default="", help="only VMs on this host")
    listing.add_argument("--name", default="", help="only VMs whose name contains this")
    listing.set_defaults(run=vm_list)
    show = vm.add_parser("show", help="show a VM")
    show.add_argument("vm", help="id or name")
    show.set_defaults(run=vm_show)


# The verbs that return an operation, in the order `virtplane vm -h` lists them.
VERBS = ("start", "stop", "shutdown", "reboot", "reset", "pause", "resume", "hibernate")


def add_parsers(groups: Any) -> None:
    vm = groups.add_parser("vm", help="virtual machines").add_subparsers(dest="verb", required=True)
    _create_parser(vm)
    _update_parser(vm)
    _list_parsers(vm)
    for verb in VERBS:
        sub = vm.add_parser(verb, help=f"{verb} a VM; prints its operation")
        sub.add_argument("vm", help="id or name")
        ops.request_id_option(sub)
        ops.wait_options(sub, wait=True)
        sub.set_defaults(run=vm_verb)
    migrate = vm.add_parser("migrate", help="move an UP VM live to another host")
    migrate.add_argument("vm", help="id or name")
    migrate.add_argument(
        "--to", default="", metavar="HOST", help="the destination host (default: the scheduler's)"
    )
    _convergence_options(migrate)
    ops.request_id_option(migrate)
    ops.wait_options(migrate, wait=True)
    migrate.set_defaults(run=vm_migrate)
    cancel = vm.add_parser("cancel-migration", help="cancel a VM's migration under way")
    cancel.add_argument("vm", help="id or name")
    ops.request_id_option(cancel)
    cancel.set_defaults(run=vm_migrate)
    _info_parsers(vm)
    delete = vm.add_parser("delete", help="delete a DOWN VM")
    delete.add_argument("vm", help="id or name")
    ops.request_id_option(delete)
    delete.set_defaults(run=vm_delete)
    _watch_parser(vm)
