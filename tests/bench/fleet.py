"""Many simulated hosts in one process: `python -m tests.bench.fleet DIR
COUNT` runs COUNT hostd instances, each on its own libvirt test-driver host
(DIR/hN/node.xml) and its own gRPC port, prints each one's address, then
READY, and runs until SIGTERM. The scale benchmark runs a few of these
(launched())."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hostd.config import HostdConfig
from hostd.server import Hostd
from tests.support.real import IMAGE_ROOTS
from tests.support.virt import node_xml


async def serve(root: Path, count: int, first: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    daemons: list[Hostd] = []
    try:
        for n in range(first, first + count):
            folder = root / f"h{n}"
            folder.mkdir(parents=True, exist_ok=True)
            uri = node_xml(folder / "node.xml", memory_mib=65536, cpus=32)
            config = HostdConfig(
                listen="127.0.0.1:0",
                libvirt_uri=uri,
                state_dir=folder / "state",
                image_roots=IMAGE_ROOTS,
                # The controller calls them in plaintext (plaintext_hosts).
                insecure_plaintext_dev=True,
            )
            hostd = Hostd(config)
            port = await hostd.start()
            daemons.append(hostd)
            print(f"127.0.0.1:{port}", flush=True)
        print("READY", flush=True)
        await stop.wait()
    finally:
        await asyncio.gather(*(d.stop(grace=0) for d in daemons), return_exceptions=True)


@contextmanager
def launched(workdir: Path, hosts: int, processes: int) -> Iterator[list[str]]:
    """hosts hostd instances in `processes` processes; yields their addresses."""
    procs: list[subprocess.Popen[str]] = []
    addresses: list[str] = []
    per = -(-hosts // processes)
    root = Path(tempfile.mkdtemp(prefix="vpf-"))  # short: socket paths fit
    try:
        for first in range(0, hosts, per):
            count = min(per, hosts - first)
            log = (workdir / f"fleet-{first}.log").open("w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.bench.fleet", str(root), str(count),
                 "--first", str(first)],
                stdout=subprocess.PIPE, stderr=log, text=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )  # fmt: skip
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip() == "READY":
                    break
                addresses.append(line.strip())
            else:
                raise RuntimeError("a hostd fleet exited before it was ready")
        yield addresses
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--first", type=int, default=0, help="number of the first host")
    args = parser.parse_args()
    asyncio.run(serve(args.root, args.count, args.first))
    sys.exit(0)


if __name__ == "__main__":
    main()
