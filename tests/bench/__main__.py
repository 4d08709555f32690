"""`make bench`: runs the benchmarks and writes build/bench.json."""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.bench import guest_channel, start_path
from tests.conftest import GUEST_IMAGE_DIR, REPO, GuestImage

Group = Callable[[GuestImage, Path, argparse.Namespace], dict[str, float]]
GROUPS: dict[str, Group] = {
    "start_path": lambda image, workdir, args: start_path.run(image, workdir, args.rounds),
    "guest_channel": lambda image, workdir, args: guest_channel.run(
        image, workdir, min(args.rounds, 3), args.idle_window
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench.json")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(GROUPS),
        help="run only this group (repeatable); default: all",
    )
    parser.add_argument(
        "--idle-window", type=float, default=60.0, help="seconds an idle guest's bytes are counted"
    )
    args = parser.parse_args()
    meta = json.loads((GUEST_IMAGE_DIR / "image.json").read_text())
    image = GuestImage(kernel=meta["kernel"], initrd=meta["initrd"], cmdline=meta["cmdline"])
    with tempfile.TemporaryDirectory(prefix="virtplane-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        results = {}
        for group in args.only or sorted(GROUPS):
            (workdir / group).mkdir(mode=0o755)
            results[group] = GROUPS[group](image, workdir / group, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() and args.only else {}
    args.out.write_text(json.dumps(previous | results, indent=2) + "\n")
    for group, values in results.items():
        print(group)
        for key, value in values.items():
            print(
                f"  {key:<42} {value:8.3f}" if isinstance(value, float) else f"  {key:<42} {value}"
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
