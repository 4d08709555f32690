"""virtplane: the command line client of the controller."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from virtplane.v1 import vm_pb2
from virtplane.v1 import vm_service_pb2 as vm_api
from virtplane.v1 import vm_service_pb2_grpc as vm_grpc

from controller.cli import affinity, hosts, ops
from controller.cli import format as fmt

Command = Callable[[argparse.Namespace, grpc.aio.Channel], Coroutine[Any, Any, None]]


_DISK_FORMATS = {"raw": vm_pb2.Disk.FORMAT_RAW, "qcow2": vm_pb2.Disk.FORMAT_QCOW2}


def parse_disk(text: str) -> vm_pb2.Disk:
    """A --disk option, PATH[:raw|:qcow2][:ro] (named in vm_create)."""
    path, *options = text.split(":")
    disk = vm_pb2.Disk(path=os.path.abspath(path))
    for option in options:
        if option in _DISK_FORMATS:
            disk.format = _DISK_FORMATS[option]
        elif option == "ro":
            disk.read_only = True
        else:
            raise argparse.ArgumentTypeError(f"{option!r} is not raw, qcow2 or ro")
    return disk


def parse_property(text: str) -> tuple[str, str]:
    """A --property option, KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _named(disk: vm_pb2.Disk, name: str) -> vm_pb2.Disk:
    disk.name = name
    return disk


