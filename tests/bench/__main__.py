"""`make bench`: runs the benchmarks and writes build/bench.json."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tests.bench import scale, start_path
from tests.conftest import GUEST_IMAGE_DIR, REPO, GuestImage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench.json")
    parser.add_argument(
        "--only", choices=["start_path", "scale"], action="append", help="run only these groups"
    )
    parser.add_argument("--hosts", type=int, default=100, help="scale: simulated hosts")
    parser.add_argument("--vms", type=int, default=300, help="scale: VMs started")
    parser.add_argument("--concurrency", type=int, default=20, help="scale: StartVm in flight")
    parser.add_argument("--subscribers", type=int, default=100, help="scale: WatchVms clients")
    args = parser.parse_args()
    groups = args.only or ["start_path", "scale"]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="virtplane-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        if "start_path" in groups:
            meta = json.loads((GUEST_IMAGE_DIR / "image.json").read_text())
            image = GuestImage(
                kernel=meta["kernel"], initrd=meta["initrd"], cmdline=meta["cmdline"]
            )
            (workdir / "start_path").mkdir()
            (workdir / "start_path").chmod(0o755)
            results["start_path"] = start_path.run(image, workdir / "start_path", args.rounds)
        if "scale" in groups:
            (workdir / "scale").mkdir()
            results["scale"] = scale.run(
                workdir / "scale",
                hosts=args.hosts,
                vms=args.vms,
                concurrency=args.concurrency,
                subscribers=args.subscribers,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Groups not run this time keep their last results.
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    args.out.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    for group, values in results.items():
        print(group)
        for key, value in values.items():
            print(
                f"  {key:<42} {value:8.3f}" if isinstance(value, float) else f"  {key:<42} {value}"
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
