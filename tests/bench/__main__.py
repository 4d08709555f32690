"""`make bench`: runs the benchmarks and writes build/bench.json.

`python -m tests.bench --only migration` runs one (repeat --only for more);
its results replace only its own groups in build/bench.json.

The scale benchmark writes one group per host count and engine,
scale_HOSTS_ENGINE (`--hosts 100 --hosts 300` runs both), and scale_growth,
the growth table over every such group in the file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.bench import (
    controller_migration,
    debian_guest,
    guest_channel,
    hostd_paths,
    migration,
    scale,
    start_path,
    web,
)
from tests.support.real import REPO, GuestImage, load_guest_image

Benchmark = Callable[[GuestImage, Path, argparse.Namespace], dict[str, float]]
Groups = dict[str, dict[str, float]]


def _scale(_image: GuestImage, workdir: Path, args: argparse.Namespace) -> Groups:
    groups: Groups = {}
    for hosts in args.hosts or [100]:
        size = scale.Size(
            hosts=hosts,
            vms_defined=args.vms_defined or 3 * hosts,
            starts=args.starts or 3 * hosts,
            subscribers=args.subscribers,
            snapshot_subscribers=min(args.subscribers, args.snapshot_subscribers),
            changes=args.changes,
            concurrency=args.concurrency,
            processes=args.processes,
        )
        folder = workdir / str(hosts)
        folder.mkdir()
        groups |= scale.run(folder, size, args.engine or scale.ENGINES)
    return groups


# Benchmarks that write several groups.
GROUPED: dict[str, Callable[[GuestImage, Path, argparse.Namespace], Groups]] = {"scale": _scale}

BENCHMARKS: dict[str, Benchmark] = {
    "start_path": lambda image, workdir, args: start_path.run(image, workdir, args.rounds),
    "hostd_create": lambda image, workdir, args: hostd_paths.create(image, workdir, args.rounds),
    "hostd_hibernate": lambda image, workdir, args: hostd_paths.hibernate(
        image, workdir, args.rounds
    ),
    "migration": lambda image, workdir, args: migration.run(image, workdir, args.rounds),
    "controller_migration": lambda image, workdir, args: controller_migration.run(
        image, workdir, args.rounds
    ),
    "guest_channel": lambda image, workdir, args: guest_channel.run(
        image, workdir, min(args.rounds, 3), args.idle_window
    ),
    # the image of `make debian-image` (VIRTPLANE_DEBIAN_IMAGE), not the test image
    "debian_guest": lambda _image, workdir, args: debian_guest.run(workdir, args.idle_window),
    "web": lambda image, workdir, args: web.run(image, workdir, args.rounds),
}


def _show(group: str, values: dict[str, float]) -> None:
    print(group)
    for key, value in values.items():
        print(f"  {key:<42} {value:8.3f}" if isinstance(value, float) else f"  {key:<42} {value}")


def _kept(args: argparse.Namespace) -> Groups:
    """The groups in the file that this run keeps (all but its own, with --only)."""
    if not args.only or not args.out.exists():
        return {}
    groups: Groups = json.loads(args.out.read_text())
    return groups


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench.json")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted([*BENCHMARKS, *GROUPED]),
        help="run only this benchmark",
    )
    parser.add_argument(
        "--hosts", type=int, action="append", help="scale: simulated hosts (repeat: one run each)"
    )
    parser.add_argument("--vms-defined", type=int, default=0, help="scale: VMs (3 a host)")
    parser.add_argument("--starts", type=int, default=0, help="scale: VMs started (3 a host)")
    parser.add_argument("--concurrency", type=int, default=20, help="scale: calls in flight")
    parser.add_argument("--subscribers", type=int, default=100, help="scale: WatchVms clients")
    parser.add_argument(
        "--snapshot-subscribers",
        type=int,
        default=100,
        help="scale: of the subscribers, how many open with a snapshot (the others resume)",
    )
    parser.add_argument("--changes", type=int, default=300, help="scale: VMs stopped, watched")
    parser.add_argument("--processes", type=int, default=4, help="scale: hostd processes")
    parser.add_argument(
        "--engine", action="append", choices=scale.ENGINES, help="scale: only this engine"
    )
    parser.add_argument(
        "--idle-window",
        type=float,
        default=60.0,
        help="guest_channel, debian_guest: seconds an idle guest's bytes are counted",
    )
    return parser


def main() -> None:
    args = _parser().parse_args()
    everything = [*BENCHMARKS, *GROUPED]
    chosen = [name for name in everything if not args.only or name in args.only]
    image = load_guest_image()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = _kept(args)
    results: Groups = {}
    # A short folder: hostd's unix socket paths are built under it.
    with tempfile.TemporaryDirectory(prefix="vpb-") as tmp:
        Path(tmp).chmod(0o755)
        for name in chosen:
            workdir = Path(tmp) / name
            workdir.mkdir()
            workdir.chmod(0o755)
            if name in GROUPED:
                groups = GROUPED[name](image, workdir, args)
                # The growth table over every run, this one's and those before.
                groups["scale_growth"] = scale.growth(kept | results | groups)
            else:
                groups = {name: BENCHMARKS[name](image, workdir, args)}
            results |= groups
            # Written after each benchmark, so that a later failure loses none;
            # read again first, to keep what other runs wrote meanwhile.
            args.out.write_text(json.dumps(_kept(args) | results, indent=2) + "\n")
            for group, values in groups.items():
                _show(group, values)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
