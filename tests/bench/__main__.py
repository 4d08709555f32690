"""`make bench`: runs the benchmarks and writes build/bench.json.

`python -m tests.bench --only migration` runs one (repeat --only for more);
its results replace only its own group in build/bench.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tests.bench import migration, start_path
from tests.conftest import GUEST_IMAGE_DIR, REPO, GuestImage

BENCHMARKS = {"start_path": start_path.run, "migration": migration.run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench.json")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), help="run only this benchmark"
    )
    args = parser.parse_args()
    chosen = [name for name in BENCHMARKS if not args.only or name in args.only]
    meta = json.loads((GUEST_IMAGE_DIR / "image.json").read_text())
    image = GuestImage(kernel=meta["kernel"], initrd=meta["initrd"], cmdline=meta["cmdline"])
    with tempfile.TemporaryDirectory(prefix="virtplane-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        results = {name: BENCHMARKS[name](image, workdir, args.rounds) for name in chosen}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    args.out.write_text(json.dumps(kept | results, indent=2) + "\n")
    for group, values in results.items():
        print(group)
        for key, value in values.items():
            print(
                f"  {key:<42} {value:8.3f}" if isinstance(value, float) else f"  {key:<42} {value}"
            )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
