"""`make bench`: runs the benchmarks and writes build/bench.json.

`python -m tests.bench --only hostd_create` (repeatable) runs some alone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.bench import hostd_paths, start_path
from tests.conftest import GUEST_IMAGE_DIR, REPO, GuestImage

Benchmark = Callable[[GuestImage, Path, int], dict[str, float]]
BENCHMARKS: dict[str, Benchmark] = {
    "start_path": start_path.run,
    "hostd_create": hostd_paths.create,
    "hostd_hibernate": hostd_paths.hibernate,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench.json")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run this one (repeatable)"
    )
    args = parser.parse_args()
    chosen = args.only or list(BENCHMARKS)
    meta = json.loads((GUEST_IMAGE_DIR / "image.json").read_text())
    image = GuestImage(kernel=meta["kernel"], initrd=meta["initrd"], cmdline=meta["cmdline"])
    with tempfile.TemporaryDirectory(prefix="virtplane-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        results = {}
        for name in chosen:
            (workdir / name).mkdir()
            results[name] = BENCHMARKS[name](image, workdir / name, args.rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for group, values in results.items():
        print(group)
        for key, value in values.items():
            print(
                f"  {key:<42} {value:8.3f}" if isinstance(value, float) else f"  {key:<42} {value}"
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
