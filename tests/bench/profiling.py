"""A sampling profile of a process during one phase of a benchmark: py-spy
records it (collapsed stacks, `--format raw`) while the phase runs, and
top() reads the share of samples each function is on the stack of.

py-spy is not a dependency of the project: without it (or without
VIRTPLANE_BENCH_PROFILE naming a folder) nothing is recorded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROFILE_DIR = "VIRTPLANE_BENCH_PROFILE"


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def folder() -> Path | None:
    """Where profiles go, when asked for (VIRTPLANE_BENCH_PROFILE)."""
    where = os.environ.get(PROFILE_DIR, "")
    if not where or _py_spy() is None:
        return None
    path = Path(where)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def recorded(pid: int, name: str) -> Iterator[None]:
    """Samples pid while the block runs, into FOLDER/name.txt (collapsed
    stacks) when profiles are asked for."""
    out = folder()
    tool = _py_spy()
    if out is None or tool is None:
        yield
        return
    proc = subprocess.Popen(
        [tool, "record", "--pid", str(pid), "--rate", "50", "--format", "raw",
         "--nonblocking", "-o", str(out / f"{name}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _frame(frame: str) -> str:
    # py-spy's raw frames: "function (path/to/module.py:line)".
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    module = path.rsplit("/", 2)
    return f"{'/'.join(module[-2:])}:{name}"


def top(path: Path, count: int = 25) -> list[tuple[str, float]]:
    """The functions most often on the stack, with the share of samples
    (0..1) each is on; idle samples (the event loop waiting) are counted too."""
    seen: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        for frame in {_frame(f) for f in stack.split(";")}:
            seen[frame] += n
    if not total:
        return []
    return [(frame, n / total) for frame, n in seen.most_common(count)]


def main() -> None:
    for name in sys.argv[1:]:
        print(name)
        for frame, share in top(Path(name)):
            print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
