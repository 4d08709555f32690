"""`make bench`: runs the benchmarks and writes build/bench.json.

`python -m tests.bench --only migration` runs one (repeat --only for more);
its results replace only its own group in build/bench.json.
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


def _scale(_image: GuestImage, workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    return scale.run(
        workdir,
        hosts=args.hosts,
        vms=args.vms,
        concurrency=args.concurrency,
        subscribers=args.subscribers,
    )


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
    "scale": _scale,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench.json")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark"
    )
    parser.add_argument("--hosts", type=int, default=100, help="scale: simulated hosts")
    parser.add_argument("--vms", type=int, default=300, help="scale: VMs started")
    parser.add_argument("--concurrency", type=int, default=20, help="scale: StartVm in flight")
    parser.add_argument("--subscribers", type=int, default=100, help="scale: WatchVms clients")
    parser.add_argument(
        "--idle-window",
        type=float,
        default=60.0,
        help="guest_channel, debian_guest: seconds an idle guest's bytes are counted",
    )
    args = parser.parse_args()
    chosen = [name for name in BENCHMARKS if not args.only or name in args.only]
    image = load_guest_image()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    results: dict[str, dict[str, float]] = {}
    # A short folder: hostd's unix socket paths are built under it.
    with tempfile.TemporaryDirectory(prefix="vpb-") as tmp:
        Path(tmp).chmod(0o755)
        for name in chosen:
            workdir = Path(tmp) / name
            workdir.mkdir()
            workdir.chmod(0o755)
            results[name] = BENCHMARKS[name](image, workdir, args)
            # Written after each group, so that a later failure loses none.
            args.out.write_text(json.dumps(kept | results, indent=2) + "\n")
            _show(name, results[name])
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