async def vm_create(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    kinds = {"user": vm_pb2.Nic.KIND_USER}
    nics = []
    for i, nic in enumerate(args.nic):
        kind = kinds.get(nic)
        if kind is None:
            nics.append(vm_pb2.Nic(name=f"nic{i}", kind=vm_pb2.Nic.KIND_NETWORK, network=nic))
        else:
            nics.append(vm_pb2.Nic(name=f"nic{i}", kind=kind))
    spec = vm_pb2.VmSpec(
        vcpus=args.vcpus,
        memory_mib=args.memory,
        boot=vm_pb2.BootSource(
            kernel_path=args.kernel or "",
            initrd_path=args.initrd or "",
            cmdline=args.cmdline,
        ),
        nics=nics,
        disks=[_named(disk, f"disk{i}") for i, disk in enumerate(args.disk)],
        highly_available=args.highly_available,
        pinned_host=args.pinned_host,
        start_paused=args.start_paused,
        custom_properties=dict(args.property),
    )
    reply = await vm_grpc.VmServiceStub(channel).CreateVm(
        vm_api.CreateVmRequest(name=args.name, spec=spec, request_id=args.request_id)
    )
    print(fmt.vm_detail(reply.vm))


async def vm_list(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    stub = vm_grpc.VmServiceStub(channel)
    states = [vm_pb2.Vm.State.Value(f"STATE_{s}") for s in args.state]
    request = vm_api.ListVmsRequest(states=states, host=args.host, name_contains=args.name)
    found: list[vm_pb2.Vm] = []
    while True:  # every page
        reply = await stub.ListVms(request)
        found.extend(reply.vms)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    print(fmt.vms(found, await hosts.names(channel)))


async def vm_show(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await vm_grpc.VmServiceStub(channel).GetVm(vm_api.GetVmRequest(vm=args.vm))
    print(fmt.vm_detail(reply.vm, await hosts.names(channel)))


async def vm_guest(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    stub = vm_grpc.VmServiceStub(channel)
    if args.refresh:
        await stub.RefreshVmGuestInfo(vm_api.RefreshVmGuestInfoRequest(vm=args.vm))
        print(f"asked the guest agent of {args.vm} for a full report", file=sys.stderr)
    reply = await stub.GetVmGuestInfo(
        vm_api.GetVmGuestInfoRequest(vm=args.vm, include_raw_report=args.raw)
    )
    if not args.raw:
        print(fmt.guest_facts(reply.facts, verbose=args.values))
        return
    raw = reply.raw_report
    if not raw.report_json:
        raise SystemExit(f"no raw report: {raw.unavailable_reason}")
    received = raw.received_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    cut = " (cut at 512 KiB)" if raw.truncated else ""
    print(f"received {received} UTC by host {raw.host_id}{cut}", file=sys.stderr)
    print(raw.report_json)


async def vm_start(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await vm_grpc.VmServiceStub(channel).StartVm(
        vm_api.StartVmRequest(vm=args.vm, request_id=args.request_id)
    )
    print(f"{reply.vm.name}: {fmt.vm_state(reply.vm.status.state)}")
    await ops.show_operation(args, channel, reply.operation)


async def vm_stop(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await vm_grpc.VmServiceStub(channel).StopVm(
        vm_api.StopVmRequest(vm=args.vm, request_id=args.request_id)
    )
    print(f"{reply.vm.name}: {fmt.vm_state(reply.vm.status.state)}")
    await ops.show_operation(args, channel, reply.operation)


async def vm_update(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    """Changes what the options name, against the version just read, so
    that a concurrent update is never overwritten."""
    stub = vm_grpc.VmServiceStub(channel)
    current = (await stub.GetVm(vm_api.GetVmRequest(vm=args.vm))).vm
    values = vm_pb2.Vm()
    paths = []
    if args.rename:
        values.name = args.rename
        paths.append("name")
    for option, path in (("vcpus", "spec.vcpus"), ("memory", "spec.memory_mib")):
        if getattr(args, option) is not None:
            setattr(values.spec, path.removeprefix("spec."), getattr(args, option))
            paths.append(path)
    for option in ("kernel", "initrd", "cmdline"):
        if getattr(args, option) is not None:
            field = f"{option}_path" if option != "cmdline" else option
            setattr(values.spec.boot, field, getattr(args, option))
            paths.append(f"spec.boot.{field}")
    if args.highly_available is not None:
        values.spec.highly_available = args.highly_available == "yes"
        paths.append("spec.highly_available")
    if args.pinned_host is not None:
        values.spec.pinned_host = args.pinned_host
        paths.append("spec.pinned_host")
    if args.start_paused is not None:
        values.spec.start_paused = args.start_paused == "yes"
        paths.append("spec.start_paused")
    reply = await stub.UpdateVm(
        vm_api.UpdateVmRequest(
            vm=current.id,
            vm_update=values,
            update_mask=FieldMask(paths=paths),
            expected_spec_version=current.spec_version,
            request_id=args.request_id,
        )
    )
    print(fmt.vm_detail(reply.vm, await hosts.names(channel)))


async def vm_explain(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    reply = await vm_grpc.VmServiceStub(channel).ExplainPlacement(
        vm_api.ExplainPlacementRequest(vm=args.vm)
    )
    print(fmt.placement(reply))


# The power verbs: CLI verb -> (RPC, request message).
_POWER: dict[str, tuple[str, Any]] = {
    "shutdown": ("ShutdownVm", vm_api.ShutdownVmRequest),
    "reboot": ("RebootVm", vm_api.RebootVmRequest),
    "reset": ("ResetVm", vm_api.ResetVmRequest),
    "pause": ("PauseVm", vm_api.PauseVmRequest),
    "resume": ("ResumeVm", vm_api.ResumeVmRequest),
    "hibernate": ("HibernateVm", vm_api.HibernateVmRequest),
}


async def vm_power(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    rpc, request = _POWER[args.verb]
    reply = await getattr(vm_grpc.VmServiceStub(channel), rpc)(
        request(vm=args.vm, request_id=args.request_id)
    )
    print(f"{reply.vm.name}: {fmt.vm_state(reply.vm.status.state)}")
    await ops.show_operation(args, channel, reply.operation)


async def vm_delete(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    await vm_grpc.VmServiceStub(channel).DeleteVm(
        vm_api.DeleteVmRequest(vm=args.vm, request_id=args.request_id)
    )
    print(f"{args.vm}: deleted")


def _reported(vm: vm_pb2.Vm) -> bool:
    g = vm.status.guest
    return bool(fmt.addresses(g) and g.os_name and g.application_count and g.uptime_seconds)


async def vm_watch(args: argparse.Namespace, channel: grpc.aio.Channel) -> None:
    """Prints every change; with --until-guest, stops once that VM's guest has
    reported its IP, OS, applications and uptime."""
    names = await hosts.names(channel)
    start = time.monotonic()
    request = vm_api.WatchVmsRequest(
        vm_ids=args.vm, host=args.host, after_revision=args.after_revision
    )
    call = vm_grpc.VmServiceStub(channel).WatchVms(request)
    async for msg in call:
        if msg.kind == vm_api.WatchVmsResponse.KIND_SNAPSHOT_COMPLETE:
            what = "changes since" if msg.resumed else "snapshot complete at"
            note = f" ({msg.reason})" if msg.reason else ""
            print(f"{'':>7}  -- {what} revision {msg.revision}{note}; watching --")
            continue
        vm = msg.vm
        kind = vm_api.WatchVmsResponse.Kind.Name(msg.kind).removeprefix("KIND_").lower()
        host = names.get(vm.status.host_id, vm.status.host_id) or "-"
        detail = fmt.guest_summary(vm.status.guest) or fmt.exit_reason(vm.status.exit_reason)
        print(
            f"{time.monotonic() - start:6.2f}s  rev {msg.revision:<5} {kind:<8} {vm.name:<12} "
            f"{fmt.vm_state(vm.status.state):<16} host={host:<10} {detail}",
            flush=True,
        )
        if args.until_guest and args.until_guest in (vm.name, vm.id) and _reported(vm):
            call.cancel()
            return


def _info_parsers(vm: Any) -> None:
    explain = vm.add_parser("explain", help="where StartVm would place a VM, and why")
    explain.add_argument("vm", help="id or name")
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="virtplane", description=__doc__)
    p.add_argument(
        "--controller",
        default=os.environ.get("VIRTPLANE_CONTROLLER", "127.0.0.1:7000"),
        help="controller address (default: $VIRTPLANE_CONTROLLER or %(default)s)",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds before giving up")
    groups = p.add_subparsers(dest="group", required=True)

    hosts.add_parsers(groups)
    affinity.add_parsers(groups)
    vm = groups.add_parser("vm", help="virtual machines").add_subparsers(dest="verb", required=True)
    _create_parser(vm)
    _update_parser(vm)
    listing = vm.add_parser("list", help="list VMs")
    listing.add_argument(
        "--state",
        action="append",
        default=[],
        type=str.upper,
        choices=[n.removeprefix("STATE_") for n in vm_pb2.Vm.State.keys()[1:]],
        help="only VMs in this state (repeatable)",
    )
    listing.add_argument("--host", default="", help="only VMs on this host")
    listing.add_argument("--name", default="", help="only VMs whose name contains this")
    listing.set_defaults(run=vm_list)
    show = vm.add_parser("show", help="show a VM")
    show.add_argument("vm", help="id or name")
    show.set_defaults(run=vm_show)
    for verb, run in (
        ("start", vm_start),
        ("stop", vm_stop),
        *((verb, vm_power) for verb in _POWER),
    ):
        sub = vm.add_parser(verb, help=f"{verb} a VM; prints its operation")
        sub.add_argument("vm", help="id or name")
        ops.request_id_option(sub)
        ops.wait_options(sub, wait=True)
        sub.set_defaults(run=run)
    _info_parsers(vm)
    delete = vm.add_parser("delete", help="delete a DOWN VM")
    delete.add_argument("vm", help="id or name")
    ops.request_id_option(delete)
    delete.set_defaults(run=vm_delete)
    _watch_parser(vm)

    ops.add_parsers(groups)
    return p


async def run_command(args: argparse.Namespace) -> None:
    run: Command = args.run
    async with grpc.aio.insecure_channel(args.controller) as channel:
        await asyncio.wait_for(run(args, channel), args.timeout)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        asyncio.run(run_command(args))
    except grpc.aio.AioRpcError as exc:
        print(f"virtplane: {exc.code().name}: {exc.details()}", file=sys.stderr)
        sys.exit(1)
    except TimeoutError:
        print(f"virtplane: no answer within {args.timeout} s", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
